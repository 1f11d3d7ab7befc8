"""Keras' side of `cargo run --release --example benchmark -- --applications`: the same
keras.applications networks (weights=None), 224x224x3 random images in [0, 255], batch 32,
1000 classes, Adam, timed the same way (one warm-up batch, then N batches of predict and of fit).

Set-up once:  bash ../shared/bench/setup_keras.sh          (creates /tmp/keras-ref-venv)
Speed:        /tmp/keras-ref-venv/bin/python benches/keras_applications.py [--steps 5]

Prints `resnet50_infer_images_per_sec=`, `resnet50_train_images_per_sec=`,
`mobilenetv2_infer_images_per_sec=`, `mobilenetv2_train_images_per_sec=`,
`efficientnetb0_infer_images_per_sec=` and `peak_rss_mib=`, as kandle's benchmark does."""
import argparse
import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    keras.utils.set_random_seed(0)
    bs, steps = 32, a.steps
    n = bs * steps
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((bs, 224, 224, 3), dtype=np.float32) * 255] * steps)
    y = keras.utils.to_categorical(rng.integers(0, 1000, n), 1000)
    for name, ctor, train in [
        ("resnet50", keras.applications.ResNet50, True),
        ("mobilenetv2", keras.applications.MobileNetV2, True),
        ("efficientnetb0", keras.applications.EfficientNetB0, False),
    ]:
        keras.utils.clear_session()
        model = ctor(weights=None)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        model.predict(x[:bs], batch_size=bs, verbose=0)  # warm-up
        t = time.perf_counter()
        model.predict(x, batch_size=bs, verbose=0)
        print(f"{name}_infer_images_per_sec={n / (time.perf_counter() - t):.2f}", flush=True)
        if train:
            model.fit(x[:bs], y[:bs], batch_size=bs, epochs=1, verbose=0)  # warm-up
            t = time.perf_counter()
            model.fit(x, y, batch_size=bs, epochs=1, verbose=0)
            print(f"{name}_train_images_per_sec={n / (time.perf_counter() - t):.2f}", flush=True)
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
