"""TensorBoard's own readers on a kandle run (called by scripts/tensorboard_check.sh).

    python scripts/tensorboard_check.py LOGDIR HISTORY_CSV [--server URL]

Reads LOGDIR/train and LOGDIR/validation with TensorBoard's EventAccumulator (the classic one,
where scalars written as tensor summaries show up as tensors and TensorFlow 1 simple values as
scalars: both are read) and with the plugin EventAccumulator that TensorBoard's server uses,
and checks that every epoch_<name> value equals the History's (the CSV kandle's examples write
with --report), at f32 precision, one step per epoch. With --server, asks the running
TensorBoard's scalars plugin for the same series over HTTP. Prints tensorboard_check=ok.
"""
import csv
import json
import sys
import urllib.parse
import urllib.request

from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.util import tensor_util


def scalars_classic(path):
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0,
                                                                  event_accumulator.SCALARS: 0})
    acc.Reload()
    tags = acc.Tags()
    out = {}
    for tag in tags["scalars"]:
        out[tag] = {e.step: e.value for e in acc.Scalars(tag)}
    for tag in tags["tensors"]:
        events = acc.Tensors(tag)
        if all(tensor_util.make_ndarray(e.tensor_proto).shape == () for e in events):
            out[tag] = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events}
    return out, tags


def scalars_plugin(path):
    acc = plugin_event_accumulator.EventAccumulator(path, size_guidance={plugin_event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.PluginTagToContent("scalars"):
        out[tag] = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
    histograms = list(acc.PluginTagToContent("histograms")) if "histograms" in acc.ActivePlugins() else []
    return out, histograms


def main():
    logdir, history_csv = sys.argv[1], sys.argv[2]
    server = sys.argv[sys.argv.index("--server") + 1] if "--server" in sys.argv else None
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 3, f"expected at least 3 epochs in {history_csv}, found {len(rows)}"
    keys = [k for k in rows[0] if k != "epoch"]
    checked = 0
    for run in ("train", "validation"):
        classic, tags = scalars_classic(f"{logdir}/{run}")
        plugin, histograms = scalars_plugin(f"{logdir}/{run}")
        for key in keys:
            if key.startswith("val_") != (run == "validation"):
                continue
            tag = "epoch_" + (key[4:] if key.startswith("val_") else key)
            want = {int(r["epoch"]): float(r[key]) for r in rows}
            for name, series in (("EventAccumulator", classic), ("plugin EventAccumulator", plugin)):
                got = series.get(tag)
                assert got is not None, f"{run}/{tag} missing in {name}: {sorted(series)}"
                assert sorted(got) == sorted(want), f"{run}/{tag} steps {sorted(got)} != epochs {sorted(want)}"
                for step, v in want.items():
                    assert abs(got[step] - v) <= 1e-6 * max(1.0, abs(v)), f"{run}/{tag}@{step}: {got[step]} != {v}"
                    checked += 1
            if server:
                q = urllib.parse.urlencode({"run": run, "tag": tag})
                data = json.load(urllib.request.urlopen(f"{server}/data/plugin/scalars/scalars?{q}", timeout=30))
                got = {step: value for _wall, step, value in data}
                assert sorted(got) == sorted(want), f"server {run}/{tag}: steps {sorted(got)}"
                for step, v in want.items():
                    assert abs(got[step] - v) <= 1e-6 * max(1.0, abs(v)), f"server {run}/{tag}@{step}"
                    checked += 1
        print(f"{run}: scalars {sorted(plugin)}; {len(histograms)} histogram series")
        if run == "train":
            assert "epoch_learning_rate" in plugin, "epoch_learning_rate missing"
    print(f"values checked against the History: {checked}")
    print("tensorboard_check=ok")


if __name__ == "__main__":
    main()
