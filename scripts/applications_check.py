"""kandle's keras.applications networks on Keras' own weight files (issue 33), with real Keras 3.

Run by scripts/applications_check.sh with the venv's python:

    python scripts/applications_check.py WORK_DIR [--data-dir ../shared/data/cifar10]

For ResNet50, MobileNetV2 and EfficientNetB0, with and without the top, at two input sizes
(224 and 160), VGG16 (the top at 64 and 32, without at 224 and 160) and DenseNet121 (the top at
224, without at 160): Keras builds the network (weights=None), gives its BatchNormalization and
Normalization layers random statistics and its weights random values, saves them as a legacy
`.h5` the way keras.applications' files are written (`save_weights_to_hdf5_group`), and
predicts on 8 real CIFAR-10 test images resized to the input size and passed through the
network's `preprocess_input`. The Keras-written files and predictions go to WORK_DIR, with
cases.json; then `cargo test --release --test applications -- --ignored keras_written` loads each
file into kandle's network and compares (within 1e-4 of the largest output). One MobileNetV2
file is also served under Keras' file name from a file:// mirror, for weights="imagenet".
"""
import argparse
import io
import json
import os
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import h5py
import numpy as np
import keras
from keras.src.legacy.saving import legacy_h5_format

ap = argparse.ArgumentParser()
ap.add_argument("work")
ap.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10"))
args = ap.parse_args()
W = args.work
os.makedirs(os.path.join(W, "mirror"), exist_ok=True)


def test_images(n=8):
    """The first test image of each of the first `n` classes, RGB uint8 32x32."""
    from PIL import Image
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"][:n]
    found = {}
    with tarfile.open(os.path.join(args.data_dir, "cifar-10-images.tar.gz")) as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in classes and parts[2] not in found:
                found[parts[2]] = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
                if len(found) == n:
                    break
    return [found[c] for c in classes]


IMAGES = test_images()


def images_at(size):
    return np.stack([np.asarray(im.resize((size, size), resample=2), dtype="float32") for im in IMAGES])


NETWORKS = {
    "ResNet50": keras.applications.resnet50,
    "MobileNetV2": keras.applications.mobilenet_v2,
    "EfficientNetB0": keras.applications.efficientnet,
    "VGG16": keras.applications.vgg16,
    "DenseNet121": keras.applications.densenet,
}
# (include_top, input size) per network: both with and without the top at two sizes, except
# VGG16's top, whose 4096-wide Dense layers after Flatten take 0.5 GB at 224 (checked at 64).
SHAPES = {n: [(True, 224), (True, 160), (False, 224), (False, 160)] for n in NETWORKS}
SHAPES["VGG16"] = [(True, 64), (True, 32), (False, 224), (False, 160)]
SHAPES["DenseNet121"] = [(True, 224), (False, 160)]


def randomize(model, rng):
    """Random weights of Keras' scale, random statistics for the normalizations."""
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        cls = layer.__class__.__name__
        if cls == "BatchNormalization":
            c = ws[0].shape[0]
            ws = [rng.uniform(0.8, 1.2, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
        elif cls == "Normalization":
            ws = [np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2, ws[2]]
        else:
            ws = [w + rng.normal(0, 0.01, w.shape) for w in ws]
        layer.set_weights([np.asarray(w, dtype=layer.get_weights()[i].dtype) for i, w in enumerate(ws)])


cases = []
rng = np.random.default_rng(0)
for network, module in NETWORKS.items():
    for include_top, size in SHAPES[network]:
        keras.utils.clear_session()
        keras.utils.set_random_seed(len(cases))
        # The top below 224 gives logits (classifier_activation=None): a sharper comparison
        # than softmax's near-uniform outputs of random weights.
        logits = include_top and size != 224
        extra = {"classifier_activation": None} if logits else {}
        model = getattr(keras.applications, network)(
            weights=None, include_top=include_top, input_shape=(size, size, 3), **extra
        )
        randomize(model, rng)
        key = f"{network}_{'top' if include_top else 'notop'}_{size}"
        path = os.path.join(W, f"{key}.h5")
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        # Keras' predictions from the file, as a user would load it (a Normalization layer
        # given weights by set_weights keeps its old statistics until finalize_state).
        keras.utils.clear_session()
        model = getattr(keras.applications, network)(
            weights=path, include_top=include_top, input_shape=(size, size, 3), **extra
        )
        x = images_at(size)
        np.save(os.path.join(W, f"images_{size}.npy"), x)
        pred = model.predict(module.preprocess_input(x.copy()), verbose=0)
        np.save(os.path.join(W, f"{key}.npy"), pred.astype("float32"))
        case = {"key": key, "network": network, "include_top": include_top, "size": size, "weights": path,
                "logits": logits}
        if network == "MobileNetV2" and include_top and size == 224:
            # Keras' name of the ImageNet file of these arguments, served by the mirror.
            mirror_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
            os.link(path, os.path.join(W, "mirror", mirror_name))
            case["mirror_file"] = mirror_name
        cases.append(case)
        print(f"{key}: Keras wrote {os.path.getsize(path) / 1e6:.1f} MB, predictions {pred.shape}", flush=True)

with open(os.path.join(W, "cases.json"), "w") as f:
    json.dump({"keras_version": keras.__version__, "cases": cases}, f, indent=1)
print("applications_keras_files=written")
