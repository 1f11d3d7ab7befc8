#!/usr/bin/env bash
# TensorBoard reads a kandle run: trains the MNIST example for 3 epochs with --tensorboard and
# --report, then (scripts/tensorboard_check.py) TensorBoard's own EventAccumulators read the
# event files and every epoch value must equal the History's; a TensorBoard server on
# 127.0.0.1 must serve the same series from its scalars plugin. With --screenshot FILE, headless
# Chromium (Debian's `chromium`) also takes the scalars page to FILE, to be looked at.
#
#   bash scripts/tensorboard_check.sh [--screenshot tb.png] [--keep DIR]
#
# TensorBoard comes from PyPI (tensorboard==2.21.0) in a venv under target/ (or $TB_PYTHON).
# Run by .ci/run (without the screenshot). Prints tensorboard_check=ok.
set -euo pipefail
cd "$(dirname "$0")/.."
shot=""
keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --screenshot) shot="$2"; shift 2 ;;
    --keep) keep="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

PY=${TB_PYTHON:-}
if [ -z "$PY" ]; then
  venv=target/tb-venv
  if ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "tensorboard==2.21.0"
  fi
  PY=$venv/bin/python
fi

work=${keep:-$(mktemp -d)}
mkdir -p "$work"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -z "$keep" ] && rm -rf "$work"
}
trap cleanup EXIT

data_args=()
[ -d ../shared/data/mnist ] && data_args=(--data-dir ../shared/data/mnist)
cargo build --release --example mnist_cnn
target/release/examples/mnist_cnn --epochs 3 --limit 3000 --verbose 2 "${data_args[@]}" \
  --tensorboard "$work/logs" --report "$work/report"

# A free port for the server.
port=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PY" -m tensorboard.main --logdir "$work/logs" --host 127.0.0.1 --port "$port" > "$work/server.log" 2>&1 &
server_pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 60); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('$url/data/runs', timeout=2)" 2>/dev/null; then break; fi
  sleep 1
done
"$PY" scripts/tensorboard_check.py "$work/logs" "$work/report/history.csv" --server "$url"

if [ -n "$shot" ]; then
  chrome=$(command -v chromium || command -v chromium-browser || true)
  [ -n "$chrome" ] || { echo "no chromium: apt-get install chromium" >&2; exit 1; }
  profile=$(mktemp -d)
  "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1400,1000 --virtual-time-budget=15000 \
    --screenshot="$shot" "$url/?darkMode=false#scalars&_smoothingWeight=0&_ignoreYOutliers=false&tagFilter=epoch_loss" \
    2>/dev/null
  rm -rf "$profile"
  echo "screenshot of $url's scalars page: $shot"
fi
