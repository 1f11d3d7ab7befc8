"""kandle's ONNX files in ONNX's checker and ONNX Runtime (issue 34).

Run by scripts/onnx_check.sh with the venv's python, after kandle wrote WORK_DIR (its test
`write_files_for_onnx_runtime_when_asked`):

    python scripts/onnx_check.py WORK_DIR

For each case of WORK_DIR/cases.json: `onnx.checker.check_model(path, full_check=True)` (shape
inference included) accepts the file; ONNX Runtime runs it on the 7 test images at once and on
the first alone (the same file: the batch dimension is free); every output equals kandle's
within 1e-5 of its largest value; and the top-1 classes of kandle, ONNX Runtime and tract (the
Rust runtime, run by the test) are the same.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

work = sys.argv[1]
cases = json.load(open(os.path.join(work, "cases.json")))
worst = 0.0
for case in cases:
    name = case["name"]
    path = os.path.join(work, name + ".onnx")
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.load(os.path.join(work, name + "_x.npy"))
    feed = session.get_inputs()[0]
    assert feed.shape[0] == "batch", (name, feed.shape)
    line = [name, f"opset={model.opset_import[0].version}", f"nodes={len(model.graph.node)}"]
    for batch in (7, 1):
        outs = session.run(None, {feed.name: x[:batch]})
        assert len(outs) == case["outputs"], (name, len(outs))
        for i, got in enumerate(outs):
            want = np.load(os.path.join(work, f"{name}_kandle_{i}.npy"))[:batch]
            assert got.shape == want.shape, (name, i, got.shape, want.shape)
            rel = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
            worst = max(worst, rel)
            assert rel < 1e-5, f"{name} output {i} batch {batch}: ONNX Runtime differs by {rel:.2e} of the largest value"
            if want.ndim == 2 and batch == 7:
                tract = np.load(os.path.join(work, f"{name}_tract_{i}.npy"))
                k, o, t = want.argmax(1), got.argmax(1), tract.argmax(1)
                assert (k == o).all() and (k == t).all(), f"{name}: top-1 kandle {k} onnxruntime {o} tract {t}"
                line.append(f"top1={k.tolist()}")
            line.append(f"b{batch}_out{i}_rel={rel:.1e}")
    print(" ".join(line))
print(f"onnx.checker and onnxruntime {ort.__version__}: {len(cases)} files, worst difference {worst:.2e} of the largest output")
