#!/usr/bin/env bash
# kandle's ONNX files in ONNX's own tools (issue 34): kandle exports the tutorial CNN, the MNIST
# CNN, ResNet-20, a BatchNormalization / DepthwiseConv2D / SeparableConv2D / Concatenate
# network (also with external weights at opset 21), a model of every layer class and the
# keras.applications networks, with its own and tract's predictions on real CIFAR-10 / MNIST
# test images; then onnx.checker (full check) accepts each file and ONNX Runtime's outputs at
# batch 7 and 1 equal kandle's within 1e-5 of the largest output, with the same top-1 classes
# in kandle, ONNX Runtime and tract. See scripts/onnx_check.py. Run by .ci/run; prints
# onnx_check=ok.
#
#   bash scripts/onnx_check.sh [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
keep=""
if [ "${1:-}" = "--keep" ]; then keep="$2"; fi
PY=$(bash scripts/python_venv.sh)
work=${keep:-$(mktemp -d)}
[ -z "$keep" ] && trap 'rm -rf "$work"' EXIT
KANDLE_ONNX_OUT="$work" cargo test --release --test onnx_export -- --nocapture write_files_for_onnx_runtime_when_asked
"$PY" scripts/onnx_check.py "$work"
echo "onnx_check=ok"
