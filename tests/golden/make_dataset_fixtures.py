"""Small files in the formats Keras' data sets are published in, for tests/datasets_keras.rs.

Regenerate (numpy and Keras from ../shared/bench/setup_keras.sh):
    /tmp/keras-ref-venv/bin/python tests/golden/make_dataset_fixtures.py

Writes tests/golden/datasets/:
- cifar10_py2_batch: a CIFAR-10 batch pickled as the published `cifar-10-batches-py` files are
  (Python 2 cPickle, protocol 2: `str` as SHORT_BINSTRING / BINSTRING, numpy arrays through
  `numpy.core.multiarray._reconstruct`), 5 images;
- cifar100_py3_batch: a CIFAR-100 `train`-like dict pickled by Python 3 (protocol 4, bytes
  keys), with `fine_labels` and `coarse_labels`, 4 images;
- evil_pickle: a pickle that calls `os.system` (must be refused);
- mnist_small.npz: `np.savez_compressed` of x_train (3, 28, 28), y_train, x_test (2, 28, 28),
  y_test, uint8, as Keras' mnist.npz (deflated members).
Each file is read back with Keras' own RestrictedUnpickler / np.load and checked.
"""
import io, os, pickle, struct
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets")
os.makedirs(OUT, exist_ok=True)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str opcodes, as cPickle did for the CIFAR files."""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def pixels(n, seed):
    # a pattern whose every byte differs by position: image i, channel c, pixel p
    i, c, p = np.meshgrid(np.arange(n), np.arange(3), np.arange(1024), indexing="ij")
    return ((i * 37 + c * 101 + p * 7 + seed) % 256).astype(np.uint8).reshape(n, 3072)


cifar10 = {
    "batch_label": "training batch 1 of 5",
    "labels": [6, 9, 9, 4, 1],
    "data": pixels(5, 0),
    "filenames": ["leptodactylus_pentadactylus_s_000004.png", "camion_s_000148.png",
                  "tipper_truck_s_001250.png", "american_elk_s_001521.png", "station_wagon_s_000293.png"],
}
buf = io.BytesIO()
Py2Pickler(buf, protocol=2).dump(cifar10)
raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
assert raw.startswith(b"\x80\x02}q\x00(U\x0bbatch_label") or raw.startswith(b"\x80\x02}"), raw[:40]
open(os.path.join(OUT, "cifar10_py2_batch"), "wb").write(raw)

cifar100 = {
    b"filenames": [b"bos_taurus_s_000507.png", b"stegosaurus_s_000125.png", b"mcintosh_s_000643.png", b"altar_boy_s_001435.png"],
    b"batch_label": b"training batch 1 of 1",
    b"fine_labels": [19, 29, 0, 11],
    b"coarse_labels": [11, 15, 4, 14],
    b"data": pixels(4, 5),
}
open(os.path.join(OUT, "cifar100_py3_batch"), "wb").write(pickle.dumps(cifar100, protocol=4))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


open(os.path.join(OUT, "evil_pickle"), "wb").write(pickle.dumps({b"data": Evil()}, protocol=4))

rng = np.random.default_rng(0)
mnist = dict(x_train=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), y_train=np.array([5, 0, 4], np.uint8),
             x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), y_test=np.array([7, 2], np.uint8))
np.savez_compressed(os.path.join(OUT, "mnist_small.npz"), **mnist)

# Read back as Keras reads them.
from keras.src.datasets.cifar import load_batch
from keras.src.datasets.npz_utils import RestrictedUnpickler
x, y = load_batch(os.path.join(OUT, "cifar10_py2_batch"))
assert x.shape == (5, 3, 32, 32) and list(y) == cifar10["labels"]
assert (x.reshape(5, 3072) == cifar10["data"]).all()
x, y = load_batch(os.path.join(OUT, "cifar100_py3_batch"), label_key="coarse_labels")
assert list(y) == [11, 15, 4, 14] and (x.reshape(4, 3072) == cifar100[b"data"]).all()
try:
    RestrictedUnpickler(open(os.path.join(OUT, "evil_pickle"), "rb"), encoding="bytes").load()
    raise SystemExit("evil pickle was accepted")
except pickle.UnpicklingError as e:
    print("refused as Keras refuses it:", e)
with np.load(os.path.join(OUT, "mnist_small.npz"), allow_pickle=False) as f:
    assert (f["x_train"] == mnist["x_train"]).all() and list(f["y_test"]) == [7, 2]
# the expected values the Rust test checks
print("cifar10 x[4, row 31, col 31] =", x.transpose(0, 2, 3, 1)[0, 31, 31].tolist() if False else pixels(5, 0).reshape(5, 3, 32, 32).transpose(0, 2, 3, 1)[4, 31, 31].tolist())
print("mnist x_train[2, 27, 27] =", int(mnist["x_train"][2, 27, 27]), "x_test[1, 0, 5] =", int(mnist["x_test"][1, 0, 5]))
print("wrote", sorted(os.listdir(OUT)))

# --- image_dataset_from_directory: a small tree and what Keras 3 makes of it ---------------
import json, shutil
from PIL import Image
TREE = os.path.join(OUT, "tree")
shutil.rmtree(TREE, ignore_errors=True)
rng = np.random.default_rng(3)
sizes = [(6, 9), (5, 5), (7, 4), (10, 3), (4, 8), (9, 9), (3, 7)]
for ci, cls in enumerate(["cats", "dogs", "zebras"]):
    for k in range(4 + ci):
        h, w = sizes[(ci + k) % len(sizes)]
        sub = os.path.join(TREE, cls, "nested") if k == 3 else os.path.join(TREE, cls)
        os.makedirs(sub, exist_ok=True)
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ext = ["png", "PNG", "bmp", "png", "gif", "png"][k % 6]
        if ext == "gif":
            img = img.convert("P", palette=Image.ADAPTIVE, colors=16)
        img.save(os.path.join(sub, f"img{k}.{ext}"))
    open(os.path.join(TREE, cls, "notes.txt"), "w").write("not an image")
os.makedirs(os.path.join(TREE, ".hidden"), exist_ok=True)
Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(os.path.join(TREE, ".hidden", "x.png"))

from keras.utils import image_dataset_from_directory
from keras.src.utils.image_dataset_utils import _load_image_tf as load_image
rel = lambda paths: [os.path.relpath(p, TREE) for p in paths]
golden = {}
for subset in ["training", "validation"]:
    ds = image_dataset_from_directory(TREE, image_size=(4, 6), batch_size=5, seed=42, validation_split=0.25,
                                      subset=subset, label_mode="categorical", verbose=False)
    golden[subset] = rel(ds.file_paths)
    golden["class_names"] = ds.class_names
ds = image_dataset_from_directory(TREE, image_size=(4, 6), shuffle=False, verbose=False)
golden["unshuffled"] = rel(ds.file_paths)
golden["pixels"] = {}
for p in ds.file_paths:
    for mode, kw in [("plain", {}), ("crop", {"crop_to_aspect_ratio": True}), ("pad", {"pad_to_aspect_ratio": True})]:
        img = load_image(p, (4, 6), 3, "bilinear", "channels_last", **kw)
        golden["pixels"].setdefault(mode, {})[os.path.relpath(p, TREE)] = np.asarray(img).reshape(-1).round(4).tolist()
    img = load_image(p, (5, 3), 3, "nearest", "channels_last")
    golden["pixels"].setdefault("nearest", {})[os.path.relpath(p, TREE)] = np.asarray(img).reshape(-1).round(4).tolist()
json.dump(golden, open(os.path.join(OUT, "image_dataset.json"), "w"), indent=0)
print("image_dataset: training", golden["training"], "validation", golden["validation"])
