"""Keras' own answers for the rules of tests/keras_rules.rs (issue 31): how "accuracy" resolves
with sparse logits, class_weight's rounding and its validation split, learning_rate in the
logs, validation after a batch-level stop, and CSVLogger's columns.

Regenerate with the venv of ../shared/bench/setup_keras.sh (Keras 3.15.1, TensorFlow 2.21),
from the repository root:

    /tmp/keras-ref-venv/bin/python tests/golden/keras_rules_keras.py > tests/golden/keras_rules_keras.json

Every model starts from zero weights, so that its numbers depend on Keras' rules only.
"""
import json
import os
import tempfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
from keras import layers

out = {"keras": keras.__version__}
rng = np.random.default_rng(0)


def dense(units, inputs, activation=None):
    return keras.Sequential([
        keras.Input((inputs,)),
        layers.Dense(units, activation=activation, kernel_initializer="zeros", bias_initializer="zeros"),
    ])


# "accuracy" with SparseCategoricalCrossentropy(from_logits=True): class-index targets, (N,)
# and (N, 1); one-hot targets with CategoricalCrossentropy. All logits 0: argmax is class 0.
x = rng.uniform(-1, 1, (12, 5)).astype("float32")
labels = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 2])
m = dense(3, 5)
m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
out["sparse_logits_accuracy"] = m.evaluate(x, labels, verbose=0, return_dict=True)["accuracy"]
m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
out["sparse_logits_accuracy_n1"] = m.evaluate(x, labels[:, None], verbose=0, return_dict=True)["accuracy"]
m.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
out["categorical_logits_accuracy"] = m.evaluate(
    x, keras.utils.to_categorical(labels, 3), verbose=0, return_dict=True)["accuracy"]

# class_weight: labels 0.5, 1.5, 2.5 and -1 against zero predictions (MSE = y^2).
x4 = rng.uniform(-1, 1, (4, 3)).astype("float32")
y4 = np.array([[0.5], [1.5], [2.5], [-1.0]], dtype="float32")
m = dense(1, 3)
m.compile(keras.optimizers.SGD(0.0), "mse")
h = m.fit(x4, y4, batch_size=4, epochs=1, shuffle=False, verbose=0, class_weight={0: 2.0, 1: 3.0, 2: 4.0})
out["class_weight_loss"] = h.history["loss"][0]

# class_weight with validation_split: the last 5 of 20 samples validate, unweighted.
x20 = rng.uniform(-1, 1, (20, 3)).astype("float32")
y20 = np.array([i % 2 for i in range(20)])
m = dense(2, 3, "softmax")
m.compile(keras.optimizers.SGD(0.0), "sparse_categorical_crossentropy")
h = m.fit(x20, y20, batch_size=8, epochs=1, verbose=0, validation_split=0.25, class_weight={0: 10.0, 1: 0.5})
out["class_weight_val_loss"] = h.history["val_loss"][0]
out["class_weight_train_loss"] = h.history["loss"][0]


