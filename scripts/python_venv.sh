#!/usr/bin/env bash
# The one Python venv of the checks against real Keras and ONNX Runtime: Keras 3.15.1 on
# TensorFlow 2.21 CPU, onnx 1.23.2 and onnxruntime 1.32.0 from PyPI, in target/py-venv (about
# 700 MB, a few minutes the first time). Prints the venv's python. $KANDLE_PYTHON, when set, is used instead (a venv that has
# them, e.g. /tmp/keras-ref-venv of ../shared/bench/setup_keras.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KANDLE_PYTHON:-}" ]; then
  echo "$KANDLE_PYTHON"
  exit 0
fi
venv=target/py-venv
if ! "$venv/bin/python" -c "import keras, tensorflow, PIL, onnx, onnxruntime" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "tensorflow-cpu==2.21.0" "keras==3.15.1" "pillow" "onnx==1.23.2" "onnxruntime==1.32.0" >&2
fi
echo "$venv/bin/python"
