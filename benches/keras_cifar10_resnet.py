"""Keras' side of examples/cifar10_resnet.rs: ResNet-20 v1 as Keras' own CIFAR-10 ResNet example
builds it (resnet_layer / resnet_v1: he_normal kernels, l2(1e-4), BatchNormalization, 1x1
projection shortcuts, AveragePooling2D(8)), trained as that example does: inputs scaled to 0..1
minus the training set's per-pixel mean, Adam 1e-3, the legacy ImageDataGenerator with shifts of
10% and horizontal flips; batch 128 as kandle's example. Same data as kandle's example: the
class-folder JPEG tree in ../shared/data/cifar10.

Set-up once:  bash ../shared/bench/setup_keras.sh          (creates /tmp/keras-ref-venv)
Accuracy:     /tmp/keras-ref-venv/bin/python benches/keras_cifar10_resnet.py --epochs 10 --seed 0
Speed:        /tmp/keras-ref-venv/bin/python benches/keras_cifar10_resnet.py --bench [--steps 30]
Ends with `test_loss=<f> test_accuracy=<f>`, or with --bench prints
`resnet20_train_images_per_sec=<f>` (random CIFAR-shaped data, the training step alone, after a
warm-up, as examples/benchmark.rs measures kandle's)."""
import argparse, io, os, tarfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
from keras import layers
from keras.regularizers import l2

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(d):
    from PIL import Image
    split = {"train": ([], []), "test": ([], [])}
    with tarfile.open(os.path.join(d, "cifar-10-images.tar.gz")) as tf:
        for m in tf:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 4:
                img = np.asarray(Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB"))
                split[parts[1]][0].append(img)
                split[parts[1]][1].append(CLASSES.index(parts[2]))
    return [(np.stack(a), np.array(b)) for a, b in (split["train"], split["test"])]


def resnet_layer(inputs, num_filters=16, kernel_size=3, strides=1, activation="relu", batch_normalization=True):
    x = layers.Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding="same",
                      kernel_initializer="he_normal", kernel_regularizer=l2(1e-4))(inputs)
    if batch_normalization:
        x = layers.BatchNormalization()(x)
    if activation is not None:
        x = layers.Activation(activation)(x)
    return x


def resnet_v1(input_shape=(32, 32, 3), depth=20, num_classes=10):
    num_filters, num_res_blocks = 16, (depth - 2) // 6
    inputs = keras.Input(shape=input_shape)
    x = resnet_layer(inputs)
    for stack in range(3):
        for res_block in range(num_res_blocks):
            strides = 2 if stack > 0 and res_block == 0 else 1
            y = resnet_layer(x, num_filters, strides=strides)
            y = resnet_layer(y, num_filters, activation=None)
            if stack > 0 and res_block == 0:
                x = resnet_layer(x, num_filters, kernel_size=1, strides=strides, activation=None,
                                 batch_normalization=False)
            x = layers.add([x, y])
            x = layers.Activation("relu")(x)
        num_filters *= 2
    x = layers.AveragePooling2D(pool_size=8)(x)
    outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal")(layers.Flatten()(x))
    return keras.Model(inputs=inputs, outputs=outputs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    keras.utils.set_random_seed(a.seed)
    model = resnet_v1()
    assert model.count_params() == 274442, model.count_params()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    bs = a.batch_size
    if a.bench:
        rng = np.random.default_rng(0)
        n = bs * a.steps
        x = rng.random((n, 32, 32, 3), dtype=np.float32)
        y = keras.utils.to_categorical(rng.integers(0, 10, n), 10)
        model.fit(x[:bs * 4], y[:bs * 4], batch_size=bs, epochs=1, verbose=0)  # warm-up
        t = time.perf_counter()
        model.fit(x, y, batch_size=bs, epochs=1, verbose=0)
        print(f"resnet20_train_images_per_sec={n / (time.perf_counter() - t):.1f}")
        return
    (x, y), (xt, yt) = load_cifar10(a.data_dir)
    # The tree is ordered class by class: mix it, as kandle's loader does, so --limit sees every class.
    p = np.random.default_rng(0).permutation(len(y))
    x, y = x[p], y[p]
    if a.limit:
        x, y = x[:a.limit], y[:a.limit]
    x = x.astype("float32") / 255
    xt = xt.astype("float32") / 255
    mean = x.mean(axis=0)
    x, xt = x - mean, xt - mean
    y1, yt1 = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(yt, 10)
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    gen = ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True)
    t = time.perf_counter()
    model.fit(gen.flow(x, y1, batch_size=bs, seed=a.seed), steps_per_epoch=int(np.ceil(len(x) / bs)),
              epochs=a.epochs, verbose=2, validation_data=(xt, yt1))
    print(f"train_seconds={time.perf_counter() - t:.1f}")
    loss, acc = model.evaluate(xt, yt1, batch_size=bs, verbose=0)
    print(f"test_loss={loss:.4f} test_accuracy={acc:.4f}")


if __name__ == "__main__":
    main()