# learning_rate in the logs, validation every second epoch, a CSVLogger after the scheduler.
class Keys(keras.callbacks.Callback):
    """The keys each epoch's logs hold, as a callback after the others sees them."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def on_epoch_end(self, epoch, logs=None):
        self.keys.append(sorted(logs))


path = os.path.join(tempfile.mkdtemp(), "log.csv")
m = dense(2, 3, "softmax")
m.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
keys = Keys()
h = m.fit(x20, y20, batch_size=8, epochs=3, verbose=0, validation_data=(x20, y20), validation_freq=2,
          callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10),
                     keras.callbacks.CSVLogger(path), keys])
out["lr_history"] = {k: len(v) for k, v in h.history.items()}
out["lr_values"] = h.history["learning_rate"]
out["lr_keys_seen"] = keys.keys
lines = open(path).read().splitlines()
out["csv_header"] = lines[0]
out["csv_na"] = [[cell == "NA" for cell in line.split(",")] for line in lines[1:]]

# CSVLogger without validation: val_ columns up front, NA in them.
path = os.path.join(tempfile.mkdtemp(), "log.csv")
m.fit(x20, y20, batch_size=8, epochs=1, verbose=0, callbacks=[keras.callbacks.CSVLogger(path)])
lines = open(path).read().splitlines()
out["csv_no_validation"] = [lines[0], [cell == "NA" for cell in lines[1].split(",")]]


# A stop after the second batch: the epoch still validates.
class StopAt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 1:
            self.model.stop_training = True


m = dense(2, 3, "softmax")
m.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
h = m.fit(x20, y20, batch_size=4, epochs=3, verbose=0, validation_data=(x20, y20), callbacks=[StopAt()])
out["batch_stop_history"] = {k: len(v) for k, v in h.history.items()}



# steps_per_epoch with arrays (20 samples, batches of 4: 5 a pass, not shuffled), against zero
# predictions and targets 0..19, so that a batch's loss names it: batches per epoch and each
# epoch's first batch loss.
class Batches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append([0, None])

    def on_train_batch_end(self, batch, logs=None):
        self.seen[-1][0] += 1
        if self.seen[-1][1] is None:
            self.seen[-1][1] = float(logs["loss"])


y_idx = np.arange(20, dtype="float32")[:, None]
for steps in [3, 7, 0]:
    m = dense(1, 3)
    m.compile(keras.optimizers.SGD(0.0), "mse")
    b = Batches()
    m.fit(x20, y_idx, batch_size=4, epochs=4, shuffle=False, verbose=0, steps_per_epoch=steps, callbacks=[b])
    out[f"steps_per_epoch_{steps}"] = b.seen


# image_dataset_from_directory: folders in the order of their full path as a string, a link
# to a folder not followed (follow_links=False), and a validation count that rounds to 0.
import contextlib
import io
import shutil

png = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets", "tree", "cats", "img0.png")
root = tempfile.mkdtemp()
for rel in ["cats/a/x.png", "cats/a/b/y.png", "cats/a-b/z.png", "dogs/w.png", "dogs/v.png"]:
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    shutil.copy(png, os.path.join(root, rel))
os.symlink("..", os.path.join(root, "dogs", "loop"))
ds = keras.utils.image_dataset_from_directory(root, shuffle=False, image_size=(4, 6), batch_size=2, verbose=False)
out["dataset_order"] = [os.path.relpath(p, root) for p in ds.file_paths]
with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Using N files" whatever verbose says
    val = keras.utils.image_dataset_from_directory(root, shuffle=False, image_size=(4, 6), validation_split=0.1,
                                                   subset="validation", verbose=False)
out["dataset_val_rounding_to_0"] = len(val.file_paths)
try:
    with contextlib.redirect_stdout(io.StringIO()):
        keras.utils.image_dataset_from_directory(root, shuffle=False, image_size=(4, 6), validation_split=0.1,
                                                 subset="training", verbose=False)
    out["dataset_train_rounding_to_0"] = "ok"
except ValueError as e:
    out["dataset_train_rounding_to_0"] = str(e).split(" in directory")[0]
with contextlib.redirect_stdout(io.StringIO()):
    train, val = keras.utils.image_dataset_from_directory(root, shuffle=True, seed=7, image_size=(4, 6),
                                                          validation_split=0.4, subset="both", verbose=False)
out["dataset_both"] = [[os.path.relpath(p, root) for p in d.file_paths] for d in (train, val)]


# The layers of item 22 on one input: UpSampling2D (nearest, bilinear), Cropping2D and
# LayerNormalization (random gamma and beta), outputs to compare within float32 rounding.
xi = rng.uniform(-1, 1, (2, 3, 4, 2)).astype("float32")
out["layers_x"] = xi.tolist()
out["upsampling_nearest"] = layers.UpSampling2D((2, 3))(xi).numpy().tolist()
out["upsampling_bilinear"] = layers.UpSampling2D((2, 3), interpolation="bilinear")(xi).numpy().tolist()
out["cropping"] = layers.Cropping2D(((1, 0), (0, 2)))(xi).numpy().tolist()
ln = layers.LayerNormalization()
ln.build(xi.shape)
gamma, beta = rng.uniform(0.5, 1.5, 2).astype("float32"), rng.uniform(-0.5, 0.5, 2).astype("float32")
ln.set_weights([gamma, beta])
out["layer_norm_weights"] = [gamma.tolist(), beta.tolist()]
out["layer_norm"] = ln(xi).numpy().tolist()
out["layer_configs"] = {
    "UpSampling2D": layers.UpSampling2D((2, 3), interpolation="bilinear").get_config(),
    "Cropping2D": layers.Cropping2D(((1, 0), (0, 2))).get_config(),
    "LayerNormalization": ln.get_config(),
}


# Conv2DTranspose: strides, both paddings, a kernel smaller than the stride, an odd 'same'
# padding; random weights, recorded with the outputs.
out["conv_transpose"] = []
for filters, kernel, strides, padding in [(3, (3, 3), (2, 2), "same"), (2, (2, 3), (2, 1), "valid"),
                                          (2, (1, 1), (2, 2), "same"), (2, (4, 4), (3, 3), "same")]:
    ct = layers.Conv2DTranspose(filters, kernel, strides=strides, padding=padding)
    ct.build(xi.shape)
    k = rng.uniform(-1, 1, ct.kernel.shape).astype("float32")
    bias = rng.uniform(-1, 1, (filters,)).astype("float32")
    ct.set_weights([k, bias])
    out["conv_transpose"].append({"filters": filters, "kernel_size": list(kernel), "strides": list(strides),
                                  "padding": padding, "kernel": k.tolist(), "bias": bias.tolist(),
                                  "output": ct(xi).numpy().tolist()})


# A model of two outputs: a flat metrics list as long as the outputs (one per output), a name
# given twice (suffixed), and the loss lists Keras refuses.
def two_outputs():
    a = keras.Input((3,), name="a")
    o1 = layers.Dense(2, activation="softmax", name="out1")(a)
    o2 = layers.Dense(1, name="out2")(a)
    return keras.Model(a, [o1, o2])


y2 = (keras.utils.to_categorical(y20 % 2, 2), rng.uniform(-1, 1, (20, 1)).astype("float32"))
m = two_outputs()
m.compile("sgd", ["categorical_crossentropy", "mse"], metrics=["accuracy", "mae"])
out["flat_metrics_keys"] = sorted(m.fit(x20, y2, epochs=1, verbose=0).history)
m = two_outputs()
m.compile("sgd", ["categorical_crossentropy", "mse"], metrics=[["accuracy", "accuracy"], []])
out["repeated_metric_keys"] = sorted(m.fit(x20, y2, epochs=1, verbose=0).history)


def refused(**kwargs):
    try:
        m = two_outputs()
        m.compile("sgd", **kwargs)
        m.fit(x20, y2, epochs=1, verbose=0)
        return False
    except (ValueError, KeyError):
        return True


out["loss_list_of_one_refused"] = refused(loss=["mse"])
out["single_loss_two_weights_refused"] = refused(loss="mse", loss_weights=[1.0, 0.5])


# model.layers and the weight order: by depth, not by call order (d1 is called before d2, but
# d2 is deeper); a Keras-ordered weight list given to set_weights.
a_in = keras.Input((4,), name="a")
xb = layers.Dense(3, name="d1")(a_in)
yb = layers.Dense(3, name="d2")(a_in)
zb = layers.Dense(3, name="d3")(yb)
mo = keras.Model(a_in, layers.Add(name="add")([xb, zb]))
out["order_layers"] = [l.name for l in mo.layers]
ws = [rng.uniform(-1, 1, w.shape).astype("float32") for w in mo.get_weights()]
mo.set_weights(ws)
x4b = rng.uniform(-1, 1, (2, 4)).astype("float32")
out["order_weights"] = [w.tolist() for w in ws]
out["order_x"] = x4b.tolist()
out["order_prediction"] = mo.predict(x4b, verbose=0).tolist()


# Thresholds of BinaryAccuracy, Precision and Recall on one batch.
yt = (rng.uniform(0, 1, (8, 3)) > 0.5).astype("float32")
yp = rng.uniform(0, 1, (8, 3)).astype("float32")
out["threshold_y_true"], out["threshold_y_pred"] = yt.tolist(), yp.tolist()
for key, metric in [("binary_accuracy_0.7", keras.metrics.BinaryAccuracy(threshold=0.7)),
                    ("precision_0.7", keras.metrics.Precision(thresholds=0.7)),
                    ("recall_0.3", keras.metrics.Recall(thresholds=0.3))]:
    metric.update_state(yt, yp)
    out[key] = float(metric.result())


# Merge layers with broadcasting (a squeeze-and-excitation scale) and a single input.
se = rng.uniform(-1, 1, (2, 1, 1, 2)).astype("float32")
out["merge_se"] = se.tolist()
out["merge_multiply"] = layers.Multiply()([xi, se]).numpy().tolist()
out["merge_maximum"] = layers.Maximum()([se, xi]).numpy().tolist()
out["merge_add_single"] = layers.Add()([xi]).numpy().tolist()


# loss="crossentropy" / "ce", resolved from the shapes: class indices, one-hot, one unit.
xce = rng.uniform(-1, 1, (6, 4)).astype("float32")
lab = np.array([0, 2, 1, 1, 0, 2])
wce = rng.uniform(-1, 1, (4, 3)).astype("float32")
out["ce_x"], out["ce_kernel"] = xce.tolist(), wce.tolist()
m = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="softmax", bias_initializer="zeros")])
m.set_weights([wce, np.zeros(3, "float32")])
m.compile("sgd", loss="crossentropy")
out["ce_sparse"] = m.evaluate(xce, lab, verbose=0)
m.compile("sgd", loss="ce")
out["ce_categorical"] = m.evaluate(xce, keras.utils.to_categorical(lab, 3), verbose=0)
m1 = keras.Sequential([keras.Input((4,)), layers.Dense(1, activation="sigmoid")])
m1.set_weights([wce[:, :1], np.zeros(1, "float32")])
m1.compile("sgd", loss="crossentropy")
out["ce_binary"] = m1.evaluate(xce, (lab % 2).astype("float32")[:, None], verbose=0)


# SparseCategoricalCrossentropy(ignore_class=255): the mean over the labelled samples.
m.compile("sgd", loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
out["ce_ignore_class"] = m.evaluate(xce, np.array([0, 2, 255, 1, 255, 2]), verbose=0)


# Losses' reduction: "sum" (one batch and two), "mean_with_sample_weight" with weights.
yreg = rng.uniform(-1, 1, (6, 3)).astype("float32")
swr = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], dtype="float32")
out["reduction_y"], out["reduction_w"] = yreg.tolist(), swr.tolist()
m.compile("sgd", loss=keras.losses.MeanSquaredError(reduction="sum"))
out["reduction_sum_b6"] = m.evaluate(xce, yreg, batch_size=6, verbose=0)
out["reduction_sum_b4"] = m.evaluate(xce, yreg, batch_size=4, verbose=0)
m.compile("sgd", loss=keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"))
out["reduction_mean_sw_b6"] = m.evaluate(xce, yreg, sample_weight=swr, batch_size=6, verbose=0)

print(json.dumps(out, indent=1, sort_keys=True))
