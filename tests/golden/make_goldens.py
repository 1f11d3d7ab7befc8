"""Golden values for tests/keras_conformance.rs, computed by Keras itself.

Regenerate from the repository root with the venv of ../shared/bench/setup_keras.sh
(Keras 3.15.1 on TensorFlow 2.21, CPU):

    /tmp/keras-ref-venv/bin/python tests/golden/make_goldens.py

It writes tests/golden/keras_goldens.json: one entry per case, each with its inputs and
Keras' outputs, in float64 (keras.config.set_floatx("float64")). kandle's test reads the
inputs from the file, so the two sides always see the same numbers.
"""
import json
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras

keras.config.set_floatx("float64")
rng = np.random.default_rng(12)
out = {"keras_version": keras.__version__}


def arr(a):
    return np.asarray(a, dtype="float64").tolist()


def metric_result(metric, y_true, y_pred, sample_weight=None):
    m = metric
    m.update_state(y_true, y_pred, sample_weight=sample_weight)
    return float(m.result())


# ---- metrics -------------------------------------------------------------------------------
# Probabilities with ties at the top-k boundary (in_top_k counts ties as inside).
p = rng.random((12, 5))
p[0] = [0.3, 0.3, 0.3, 0.05, 0.05]
p[1] = [0.1, 0.4, 0.4, 0.05, 0.05]
p = (p / p.sum(axis=1, keepdims=True)).astype("float32")  # TF's in_top_k takes float32
labels = rng.integers(0, 5, 12)
labels[0] = 2
onehot = np.eye(5)[labels]
w = rng.random(12)
ml_true = (rng.random((12, 5)) > 0.6).astype("float64")  # multi-label 0/1 targets
ml_pred = rng.random((12, 5))
metrics = {
    "y_prob": arr(p),
    "labels": labels.tolist(),
    "onehot": arr(onehot),
    "sample_weight": arr(w),
    "ml_true": arr(ml_true),
    "ml_pred": arr(ml_pred),
    "categorical_accuracy": metric_result(keras.metrics.CategoricalAccuracy(), onehot, p),
    "sparse_categorical_accuracy": metric_result(keras.metrics.SparseCategoricalAccuracy(), labels, p),
    "categorical_accuracy_weighted": metric_result(keras.metrics.CategoricalAccuracy(), onehot, p, w),
    "top_k_2": metric_result(keras.metrics.TopKCategoricalAccuracy(k=2, dtype="float32"), onehot.astype("float32"), p),
    "top_k_default": metric_result(keras.metrics.TopKCategoricalAccuracy(dtype="float32"), onehot.astype("float32"), p),
    "sparse_top_k_2": metric_result(keras.metrics.SparseTopKCategoricalAccuracy(k=2, dtype="float32"), labels, p),
    "sparse_top_k_2_weighted": metric_result(
        keras.metrics.SparseTopKCategoricalAccuracy(k=2, dtype="float32"), labels, p, w.astype("float32")),
    "precision": metric_result(keras.metrics.Precision(), ml_true, ml_pred),
    "recall": metric_result(keras.metrics.Recall(), ml_true, ml_pred),
    "precision_weighted": metric_result(keras.metrics.Precision(), ml_true, ml_pred, w),
    "recall_weighted": metric_result(keras.metrics.Recall(), ml_true, ml_pred, w),
    "binary_accuracy": metric_result(keras.metrics.BinaryAccuracy(), ml_true, ml_pred),
}
# Which metric "accuracy" becomes, and the history key, for three kinds of model.
resolve = {}
for name, units, loss, y in [
    ("multilabel_bce", 5, "binary_crossentropy", ml_true),
    ("sparse", 5, "sparse_categorical_crossentropy", labels),
    ("binary", 1, "binary_crossentropy", ml_true[:, :1]),
    ("onehot_mse", 5, "mse", onehot),
]:
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(units, activation="sigmoid")])
    m.compile("sgd", loss, metrics=["accuracy", "acc"])
    m.fit(ml_pred, y, epochs=1, verbose=0, batch_size=12)
    kinds = [type(x).__name__ for ml in m._compile_metrics._flat_metrics for x in ml.metrics]
    resolve[name] = {"classes": kinds, "keys": sorted(m.history.history.keys())}
metrics["resolve"] = resolve
out["metrics"] = metrics

# ---- losses: values and gradients with respect to the output ---------------------------------
import tensorflow as tf

