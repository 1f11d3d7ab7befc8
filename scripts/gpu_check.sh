#!/usr/bin/env bash
# The GPU check: the same training steps on the GPU and on the CPU agree, a model saved on the
# GPU loads on the CPU, and the benchmark runs on the GPU and prints its key=value lines.
#
#   scripts/gpu_check.sh --build      # here (no GPU needed): builds the binaries with the cuda
#                                     # feature into gpu-check/ (scripts/install_cuda_toolchain.sh
#                                     # provides nvcc and the link stubs)
#   scripts/gpu_check.sh              # on a machine with an NVIDIA GPU and CUDA 13: runs them
#   scripts/gpu_check.sh --cpu-only   # here and in CI: the CPU parts (the GPU's code path run on
#                                     # the CPU against the CPU kernels; the benchmark's lines)
#
# A GPU machine needs no Rust: carry gpu-check/ there with the repository. It finishes in well
# under 5 minutes. Lines starting `gpu_check:` say what ran; the figures are key=value lines.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-check
mode="${1:-run}"

case "$mode" in
--build)
  mkdir -p target
  bash scripts/install_cuda_toolchain.sh --env-file target/cuda-env.sh
  # shellcheck disable=SC1091
  source target/cuda-env.sh
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
  cargo build --release --features cuda --example benchmark
  test_bin=$(cargo test --release --features cuda --test devices --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "devices" and m.get("executable"):
        print(m["executable"])')
  rm -rf "$out" && mkdir -p "$out"
  cp "$CARGO_TARGET_DIR/release/examples/benchmark" "$out/benchmark"
  cp "$test_bin" "$out/devices"
  strip "$out/benchmark" "$out/devices"
  # Compressed to travel (about 13 MB each instead of 54: mostly candle's CUDA kernels).
  gzip -9 "$out/benchmark" "$out/devices"
  ls -la "$out"
  echo "gpu_check: built $out/benchmark.gz and $out/devices.gz (cuda feature)"
  ;;
--cpu-only)
  echo "gpu_check: the GPU's code path on the CPU (KANDLE_GENERIC_OPS) against the CPU kernels"
  cargo test --release --test devices -- --nocapture
  echo "gpu_check: the benchmark's lines on the CPU (a short run)"
  lines=$(cargo run --release --example benchmark -- --device cpu --steps 2 --resnet-steps 1)
  echo "$lines"
  for key in device train_images_per_sec train_images_per_sec_bf16 bf16_amx train_images_per_sec_activation_layers train_images_per_sec_batchnorm \
             infer_images_per_sec augment_shift_flip_images_per_sec augment_full_images_per_sec \
             resnet20_train_images_per_sec; do
    # A here-string, not `echo | grep -q`: under pipefail, grep -q quitting early can make echo
    # fail with SIGPIPE, and the check fail although the line is there.
    grep -q "^$key=" <<<"$lines" || { echo "gpu_check: the benchmark printed no $key= line" >&2; exit 1; }
  done
  echo "gpu_check: cpu-only parts passed"
  ;;
run)
  bin="$(mktemp -d)"
  for b in devices benchmark; do
    if [ -f "$out/$b.gz" ]; then
      gunzip -c "$out/$b.gz" > "$bin/$b"
    elif [ -f "$out/$b" ]; then
      cp "$out/$b" "$bin/$b"
    else
      echo "gpu_check: no $out/$b(.gz): run scripts/gpu_check.sh --build on a machine with Rust first" >&2
      exit 1
    fi
    chmod +x "$bin/$b"
  done
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  # The CUDA libraries the binaries link by soname (libcublas.so.13, libcurand.so.10,
  # libnvrtc.so.13 come with the CUDA 13 toolkit or PyTorch's nvidia wheels; libcuda.so.1 with
  # the driver).
  extra=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && extra="$extra:$d"
  done
  if command -v python3 >/dev/null 2>&1; then
    for d in $(python3 -c 'import glob, site, os
for s in site.getsitepackages():
    for p in glob.glob(os.path.join(s, "nvidia", "*", "lib")): print(p)' 2>/dev/null); do
      extra="$extra:$d"
    done
  fi
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
  if ldd "$bin/devices" | grep "not found"; then
    echo "gpu_check: CUDA libraries not found (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)" >&2
    exit 1
  fi
  failed=0
  echo "gpu_check: training steps on the GPU against the CPU; a model saved on the GPU loaded on the CPU"
  timeout 240 "$bin/devices" --nocapture --test-threads=1 || { echo "gpu_check: FAILED: devices tests"; failed=1; }
  echo "gpu_check: the benchmark on the GPU"
  timeout 180 "$bin/benchmark" --device cuda --steps 20 --resnet-steps 10 || { echo "gpu_check: FAILED: GPU benchmark"; failed=1; }
  echo "gpu_check: the benchmark on this machine's CPU, for comparison"
  timeout 120 "$bin/benchmark" --device cpu --steps 5 --resnet-steps 3 || { echo "gpu_check: FAILED: CPU benchmark"; failed=1; }
  rm -rf "$bin"
  if [ "$failed" = 0 ]; then echo "gpu_check: passed"; else echo "gpu_check: failed"; exit 1; fi
  ;;
*)
  echo "usage: scripts/gpu_check.sh [--build | --cpu-only]" >&2
  exit 2
  ;;
esac
