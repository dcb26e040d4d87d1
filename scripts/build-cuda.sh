#!/usr/bin/env bash
# Builds `adept` with candle's CUDA backend (`--features cuda`) from the package registries alone:
# no system CUDA toolkit, no GPU and no driver are needed at build time.
#
#  1. A Python virtual environment ($ADEPT_CUDA_TOOLKIT, default target/cuda/toolkit) gets NVIDIA's
#     CUDA 13.4 wheels from PyPI: nvcc (pinned 13.4.92, because cudarc 0.19.10 knows CUDA only up to
#     13.4) with its parts crt, runtime (cudart) and nvvm pinned to the same 13.4.x (left unpinned
#     they come as 13.5, whose PTX the 13.4 ptxas rejects), cccl (`<nv/target>`), and the libraries
#     cudarc links: nvrtc, cublas (+cublasLt), curand. They all unpack into one root,
#     site-packages/nvidia/cu13 (bin/nvcc, include/, lib/).
#  2. candle-core 0.11.1 selects cudarc's `dynamic-linking` feature (cudarc refuses `dynamic-loading`
#     beside it), so the final link needs libcuda, libnvrtc, libcurand, libcublas, libcublasLt and
#     libcudart by their unversioned names. The wheels ship only versioned names (libcublas.so.13),
#     so lib/ gets unversioned symlinks; the driver's libcuda ships with the NVIDIA driver, never in
#     a wheel, so lib/stubs/libcuda.so is a link-time stub compiled here from the list of driver
#     functions cudarc declares. Its soname is libcuda.so.1: at run time the real driver's
#     libcuda.so.1 is loaded instead. (On a machine without a driver, running the binary with
#     LD_LIBRARY_PATH=<toolkit root>/lib/stubs loads the stub, whose every call returns
#     CUDA_ERROR_NO_DEVICE: that is how the no-device error path is tested without a GPU.)
#  3. `cargo build --release -p adept-cli --features cuda` with CUDA_ROOT/CUDA_PATH at that root,
#     nvcc on PATH, CUDA_COMPUTE_CAP (default 90 = H100/H200; there is no nvidia-smi at build time),
#     CARGO_TARGET_DIR=target/cuda (the CPU build's target/ is untouched) and an rpath to the
#     toolkit's lib/, so the binary finds cudart/cublas/curand/nvrtc without LD_LIBRARY_PATH.
#
# Environment: CUDA_COMPUTE_CAP (default 90, or what nvidia-smi reports if present),
# ADEPT_CUDA_TOOLKIT (venv folder), CARGO_TARGET_DIR (default target/cuda), ADEPT_CUDA_PROFILE
# (release|dev, default release), ADEPT_CUDA_SKIP_CARGO=1 (only the toolkit). Prints the binary's path last. Needs python3 (with venv), a C
# compiler (cc) and cargo. Downloads ~1.0 GB of wheels (not cached: pip --no-cache-dir); the
# toolkit takes ~1.2 GB, the release target ~5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
started=$(date +%s)
step() { echo "== build-cuda: $* ($(( $(date +%s) - started )) s)"; }

CUDA_VERSION_PIN=13.4
TOOLKIT="${ADEPT_CUDA_TOOLKIT:-$ROOT/target/cuda/toolkit}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
PROFILE="${ADEPT_CUDA_PROFILE:-release}"
if [ -z "${CUDA_COMPUTE_CAP:-}" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
  [ -n "$cap" ] && CUDA_COMPUTE_CAP=$cap
fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

step "CUDA $CUDA_VERSION_PIN wheels from PyPI into $TOOLKIT"
if [ ! -x "$TOOLKIT/bin/python" ]; then
  python3 -m venv "$TOOLKIT" || {
    echo "error: 'python3 -m venv $TOOLKIT' failed; install python3-venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
"$TOOLKIT/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  "nvidia-cuda-nvcc==13.4.92" "nvidia-cuda-crt==$CUDA_VERSION_PIN.*" \
  "nvidia-cuda-runtime==$CUDA_VERSION_PIN.*" "nvidia-nvvm==$CUDA_VERSION_PIN.*" \
  "nvidia-cuda-nvrtc==$CUDA_VERSION_PIN.*" "nvidia-cublas==$CUDA_VERSION_PIN.*" \
  "nvidia-curand==10.4.*" "nvidia-cuda-cccl==13.*"
CU=$("$TOOLKIT/bin/python" -c 'import os, nvidia; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$CU/bin/nvcc" ] || { echo "error: no nvcc at $CU/bin/nvcc after installing nvidia-cuda-nvcc" >&2; exit 1; }

step "unversioned link names and the libcuda link stub in $CU/lib"
for lib in cudart cublas cublasLt curand nvrtc; do
  versioned=$(cd "$CU/lib" && ls "lib$lib.so."* 2>/dev/null | grep -E "^lib$lib\.so\.[0-9]+$" | head -1 || true)
  [ -n "$versioned" ] || { echo "error: no lib$lib.so.<major> in $CU/lib (which wheel lacks it?)" >&2; exit 1; }
  ln -sfn "$versioned" "$CU/lib/lib$lib.so"
done
mkdir -p "$CU/lib/stubs"
cargo fetch --quiet
CUDARC_SRC=$(cargo metadata --format-version 1 --features adept-cli/cuda 2>/dev/null |
  "$TOOLKIT/bin/python" -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
"$TOOLKIT/bin/python" - "$CUDARC_SRC/src/driver/sys/mod.rs" "$CU/lib/stubs/cuda_stub.c" <<'EOF'
# Every driver function cudarc's bindings declare becomes `int f(void) { return 100; }`
# (CUDA_ERROR_NO_DEVICE); cuGetErrorString/Name answer with a message naming the stub.
import re, sys
names = sorted(set(re.findall(r"^pub unsafe fn (cu\w+)\(", open(sys.argv[1]).read(), re.M)))
msg = '"no CUDA driver: this is adept\'s link-time stub libcuda (scripts/build-cuda.sh); install the NVIDIA driver"'
out = ["/* Generated by scripts/build-cuda.sh: link-time stub of the CUDA driver API (libcuda.so.1). */"]
for n in names:
    if n in ("cuGetErrorString", "cuGetErrorName"):
        out.append(f"int {n}(int e, const char **s) {{ (void)e; if (s) *s = {msg}; return 0; }}")
    else:
        out.append(f"int {n}(void) {{ return 100; }}")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print(f"stub: {len(names)} driver functions")
EOF
cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$CU/lib/stubs/cuda_stub.c"
ln -sfn libcuda.so "$CU/lib/stubs/libcuda.so.1"

if [ -n "${ADEPT_CUDA_SKIP_CARGO:-}" ]; then
  step "toolkit ready at $CU (ADEPT_CUDA_SKIP_CARGO: no cargo build)"
  exit 0
fi
step "cargo build --$PROFILE -p adept-cli --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target $CARGO_TARGET_DIR)"
export CUDA_ROOT="$CU" CUDA_PATH="$CU" PATH="$CU/bin:$PATH"
# candle-kernels compiles its 16 quantized-matmul/MoE objects with cudaforge, which uses half the
# cores by default (one on a 2-core machine, the slowest part of the build): use them all.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-Wl,-rpath,$CU/lib"
profile_flag=(--release); profile_dir=release
[ "$PROFILE" = dev ] && { profile_flag=(); profile_dir=debug; }
cargo build "${profile_flag[@]}" -p adept-cli --features cuda
step "done"
echo "$CARGO_TARGET_DIR/$profile_dir/adept"