logits = rng.normal(size=(6, 4)) * 2
probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
sig = 1 / (1 + np.exp(-logits))
cls = rng.integers(0, 4, 6)
oh = np.eye(4)[cls]
bin_true = (rng.random((6, 4)) > 0.5).astype("float64")
reg_true = rng.normal(size=(6, 4))
dist_true = rng.random((6, 4))
dist_true = dist_true / dist_true.sum(axis=1, keepdims=True)


def loss_case(loss, y_true, y_pred):
    yp = tf.constant(y_pred, dtype="float64")
    with tf.GradientTape() as tape:
        tape.watch(yp)
        v = loss(tf.constant(y_true), yp)
    return {"value": float(v), "grad": arr(tape.gradient(v, yp).numpy())}


L = keras.losses
losses = {
    "logits": arr(logits), "probs": arr(probs), "sig": arr(sig), "cls": cls.tolist(), "onehot": arr(oh),
    "bin_true": arr(bin_true), "reg_true": arr(reg_true), "dist_true": arr(dist_true),
    "cce": loss_case(L.CategoricalCrossentropy(), oh, probs),
    "cce_logits": loss_case(L.CategoricalCrossentropy(from_logits=True), oh, logits),
    "cce_logits_smooth": loss_case(L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), oh, logits),
    "cce_smooth": loss_case(L.CategoricalCrossentropy(label_smoothing=0.1), oh, probs),
    "scce_logits": loss_case(L.SparseCategoricalCrossentropy(from_logits=True), cls, logits),
    "bce": loss_case(L.BinaryCrossentropy(), bin_true, sig),
    "bce_logits": loss_case(L.BinaryCrossentropy(from_logits=True), bin_true, logits),
    "bce_logits_smooth": loss_case(L.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), bin_true, logits),
    "bce_smooth": loss_case(L.BinaryCrossentropy(label_smoothing=0.2), bin_true, sig),
    "mse": loss_case(L.MeanSquaredError(), reg_true, logits),
    "mae": loss_case(L.MeanAbsoluteError(), reg_true, logits),
    "huber": loss_case(L.Huber(), reg_true, logits),
    "huber_delta": loss_case(L.Huber(delta=0.5), reg_true, logits),
    "kld": loss_case(L.KLDivergence(), dist_true, probs),
}
out["losses"] = losses

# ---- activations: values and gradients (of sum(y * dy)) with respect to the input ------------
ax = rng.uniform(-8, 8, size=(4, 6))
ax[0, :3] = [0.5, -2.5, 4.0]
ady = rng.normal(size=(4, 6))
acts = {"x": arr(ax), "dy": arr(ady)}
for name in ["linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "elu", "selu", "relu6",
             "hard_sigmoid", "silu", "swish", "gelu"]:
    f = keras.activations.get(name)
    xv = tf.constant(ax)
    with tf.GradientTape() as tape:
        tape.watch(xv)
        y = f(xv)
        v = tf.reduce_sum(y * ady)
    acts[name] = {"y": arr(y.numpy()), "grad": arr(tape.gradient(v, xv).numpy())}
# TensorFlow's float64 GELU is only about 1e-7 (relative) from the exact function; the exact
# values and derivative, from Python's math.erf, are written beside it.
import math
acts["gelu_exact"] = {
    "y": arr([[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in row] for row in ax]),
    "grad": arr([[d * (0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi))
                  for v, d in zip(row, drow)] for row, drow in zip(ax, ady)]),
}
out["activations"] = acts

# ---- optimizers: gradient clipping and epsilon, 3 steps on two variables ---------------------
w0 = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
grads = [[rng.normal(size=(3, 2)) * 2, rng.normal(size=(2,)) * 2] for _ in range(3)]
opt_cases = {
    "sgd_clipnorm": keras.optimizers.SGD(learning_rate=0.1, clipnorm=0.5),
    "sgd_clipvalue": keras.optimizers.SGD(learning_rate=0.1, clipvalue=0.3),
    "sgd_global_clipnorm": keras.optimizers.SGD(learning_rate=0.1, global_clipnorm=0.5),
    "rmsprop_clipnorm": keras.optimizers.RMSprop(learning_rate=0.01, clipnorm=1.0),
    "adam_global_clipnorm": keras.optimizers.Adam(learning_rate=0.01, global_clipnorm=1.0),
    "adamax_epsilon": keras.optimizers.Adamax(learning_rate=0.01, epsilon=0.1),
    "nadam_epsilon": keras.optimizers.Nadam(learning_rate=0.01, epsilon=0.1),
}
opts = {"w0": [arr(w) for w in w0], "grads": [[arr(g) for g in step] for step in grads]}
for name, opt in opt_cases.items():
    vs = [keras.Variable(w.copy(), dtype="float64") for w in w0]
    for step in grads:
        opt.apply_gradients(zip([tf.constant(g) for g in step], vs))
    opts[name] = [arr(v.numpy()) for v in vs]
