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


def skip_concat():
    """A functional model with a skip connection (Add), Concatenate, BatchNormalization and
    SeparableConv2D."""
    inp = keras.Input((8, 8, 3), name="image")
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    b = layers.BatchNormalization(name="bn")(a)
    c = layers.SeparableConv2D(4, 3, padding="same", name="sep")(b)
    d = layers.Add(name="skip")([a, c])
    e = layers.Concatenate(name="cat")([d, b])
    f = layers.GlobalAveragePooling2D()(e)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(f), name="skip_concat")


def nested():
    """A Sequential base inside a functional model, called with training=False."""
    base = keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(),
    ], name="base")
    inp = keras.Input((8, 8, 3))
    x = base(inp, training=False)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(x), name="nested")


def two_outputs():
    """Two outputs, each with its own loss."""
    inp = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inp)
    x = layers.GlobalMaxPooling2D()(x)
    cls = layers.Dense(3, activation="softmax", name="cls")(x)
    reg = layers.Dense(1, name="reg")(x)
    return keras.Model(inp, [cls, reg], name="two_outputs")


out = {"keras": keras.__version__}


def sample(model, n):
    x = rng.uniform(0, 1, (n,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    y = keras.utils.to_categorical(np.arange(n) % 3, 3)
    return x, y


def record(name, model, probe):
    pred = model.predict(probe, verbose=0)
    if isinstance(pred, list):
        pred = np.concatenate([p.reshape(len(probe), -1) for p in pred], axis=1)
    out[name] = {"input": probe.ravel().tolist(), "shape": list(probe.shape), "output": pred.ravel().tolist()}


for name, make, optimizer in [("tutorial_cnn", tutorial_cnn, "rmsprop"), ("skip_concat", skip_concat, "adam"),
                              ("nested", nested, "sgd")]:
    model = make()
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = sample(model, 16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(os.path.join(HERE, f"{name}.keras"))
    model.save_weights(os.path.join(HERE, f"{name}.weights.h5"))
    model.save(os.path.join(HERE, f"{name}.h5"))
    record(name, model, x[:2])

model = two_outputs()
model.compile(optimizer="rmsprop", loss=["categorical_crossentropy", "mse"], loss_weights=[1.0, 0.5],
              metrics=[["accuracy"], ["mae"]])
x, y = sample(model, 16)
model.fit(x, [y, y[:, :1]], batch_size=8, epochs=1, verbose=0)
model.save(os.path.join(HERE, "two_outputs.keras"))
record("two_outputs", model, x[:2])

# Resumed training: 2 epochs, saved; the 3rd epoch's end is what kandle must reach from the
# file (same batches: no shuffling, no dropout).
for optimizer in [keras.optimizers.RMSprop(momentum=0.5), keras.optimizers.Adam(amsgrad=True)]:
    name = "resume_" + type(optimizer).__name__.lower()
    inp = keras.Input((8, 8, 3))
    h = layers.Conv2D(4, 3, activation="relu")(inp)
    h = layers.BatchNormalization()(h)
    h = layers.Flatten()(h)
    model = keras.Model(inp, layers.Dense(3, activation="softmax")(h), name=name)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    x, y = sample(model, 32)
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    model.save(os.path.join(HERE, f"{name}.keras"))
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    record(name, model, x[:2])
    out[name]["x"] = x.ravel().tolist()
    out[name]["y"] = y.ravel().tolist()


# Keras 2 (tf_keras 2.21, `pip install tf-keras==2.21.0` in the same venv): a whole-model .h5
# and a weights-only .h5 as keras.applications ships them ("conv2d/kernel:0" weight names),
# the functional model of two branches; plus the same weights with layer_names split in two
# attributes (layer_names0, layer_names1), as Keras writes a list over 64 KB.
try:
    import tf_keras
except ImportError:
    tf_keras = None
if tf_keras is not None:
    import h5py
    L2 = tf_keras.layers
    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 3))
    a = L2.Conv2D(4, 3, padding="same", activation="relu")(inp)
    b = L2.BatchNormalization()(a)
    c = L2.DepthwiseConv2D(3, padding="same")(b)
    d = L2.Add()([a, c])
    e = L2.ZeroPadding2D(((1, 0), (0, 1)))(d)
    f = L2.GlobalAveragePooling2D()(L2.AveragePooling2D()(e))
    model = tf_keras.Model(inp, L2.Dense(3, activation="softmax")(f), name="keras2")
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = rng.uniform(0, 1, (16, 8, 8, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(16) % 3, 3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(os.path.join(HERE, "keras2.h5"), save_format="h5")
    model.save_weights(os.path.join(HERE, "keras2_weights.h5"), save_format="h5")
    out["keras2"] = {"input": x[:2].ravel().tolist(), "shape": [2, 8, 8, 3],
                     "output": model.predict(x[:2], verbose=0).ravel().tolist()}
    split = os.path.join(HERE, "keras2_weights_split.h5")
    with h5py.File(os.path.join(HERE, "keras2_weights.h5")) as src, h5py.File(split, "w") as dst:
        for k in src:
            src.copy(k, dst)
        for k, v in src.attrs.items():
            if k != "layer_names":
                dst.attrs[k] = v
        names = src.attrs["layer_names"]
        dst.attrs["layer_names0"] = names[: len(names) // 2]
        dst.attrs["layer_names1"] = names[len(names) // 2:]

with open(os.path.join(HERE, "predictions.json"), "w") as f:
    json.dump(out, f)
