#!/usr/bin/env bash
# Keras 3 reads what kandle downloads into its cache, and kandle reads what Keras downloads
# (scripts/keras_cache_check.py says how). Needs the Keras venv of ../shared/bench/setup_keras.sh;
# not part of CI (no Keras there), run before a submission that touches the data sets.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${KERAS_PYTHON:-/tmp/keras-ref-venv/bin/python}
[ -x "$PY" ] || { echo "no Keras venv at $PY: run bash ../shared/bench/setup_keras.sh" >&2; exit 1; }
cargo build --release --example load_data
"$PY" scripts/keras_cache_check.py target/release/examples/load_data
