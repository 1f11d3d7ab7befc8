#!/usr/bin/env bash
# Checks that this checkout trains exactly as another revision does: seeded 10-step runs of the
# tutorial CNN (`fit` on arrays), of the augmented tutorial (`fit_generator`, 4 workers) and of
# ResNet-20 (`fit_generator`) save weights and optimizer state bit-identical to those the other
# revision saves on this machine (the kernels' sums depend on the CPU's SIMD level, so both sides
# run here). For a change that must not move a single bit, such as a refactoring.
#
#   bash scripts/same_numerics.sh BASE_REV [DATA_DIR]
#
# BASE_REV is built in a git worktree under target/numerics/ (kept between runs), with its own
# target folder; DATA_DIR is the CIFAR-10 data (default ../shared/data/cifar10). Prints one
# `numerics <run>: identical (<n> tensors)` line per run and exits 1 at the first difference.
set -euo pipefail
base=${1:?usage: bash scripts/same_numerics.sh BASE_REV [DATA_DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
data=${2:-$root/../shared/data/cifar10}
work=$root/target/numerics
mkdir -p "$work"
cd "$root"
rev=$(git rev-parse --verify "$base^{commit}")
if [ ! -d "$work/base" ]; then
  git worktree add --detach "$work/base" "$rev" >/dev/null
else
  git -C "$work/base" checkout --detach -q "$rev"
fi
examples=(--example cifar10_cnn --example cifar10_augmented --example cifar10_resnet)
echo "building this checkout and $base ($rev)"
cargo build --release -q "${examples[@]}"
(cd "$work/base" && CARGO_TARGET_DIR="$work/base-target" cargo build --release -q "${examples[@]}")

# name, example, flags: 10 steps each (2560 samples at batch 256, 1280 at batch 128).
runs=(
  "cnn cifar10_cnn --limit 2560 --batch-size 256"
  "augmented cifar10_augmented --limit 2560 --batch-size 256 --workers 4"
  "resnet20 cifar10_resnet --limit 1280 --batch-size 128"
)
for run in "${runs[@]}"; do
  read -r name example flags <<<"$run"
  for side in base this; do
    bin=$root/target/release/examples/$example
    [ "$side" = base ] && bin=$work/base-target/release/examples/$example
    # shellcheck disable=SC2086
    "$bin" --epochs 1 --seed 0 --verbose 0 --data-dir "$data" $flags --save "$work/$name-$side.kandle" >"$work/$name-$side.log"
  done
  python3 - "$work/$name-base.kandle" "$work/$name-this.kandle" "$name" <<'PY'
import json, struct, sys

def tensors(path):
    """The tensors of a safetensors file: name -> (dtype, shape, bytes)."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}

a, b, name = tensors(sys.argv[1]), tensors(sys.argv[2]), sys.argv[3]
if a.keys() != b.keys():
    sys.exit(f"numerics {name}: different tensors: {sorted(a.keys() ^ b.keys())}")
for k in sorted(a):
    if a[k] != b[k]:
        sys.exit(f"numerics {name}: {k} differs")
print(f"numerics {name}: identical ({len(a)} tensors)")
PY
done
