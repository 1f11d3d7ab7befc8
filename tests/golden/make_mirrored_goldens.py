"""Keras 3 (TensorFlow backend) under tf.distribute.MirroredStrategy: what BatchNormalization's
moving statistics become when the replicas see different shards. Two logical CPU devices stand
for two GPUs. Writes tests/golden/mirrored_goldens.json, read by tests/distribute.rs.

Regenerate (the venv of ../shared/bench/setup_keras.sh):
    /tmp/keras-ref-venv/bin/python tests/golden/make_mirrored_goldens.py
"""
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
import keras

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
keras.config.set_floatx("float64")
x = np.array([[0.0], [1.0], [4.0], [9.0]])
y = np.array([[0.0], [1.0], [0.0], [1.0]])


def run(strategy):
    with strategy.scope():
        m = keras.Sequential([keras.Input((1,)), keras.layers.BatchNormalization(momentum=0.0)])
        m.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    bn = m.layers[0]
    return {"moving_mean": float(bn.moving_mean.numpy()[0]), "moving_variance": float(bn.moving_variance.numpy()[0])}


out = {
    "keras": keras.__version__,
    "tensorflow": tf.__version__,
    "x": x[:, 0].tolist(),
    "one_device": run(tf.distribute.OneDeviceStrategy("/cpu:0")),
    "mirrored_2": run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirrored_goldens.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(json.dumps(out))
