"""Keras' outputs of its preprocessing layers for fixed transform parameters (issue 33), the
goldens of tests/augmentation_layers.rs: a degenerate factor range (`(f, f)`) makes each
random layer draw exactly `f`, so the outputs are deterministic. Images: 2 real CIFAR-10 test
images (a 32x32 airplane and automobile, as float32 0..255) cropped to 32x24 (non-square, to
catch swapped axes). Written to tests/golden/augmentation_layers/ as .npy files with
cases.json. Run with the Keras venv:

    target/py-venv/bin/python tests/golden/augmentation_layers_keras.py
"""
import io
import json
import os
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
from keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "augmentation_layers")
DATA = os.path.join(HERE, "..", "..", "..", "shared", "data", "cifar10", "cifar-10-images.tar.gz")


def images():
    from PIL import Image
    want, found = ["airplane", "automobile"], {}
    with tarfile.open(DATA) as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in want and parts[2] not in found:
                found[parts[2]] = np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
                if len(found) == 2:
                    break
    return np.stack([found[c] for c in want]).astype("float32")[:, :, 4:28, :]


CASES = {
    "rotation_reflect": layers.RandomRotation((0.1, 0.1)),
    "rotation_negative_constant": layers.RandomRotation((-0.07, -0.07), fill_mode="constant", fill_value=17.0),
    "rotation_nearest_fill_wrap": layers.RandomRotation((0.2, 0.2), fill_mode="wrap"),
    "rotation_nearest_interpolation": layers.RandomRotation((0.05, 0.05), interpolation="nearest", fill_mode="nearest"),
    "translation_reflect": layers.RandomTranslation((0.2, 0.2), (-0.15, -0.15)),
    "translation_constant": layers.RandomTranslation((-0.3, -0.3), (0.25, 0.25), fill_mode="constant"),
    "translation_wrap": layers.RandomTranslation((0.4, 0.4), (0.6, 0.6), fill_mode="wrap"),
    "zoom_out_reflect": layers.RandomZoom((0.3, 0.3)),
    "zoom_in_width_nearest": layers.RandomZoom((-0.2, -0.2), width_factor=(0.1, 0.1), fill_mode="nearest"),
    "contrast": layers.RandomContrast((-0.4, 0.4)),
    "contrast_up": layers.RandomContrast((-0.5, 0.5)),
    "brightness": layers.RandomBrightness((0.1, 0.1)),
    "brightness_clipped": layers.RandomBrightness((-0.6, -0.6)),
    "resizing_bilinear_up": layers.Resizing(45, 37),
    "resizing_bilinear_down": layers.Resizing(13, 10),
    "resizing_nearest": layers.Resizing(20, 29, interpolation="nearest"),
    "resizing_crop_to_aspect": layers.Resizing(16, 16, crop_to_aspect_ratio=True),
    "center_crop": layers.CenterCrop(19, 12),
    "center_crop_upsizes": layers.CenterCrop(40, 40),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    x = images()
    np.save(os.path.join(OUT, "images.npy"), x)
    meta = {"keras_version": keras.__version__, "cases": {}}
    for name, layer in CASES.items():
        y = keras.ops.convert_to_numpy(layer(x, training=True)).astype("float32")
        np.save(os.path.join(OUT, f"{name}.npy"), y)
        cfg = layer.get_config()
        meta["cases"][name] = {k: v for k, v in cfg.items() if k not in ("name", "trainable", "dtype")}
        meta["cases"][name]["class_name"] = layer.__class__.__name__
        print(name, y.shape)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, default=list)


if __name__ == "__main__":
    main()