out["optimizers"] = opts

# ---- fit: the tutorial CNN narrowed, 3 steps from the same initial weights (dropout 0) -----
def tutorial_cnn():
    L = keras.layers
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        L.Conv2D(4, (3, 3), padding="same", activation="relu"),
        L.Conv2D(4, (3, 3), activation="relu"),
        L.MaxPooling2D((2, 2)),
        L.Dropout(0.0),
        L.Conv2D(8, (3, 3), padding="same", activation="relu"),
        L.Conv2D(8, (3, 3), activation="relu"),
        L.MaxPooling2D((2, 2)),
        L.Dropout(0.0),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dropout(0.0),
        L.Dense(4, activation="softmax"),
    ])


keras.utils.set_random_seed(7)
fx = rng.random((12, 16, 16, 3))
fy = rng.integers(0, 4, 12)
fy_onehot = np.eye(4)[fy]
fsw = rng.random(12) * 2
init = [w.numpy() for w in tutorial_cnn().weights]
fit = {"x": arr(fx.reshape(12, -1)), "labels": fy.tolist(), "sample_weight": arr(fsw),
       "init": [arr(w.reshape(-1)) for w in init], "init_shapes": [list(w.shape) for w in init]}
class_weight = {0: 1.0, 1: 2.0, 2: 0.5, 3: 1.5}
fit_cases = {
    "sgd_class_weight": (lambda: keras.optimizers.SGD(0.1, momentum=0.9),
                         keras.losses.CategoricalCrossentropy(), {"class_weight": class_weight}),
    "rmsprop_sample_weight_smoothing": (lambda: keras.optimizers.RMSprop(),
                                        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                                        {"sample_weight": fsw}),
    "adam_clipnorm_sample_weight": (lambda: keras.optimizers.Adam(0.01, clipnorm=1.0),
                                    keras.losses.CategoricalCrossentropy(), {"sample_weight": fsw}),
}
for name, (opt, loss, kw) in fit_cases.items():
    m = tutorial_cnn()
    m.set_weights(init)
    m.compile(opt(), loss, metrics=["accuracy"])
    h = m.fit(fx, fy_onehot, batch_size=4, epochs=2, shuffle=False, verbose=0, **kw)
    fit[name] = {"weights": [arr(w.numpy().reshape(-1)) for w in m.weights],
                 "history": {k: [float(v) for v in vs] for k, vs in h.history.items()}}
out["fit"] = fit

# ---- layers added for Keras' next steps: outputs from the same weights ----------------------
L = keras.layers
keras.utils.set_random_seed(11)
nl = keras.Sequential([
    keras.Input((11, 12, 3)),
    L.Rescaling(0.5, offset=0.25),
    L.ZeroPadding2D(((1, 0), (2, 1))),
    L.DepthwiseConv2D((3, 2), strides=2, padding="same", depth_multiplier=2),
    L.SeparableConv2D(5, 3, dilation_rate=2, activation="tanh", bias_initializer="glorot_uniform"),
    L.Reshape((-1, 5)),
    L.Reshape((2, 4, 5)),
    L.GlobalMaxPooling2D(keepdims=True),
    L.Flatten(),
])
nx = rng.normal(size=(2, 11, 12, 3))
out["new_layers"] = {
    "x": arr(nx.reshape(2, -1)),
    "weights": [arr(w.numpy().reshape(-1)) for w in nl.weights],
    "weight_names": [w.path for w in nl.weights],
    "shapes": [list(w.shape) for w in nl.weights],
    "y": arr(nl.predict(nx, verbose=0)),
}

# ---- callbacks driven by hand on scripted logs ------------------------------------------------
def tiny():
    m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    m.compile(keras.optimizers.SGD(learning_rate=0.1), "mse")
    return m


