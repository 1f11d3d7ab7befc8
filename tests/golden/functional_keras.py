"""Keras' own output for the functional-API tests (tests/functional.rs).

Regenerate with the venv of ../shared/bench/setup_keras.sh (Keras 3.15.1, TensorFlow 2.21),
from the repository root, outside a terminal (rich then prints at 76 columns, as kandle does):

    /tmp/keras-ref-venv/bin/python tests/golden/functional_keras.py > tests/golden/functional_keras.txt

Writes, between marker lines: the summary of the issue's small residual model, the same with
its first convolution frozen, the summary of a two-input two-output model with a shared layer,
and that model's history keys after one fit with a validation split.
"""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
from keras import layers

inputs = keras.Input((32, 32, 3))
x = layers.Conv2D(16, 3, padding="same")(inputs)
x = layers.BatchNormalization()(x)
x = layers.Activation("relu")(x)
y = layers.Conv2D(16, 3, padding="same")(x)
y = layers.Add()([x, y])
out = layers.Dense(10, activation="softmax")(layers.Flatten()(y))
m = keras.Model(inputs, out)
print("== residual")
m.summary()
m.get_layer("conv2d").trainable = False
print("== residual_frozen")
m.summary()

a = keras.Input((4,), name="a")
b = keras.Input((4,), name="b")
shared = layers.Dense(3, name="shared")
o1 = layers.Dense(2, activation="softmax", name="out1")(shared(a))
o2 = layers.Dense(1, name="out2")(shared(b))
mm = keras.Model([a, b], [o1, o2])
print("== two_outputs")
mm.summary()
mm.compile("sgd", ["categorical_crossentropy", "mse"], metrics=[["accuracy"], []])
h = mm.fit([np.zeros((8, 4)), np.zeros((8, 4))], [np.eye(2)[np.arange(8) % 2], np.zeros((8, 1))],
           verbose=0, validation_split=0.25)
print("== history_keys")
print(" ".join(sorted(h.history.keys())))
print("== end")
