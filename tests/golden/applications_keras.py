"""Keras' own summary of the keras.applications networks kandle builds (issue 33): for each set
of arguments, the layers in order (name and class), the total and trainable parameter counts and
the output shape, written to tests/golden/applications/architectures.json. Run with the Keras
venv (scripts/python_venv.sh):

    target/py-venv/bin/python tests/golden/applications_keras.py
"""
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "applications")

# (key, constructor, kwargs): weights=None everywhere (these machines have no ImageNet files).
CASES = [
    ("resnet50", "ResNet50", {}),
    ("resnet50_notop_160_avg", "ResNet50", {"include_top": False, "input_shape": (160, 160, 3), "pooling": "avg"}),
    ("mobilenetv2", "MobileNetV2", {}),
    ("mobilenetv2_0.35_notop_96", "MobileNetV2", {"alpha": 0.35, "include_top": False, "input_shape": (96, 96, 3)}),
    ("mobilenetv2_1.3_10classes", "MobileNetV2", {"alpha": 1.3, "classes": 10, "input_shape": (128, 128, 3)}),
    ("efficientnetb0", "EfficientNetB0", {}),
    ("efficientnetb0_notop_160_max", "EfficientNetB0", {"include_top": False, "input_shape": (160, 160, 3), "pooling": "max"}),
    ("vgg16_notop_64_avg", "VGG16", {"include_top": False, "input_shape": (64, 64, 3), "pooling": "avg"}),
    ("vgg16_10classes_32", "VGG16", {"classes": 10, "input_shape": (32, 32, 3)}),
    ("vgg19_notop_32_max", "VGG19", {"include_top": False, "input_shape": (32, 32, 3), "pooling": "max"}),
    ("densenet121", "DenseNet121", {}),
    ("densenet169_notop_96_avg", "DenseNet169", {"include_top": False, "input_shape": (96, 96, 3), "pooling": "avg"}),
    ("densenet201_notop_64", "DenseNet201", {"include_top": False, "input_shape": (64, 64, 3)}),
]


def main():
    out = {"keras_version": keras.__version__, "models": {}}
    for key, ctor, kwargs in CASES:
        keras.utils.clear_session()
        model = getattr(keras.applications, ctor)(weights=None, **kwargs)
        out["models"][key] = {
            "constructor": ctor,
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
            "name": model.name,
            "total_params": int(model.count_params()),
            "trainable_params": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
            "output_shape": list(model.output_shape[1:]),
            "layers": [[l.name, l.__class__.__name__] for l in model.layers],
        }
        print(key, out["models"][key]["total_params"], len(model.layers))
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "architectures.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
