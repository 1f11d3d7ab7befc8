"""Keras' own model files for tests/keras_files.rs (issue 32): small models built, trained a few
steps and saved by Keras 3 as `.keras`, `.weights.h5` and legacy `.h5`, with Keras' predictions
on fixed inputs, so that kandle's readers are checked against files and numbers Keras wrote.

Regenerate with the venv of ../shared/bench/setup_keras.sh (Keras 3.15.1, TensorFlow 2.21),
from the repository root:

    /tmp/keras-ref-venv/bin/python tests/golden/keras_files_keras.py

Writes tests/golden/keras_files/<name>.keras, <name>.weights.h5, <name>.h5 and
tests/golden/keras_files/predictions.json ({name: {"input": [...], "shape": [...],
"output": [...]}}). Inputs are 8x8 so the files stay a few tens of KB.
"""
import json
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
from keras import layers

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keras_files")
os.makedirs(HERE, exist_ok=True)
keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)


def tutorial_cnn():
    """The tutorial's CNN, scaled down: Conv2D/MaxPooling2D/Dropout/Flatten/Dense."""
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, (3, 3), padding="same", activation="relu"),
        layers.Conv2D(4, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(8, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(3, activation="softmax"),
    ], name="tutorial")


models = {"tutorial_cnn": (tutorial_cnn(), "rmsprop")}
out = {"keras": keras.__version__}
for name, (model, optimizer) in models.items():
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    x = rng.uniform(0, 1, (16,) + tuple(model.input_shape[1:])).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 3, 3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(os.path.join(HERE, f"{name}.keras"))
    model.save_weights(os.path.join(HERE, f"{name}.weights.h5"))
    model.save(os.path.join(HERE, f"{name}.h5"))
    probe = x[:2]
    pred = model.predict(probe, verbose=0)
    out[name] = {"input": probe.ravel().tolist(), "shape": list(probe.shape), "output": pred.ravel().tolist()}

with open(os.path.join(HERE, "predictions.json"), "w") as f:
    json.dump(out, f)
