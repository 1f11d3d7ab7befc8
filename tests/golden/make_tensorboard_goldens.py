"""Golden values for tests/tensorboard.rs, written by TensorFlow and Keras themselves.

Regenerate from the repository root with the venv of ../shared/bench/setup_keras.sh
(Keras 3.15.1 on TensorFlow 2.21, CPU) plus TensorBoard, which Keras' callback needs:

    /tmp/keras-ref-venv/bin/pip install tensorboard==2.21.0
    /tmp/keras-ref-venv/bin/python tests/golden/make_tensorboard_goldens.py

It writes tests/golden/tensorboard_goldens.json:
- "summaries": tf.summary.scalar / histogram / image on given inputs, each as the serialized
  `Summary` message TensorFlow put in its event file (hex), with the inputs; images also as
  their decoded pixels (PNG encoders may differ byte for byte).
- "keras_runs": the (tag, step, plugin) of every summary Keras' TensorBoard callback writes
  for a small model, 2 epochs of 3 batches with validation data, per folder (train/,
  validation/): with histogram_freq=1 and write_images=True; with update_freq="batch"; with
  update_freq=2 (where Keras drops summaries, see below).
- "file_head": the first 12 bytes of a TensorFlow event file (length and masked CRC32C).
"""
import glob
import io
import json
import os
import struct
import tempfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras
from PIL import Image
from tensorboard.compat.proto import event_pb2

out = {"keras_version": keras.__version__, "tensorflow_version": tf.__version__}


def records(path):
    data = open(path, "rb").read()
    i, recs = 0, []
    while i < len(data):
        n = struct.unpack("<Q", data[i:i + 8])[0]
        recs.append(data[i + 12:i + 12 + n])
        i += 16 + n
    return data, recs


def events(folder):
    files = sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
    evs = []
    for f in files:
        evs += [event_pb2.Event.FromString(r) for r in records(f)[1]]
    return evs


rng = np.random.default_rng(5)
with tempfile.TemporaryDirectory() as d:
    cases = []
    w = tf.summary.create_file_writer(d)
    scalars = [0.5, 1.2345678912345, -3.0e-7, 123456.789]
    hists = {
        "uniform": rng.uniform(-1, 1, 200).astype("float32"),
        "normal": (rng.normal(0, 0.05, (3, 3, 4, 8))).astype("float32"),
        "single": np.full(7, 0.25, "float32"),
        "two": np.array([0.1, -0.2, 0.3, 0.7], "float32"),
    }
    imgs = {
        "bias": (rng.normal(0.3, 0.3, (1, 5, 1, 1))).astype("float32"),
        "kernel": (rng.normal(0.2, 0.4, (1, 3, 6, 1))).astype("float32"),
        "filters": (rng.normal(0.5, 0.5, (4, 3, 3, 1))).astype("float32"),
        "rgb": (rng.uniform(-0.2, 1.2, (2, 2, 3, 3))).astype("float32"),
    }
    with w.as_default():
        for i, v in enumerate(scalars):
            tf.summary.scalar(f"scalar_{i}", v, step=i)
            cases.append({"kind": "scalar", "tag": f"scalar_{i}", "step": i, "value": v})
        for i, (k, v) in enumerate(hists.items()):
            tf.summary.histogram(f"hist_{k}", v, step=i)
            cases.append({"kind": "histogram", "tag": f"hist_{k}", "step": i,
                          "values": v.reshape(-1).astype("float64").tolist()})
        for i, (k, v) in enumerate(imgs.items()):
            tf.summary.image(f"image_{k}", v, step=i, max_outputs=3)
            cases.append({"kind": "image", "tag": f"image_{k}", "step": i, "dims": list(v.shape),
                          "values": v.reshape(-1).astype("float64").tolist()})
    w.close()
    path = glob.glob(os.path.join(d, "events.out.tfevents.*"))[0]
    data, recs = records(path)
    out["file_head"] = data[:12].hex()
    evs = [event_pb2.Event.FromString(r) for r in recs]
    assert evs[0].file_version == "brain.Event:2"
    for case, ev in zip(cases, evs[1:]):
        assert ev.summary.value[0].tag == case["tag"] and ev.step == case["step"]
        case["summary_hex"] = ev.summary.SerializeToString().hex()
        if case["kind"] == "image":
            sv = ev.summary.value[0].tensor.string_val
            case["size"] = [sv[0].decode(), sv[1].decode()]
            case["pixels"] = [np.asarray(Image.open(io.BytesIO(png))).reshape(-1).tolist() for png in sv[2:]]
    out["summaries"] = cases

keras.utils.set_random_seed(0)
x = rng.uniform(0, 1, (24, 4, 4, 1)).astype("float32")
y = keras.utils.to_categorical(rng.integers(0, 3, 24), 3)


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4, 4, 1)),
        keras.layers.Conv2D(2, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


runs = {
    # Keras' defaults but for histograms and images.
    "epoch": dict(histogram_freq=1, write_images=True),
    # Every batch: the epoch summaries are all there too (see below).
    "batch": dict(update_freq="batch"),
    # Keras 3.15's TensorBoard with update_freq=N > 1 drops the epoch and validation summaries of
    # the epochs whose last batch number is not a multiple of N: the `record_if` of the last
    # batch stays in force at the epoch's end. kandle writes them all; this run documents it.
    "every_2": dict(update_freq=2),
}
out["keras_runs"] = {}
for name, kw in runs.items():
    model = make_model()
    with tempfile.TemporaryDirectory() as d:
        tb = keras.callbacks.TensorBoard(d, write_graph=False, **kw)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x[:8], y[:8]), callbacks=[tb],
                  shuffle=False)
        run = {}
        for sub in ("train", "validation"):
            run[sub] = [[v.tag, ev.step, v.metadata.plugin_data.plugin_name]
                        for ev in events(os.path.join(d, sub)) if ev.HasField("summary") for v in ev.summary.value]
        out["keras_runs"][name] = run
out["keras_weights"] = [w.path for w in model.weights]

p = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tensorboard_goldens.json")
with open(p, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", p)
