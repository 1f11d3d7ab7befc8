"""Keras reads kandle's cache and kandle reads Keras': scripts/keras_cache_check.sh runs this.

Builds CIFAR-10, CIFAR-100 and MNIST archives in the published formats (Python 2 pickles,
a deflated npz; synthetic, since this machine cannot download the real ones; CIFAR-10 at its
real size, which Keras' loader requires), serves
them on 127.0.0.1, and:
1. Keras 3 (KERAS_HOME=A) downloads and loads each one, its `get_file` pointed at the local
   server with the synthetic archive's hash (Keras' own loader code otherwise unchanged);
2. kandle reads Keras' cache A with downloads off (KANDLE_OFFLINE=1);
3. kandle downloads each into B (KERAS_HOME=B) through get_file, as its load_data() names them;
4. Keras reads kandle's cache B with its origin unreachable (so nothing is downloaded);
and checks that all four see the same arrays, and that A and B hold the same files.
Usage: /tmp/keras-ref-venv/bin/python scripts/keras_cache_check.py target/release/examples/load_data
"""
import functools, hashlib, http.server, io, json, os, pickle, struct, subprocess, sys, tarfile, tempfile, threading
import numpy as np

SETS = ["cifar10", "cifar100", "mnist"]


class Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(b)])) if len(b) < 256 else (pickle.BINSTRING + struct.pack("<i", len(b))))
        self.write(b)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def py2(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def tar_gz(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def pixels(rng, n):
    # Keras' CIFAR-10 loader needs the real batch size (10,000 images); values of 3 bits keep
    # the archive small.
    return (rng.integers(0, 8, (n, 3072), dtype=np.uint8) * 36)


def make_archives(d):
    rng = np.random.default_rng(7)
    members = []
    for i in range(1, 6):
        members.append((f"cifar-10-batches-py/data_batch_{i}", py2({"batch_label": f"training batch {i} of 5",
            "labels": [int(v) for v in rng.integers(0, 10, 10000)], "data": pixels(rng, 10000),
            "filenames": [f"img_{i}_{k}.png" for k in range(10000)]})))
    members.append(("cifar-10-batches-py/test_batch", py2({"batch_label": "testing batch 1 of 1",
        "labels": [int(v) for v in rng.integers(0, 10, 10000)], "data": pixels(rng, 10000),
        "filenames": [f"test_{k}.png" for k in range(10000)]})))
    members.append(("cifar-10-batches-py/batches.meta", py2({"label_names": ["airplane"] * 10})))
    members.append(("cifar-10-batches-py/readme.html", b"<html></html>"))
    tar_gz(os.path.join(d, "cifar-10-python.tar.gz"), members)
    members = []
    for split, n in [("train", 60), ("test", 20)]:
        fine = rng.integers(0, 100, n)
        members.append((f"cifar-100-python/{split}", py2({"filenames": [f"{split}_{k}.png" for k in range(n)],
            "batch_label": f"{split} batch", "fine_labels": [int(v) for v in fine],
            "coarse_labels": [int(v) // 5 for v in fine], "data": pixels(rng, n)})))
    members.append(("cifar-100-python/meta", py2({"fine_label_names": ["x"] * 100})))
    tar_gz(os.path.join(d, "cifar-100-python.tar.gz"), members)
    np.savez_compressed(os.path.join(d, "mnist.npz"), x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
                        y_train=rng.integers(0, 10, 50).astype(np.uint8), x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
                        y_test=rng.integers(0, 10, 20).astype(np.uint8))
    files = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz", "mnist": "mnist.npz"}
    return {k: (f, hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()) for k, f in files.items()}


def summary(data):
    lines = []
    for split, (x, y) in zip(["train", "test"], data):
        y = np.asarray(y).astype(np.int64)
        counts = np.bincount(y.reshape(-1))
        lines.append(f"{split}: x={list(x.shape)} y={list(y.shape)} x_sum={int(x.astype(np.uint64).sum())} "
                     f"y_sum={int(y.sum())} classes={','.join(str(c) for c in counts)}")
    return lines


def keras_mode(base, files):
    """Runs in a child process with KERAS_HOME set: Keras' load_data with get_file redirected."""
    import keras.src.datasets.cifar10 as c10, keras.src.datasets.cifar100 as c100, keras.src.datasets.mnist as mn
    out = {}
    for name, mod in [("cifar10", c10), ("cifar100", c100), ("mnist", mn)]:
        real = mod.get_file
        fname, sha = files[name]

        def redirected(*a, _real=real, _f=fname, _h=sha, **kw):
            kw["origin"], kw["file_hash"] = f"{base}/{_f}", _h
            return _real(*a, **kw)

        mod.get_file = redirected
        out[name] = summary(mod.load_data())
    print("KERAS_JSON " + json.dumps(out))


def run_kandle(exe, home, name, extra=(), offline=False):
    env = dict(os.environ, KERAS_HOME=home)
    env.pop("KANDLE_DATA_DIR", None)
    env.pop("KANDLE_DATASETS_MIRROR", None)
    if offline:
        env["KANDLE_OFFLINE"] = "1"
    r = subprocess.run([exe, "--dataset", name, *extra], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kandle failed on {name}: {r.stdout}\n{r.stderr}")
    return [l for l in r.stdout.splitlines() if l.startswith(("train:", "test:"))]


def run_keras(home, base, files):
    env = dict(os.environ, KERAS_HOME=home, TF_CPP_MIN_LOG_LEVEL="3")
    r = subprocess.run([sys.executable, __file__, "--keras-child", base, json.dumps(files)], env=env, capture_output=True, text=True)
    line = [l for l in r.stdout.splitlines() if l.startswith("KERAS_JSON ")]
    if r.returncode != 0 or not line:
        sys.exit(f"Keras failed: {r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return json.loads(line[0][len("KERAS_JSON "):])


def files_of(root):
    out = {}
    for d, _, fs in os.walk(os.path.join(root, "datasets")):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def check_table():
    """kandle's origins, names and hashes (src/datasets/*.rs) against the installed Keras' source."""
    import re, keras
    src = os.path.join(os.path.dirname(keras.__file__), "src", "datasets")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "datasets")
    ok = True
    for name, rs in [("cifar10", "cifar10.rs"), ("cifar100", "cifar100.rs"), ("mnist", "mnist.rs"), ("fashion_mnist", "fashion_mnist.rs")]:
        py = open(os.path.join(src, name + ".py")).read()
        rust = open(os.path.join(root, rs)).read()
        consts = dict(re.findall(r'pub const (ORIGIN|SHA256|KERAS_DIRNAME): &str = "([^"]*)";', rust))
        hashes = re.findall(r'"([0-9a-f]{64})"', py)
        keras_vals = {"SHA256": hashes[0] if hashes else None}
        m = re.search(r'origin = "([^"]+)"', py)
        base = re.search(r'(?:origin_folder|base) = \(?\s*"([^"]+)"', py)
        if m:
            keras_vals["ORIGIN"] = m.group(1)
        elif base and name == "mnist":
            keras_vals["ORIGIN"] = base.group(1) + "mnist.npz"
        elif base:
            keras_vals["ORIGIN"] = base.group(1)
        d = re.search(r'dirname = "([^"]+)"', py)
        keras_vals["KERAS_DIRNAME"] = d.group(1) if d else None
        for k, v in keras_vals.items():
            mine = consts.get(k)
            same = mine == v
            ok &= same
            print(f"0. {name} {k}: Keras {v!r}, kandle {mine!r}{'' if same else '   <-- differs'}")
    return ok


def main():
    if sys.argv[1] == "--keras-child":
        return keras_mode(sys.argv[2], json.loads(sys.argv[3]))
    table_ok = check_table()
    exe = os.path.abspath(sys.argv[1])
    work = tempfile.mkdtemp(prefix="kandle-cache-check-")
    serve_dir = os.path.join(work, "serve")
    os.makedirs(serve_dir)
    files = make_archives(serve_dir)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=serve_dir)
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    a, b = os.path.join(work, "A"), os.path.join(work, "B")
    ok = table_ok
    keras_a = run_keras(a, base, files)
    print("1. Keras 3 downloaded into", a)
    for name in SETS:
        kandle_a = run_kandle(exe, a, name, offline=True)
        fname, sha = files[name]
        kandle_b = run_kandle(exe, b, name, extra=("--origin", f"{base}/{fname}", "--file-hash", sha))
        same = kandle_a == keras_a[name] == kandle_b
        ok &= same
        print(f"2-3. {name}: Keras {keras_a[name]}\n       kandle on Keras' cache {'same' if kandle_a == keras_a[name] else kandle_a}"
              f", kandle's own download {'same' if kandle_b == keras_a[name] else kandle_b}")
    keras_b = run_keras(b, "http://127.0.0.1:9", files)
    for name in SETS:
        same = keras_b[name] == keras_a[name]
        ok &= same
        print(f"4. Keras on kandle's cache, {name}: {'same' if same else keras_b[name]}")
    fa, fb = files_of(a), files_of(b)
    print("5. files in A (Keras) and B (kandle):")
    for f in sorted(set(fa) | set(fb)):
        mark = "" if fa.get(f) == fb.get(f) else "   <-- differs"
        ok &= not mark
        print(f"   {f}: {fa.get(f)} / {fb.get(f)}{mark}")
    print("keras_cache_check=" + ("ok" if ok else "FAILED"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
