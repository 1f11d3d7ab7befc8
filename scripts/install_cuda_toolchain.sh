#!/usr/bin/env bash
# Installs what `cargo build --features cuda,nccl` needs on a machine without a GPU or a CUDA
# install: nvcc and the CUDA headers from NVIDIA's Python wheels (pinned to CUDA 13.0, the
# toolkit of the GPU machine this project is checked on: PTX or cubins from a newer nvcc may
# not load on its driver 580), and stub shared libraries to link against. candle links
# cudarc's libraries dynamically (`libcuda`, `libcublas`, `libcublasLt`, `libcurand`,
# `libnvrtc`, `libnccl`); the real ones come with the driver and the toolkit on the GPU
# machine and are found there by their sonames. The stubs define the symbols listed in
# scripts/cuda_stub_symbols.txt (the ones kandle's binaries reference) as empty functions.
#
# Usage: bash scripts/install_cuda_toolchain.sh --env-file F && source F
#        bash scripts/install_cuda_toolchain.sh               # prints the exports instead
# Cache: $KANDLE_CUDA_CACHE (default ~/.cache/kandle-cuda); a second run only prints.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KANDLE_CUDA_CACHE:-$HOME/.cache/kandle-cuda}"
env_file=""
if [ "${1:-}" = "--env-file" ]; then env_file="$2"; fi
root="$cache/cuda-13.0"
wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)
if [ ! -x "$root/nvidia/cu13/bin/nvcc" ]; then
  mkdir -p "$cache/wheels" "$root.partial"
  python3 -m pip download --quiet --no-deps --dest "$cache/wheels" "${wheels[@]}" >&2
  for w in "$cache"/wheels/nvidia_cuda_nvcc-13.0.88-*.whl "$cache"/wheels/nvidia_cuda_crt-13.0.88-*.whl \
           "$cache"/wheels/nvidia_nvvm-13.0.88-*.whl "$cache"/wheels/nvidia_cuda_runtime-13.0.96-*.whl \
           "$cache"/wheels/nvidia_cuda_cccl-13.0.85-*.whl; do
    python3 -m zipfile -e "$w" "$root.partial" >&2
  done
  chmod +x "$root.partial"/nvidia/cu13/bin/* "$root.partial"/nvidia/cu13/nvvm/bin/* 2>/dev/null || true
  # candle-kernels links libcudart by its unversioned name.
  ln -sf libcudart.so.13 "$root.partial/nvidia/cu13/lib/libcudart.so"
  rm -rf "$root" && mv "$root.partial" "$root"
fi
cuda="$root/nvidia/cu13"
# Stub libraries, rebuilt when the symbol list changes.
stubs="$cuda/lib/stubs"
stamp="$(sha256sum "$here/cuda_stub_symbols.txt" | cut -c1-16)"
if [ "$(cat "$stubs/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$stubs" && mkdir -p "$stubs"
  # lib:soname pairs, as the real libraries of CUDA 13 and NCCL 2 name themselves.
  for pair in cuda:libcuda.so.1 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13 curand:libcurand.so.10 \
              nvrtc:libnvrtc.so.13 nccl:libnccl.so.2; do
    lib="${pair%%:*}"; soname="${pair#*:}"
    awk -v l="$lib" '$1 == l { print "void " $2 "(void) {}" }' "$here/cuda_stub_symbols.txt" > "$stubs/$lib.c"
    gcc -shared -fPIC -o "$stubs/$soname" -Wl,-soname,"$soname" "$stubs/$lib.c"
    ln -sf "$soname" "$stubs/lib$lib.so"
    rm "$stubs/$lib.c"
  done
  echo "$stamp" > "$stubs/.stamp"
fi
exports="export CUDA_ROOT='$cuda' CUDA_HOME='$cuda' CUDA_PATH='$cuda' CUDA_COMPUTE_CAP=90 PATH='$cuda/bin':\"\$PATH\""
if [ -n "$env_file" ]; then echo "$exports" > "$env_file"; else echo "$exports"; fi
echo "CUDA 13.0 toolchain ready in $cuda ($("$cuda/bin/nvcc" --version | tail -2 | head -1))" >&2
