#!/usr/bin/env bash
# kandle's keras.applications networks predict as Keras on Keras-written weight files (issue 33):
# real Keras 3.15.1 writes ResNet50 / MobileNetV2 / EfficientNetB0 files of random weights
# (with and without the top, 224 and 160 inputs) and its predictions on real CIFAR-10 images;
# kandle loads each (by path, and one through weights=imagenet from a file:// mirror) and
# compares. See scripts/applications_check.py. Run by .ci/run; prints applications_check=ok.
#
#   bash scripts/applications_check.sh [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
keep=""
if [ "${1:-}" = "--keep" ]; then keep="$2"; fi
PY=$(bash scripts/python_venv.sh)
work=${keep:-$(mktemp -d)}
[ -z "$keep" ] && trap 'rm -rf "$work"' EXIT
"$PY" scripts/applications_check.py "$work" --data-dir ../shared/data/cifar10
KANDLE_APPLICATIONS_CHECK_DIR="$work" cargo test --release --test applications -- --ignored --nocapture \
  keras_written_weights_predict_as_keras
echo "applications_check=ok"