cbs = {}
plateau_cases = {
    "plateau_min": (dict(monitor="val_loss", factor=0.5, patience=2, min_delta=0.01, cooldown=1, min_lr=0.01),
                    "val_loss", [1.0, 0.995, 0.99, 0.985, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]),
    "plateau_max": (dict(monitor="val_accuracy", mode="max", factor=0.2, patience=1, min_delta=0.0),
                    "val_accuracy", [0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.69, 0.71]),
}
for name, (kw, key, seq) in plateau_cases.items():
    m = tiny()
    cb = keras.callbacks.ReduceLROnPlateau(**kw)
    cb.set_model(m)
    cb.on_train_begin()
    lrs = []
    for e, v in enumerate(seq):
        cb.on_epoch_end(e, {key: v})
        lrs.append(float(m.optimizer.learning_rate.numpy()))
    cbs[name] = {"kwargs": kw, "monitor": key, "values": seq, "lrs": lrs}

stop_cases = {
    "stop_restore": (dict(monitor="val_loss", patience=2, min_delta=0.01, restore_best_weights=True),
                     [1.0, 0.8, 0.85, 0.79, 0.795, 0.81, 0.7]),
    "stop_baseline": (dict(monitor="val_loss", patience=3, baseline=0.5, restore_best_weights=True),
                      [1.0, 0.9, 0.6, 0.55, 0.4, 0.45]),
    "stop_start_from": (dict(monitor="val_loss", patience=1, start_from_epoch=3, restore_best_weights=True),
                        [1.0, 2.0, 3.0, 0.5, 0.6, 0.7, 0.8]),
    "stop_completes": (dict(monitor="val_loss", patience=5, restore_best_weights=True), [1.0, 0.5, 0.7, 0.8]),
}
for name, (kw, seq) in stop_cases.items():
    m = tiny()
    cb = keras.callbacks.EarlyStopping(**kw)
    cb.set_model(m)
    cb.on_train_begin()
    epochs_run = 0
    for e, v in enumerate(seq):
        m.set_weights([np.full((2, 1), float(e)), np.full((1,), float(e))])
        cb.on_epoch_end(e, {"val_loss": v})
        epochs_run = e + 1
        if m.stop_training:
            break
    cb.on_train_end()
    cbs[name] = {"kwargs": kw, "values": seq, "epochs_run": epochs_run,
                 "stopped_epoch": int(cb.stopped_epoch), "weights_after": float(m.get_weights()[1][0])}
out["callbacks"] = cbs

# ---- ImageDataGenerator: every fill mode, both interpolation orders; the ZCA matrix ---------
from keras.src.legacy.preprocessing.image import ImageDataGenerator

# Square: for a non-square image Keras centres rotation, shear and zoom at the swapped
# centre ((h - 1) / 2 across, (w - 1) / 2 down), where kandle uses the true centre.
gimg = rng.uniform(0, 10, size=(6, 6, 2))
transforms = {
    # Away from exact .5 source coordinates, where order 0's rounding would hang on the last bit.
    "affine": dict(theta=33.0, tx=1.3, ty=-0.7, shear=11.0, zx=0.93, zy=1.17),
    "shift": dict(tx=-2.4, ty=3.3),
    "far": dict(tx=9.6, ty=-13.1),
}
idg = {"img": arr(gimg.reshape(-1)), "shape": list(gimg.shape), "transforms": transforms, "outputs": {}}
for mode in ["constant", "nearest", "reflect", "wrap"]:
    for order in [1, 0]:
        for tname, t in transforms.items():
            g = ImageDataGenerator(fill_mode=mode, cval=-1.0, interpolation_order=order)
            idg["outputs"][f"{mode}_{order}_{tname}"] = arr(g.apply_transform(gimg, t).reshape(-1))
zx = rng.uniform(0, 1, size=(20, 4, 3, 2))
g = ImageDataGenerator(zca_whitening=True, zca_epsilon=1e-4)
g.fit(zx)
idg["zca_x"] = arr(zx.reshape(-1))
idg["zca_matrix"] = arr(np.asarray(g.zca_whitening_matrix).reshape(-1))
idg["zca_mean"] = arr(np.asarray(g.mean).reshape(-1))
out["image_data_generator"] = idg

with open(os.path.join(os.path.dirname(__file__), "keras_goldens.json"), "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
    f.write("\n")
print("wrote keras_goldens.json")
