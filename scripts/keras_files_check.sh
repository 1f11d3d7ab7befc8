#!/usr/bin/env bash
# Keras and kandle exchange models (issue 32), with real Keras 3.15.1 on real CIFAR-10 images:
# Keras' .keras and .weights.h5 files load in kandle and predict the same; kandle's .keras files
# load in Keras and predict the same; training resumed across the two ends where each would.
# See scripts/keras_files_check.py. Run by .ci/run; prints keras_files_check=ok.
#
#   bash scripts/keras_files_check.sh [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
keep=""
if [ "${1:-}" = "--keep" ]; then keep="$2"; fi
PY=$(bash scripts/python_venv.sh)
work=${keep:-$(mktemp -d)}
[ -z "$keep" ] && trap 'rm -rf "$work"' EXIT
cargo build --release --example keras_roundtrip
data=../shared/data/cifar10
KANDLE_KERAS_FILES_OUT="$work/from_kandle" cargo test --release --test keras_files write_files_for_keras_when_asked
"$PY" scripts/keras_files_check.py "$work" target/release/examples/keras_roundtrip --data-dir "$data" \
  --every-layer "$work/from_kandle"
