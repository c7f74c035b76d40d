#!/usr/bin/env bash
# Builds the CUDA worker (`grin` with the `cuda` feature) on a machine with no
# GPU and no CUDA toolkit from the OS: nvcc, headers and libraries come from
# NVIDIA's PyPI wheels, and the driver library (libcuda, present only on GPU
# machines) is replaced at link time by a stub that defines every driver
# symbol cudarc declares. The binary runs where the real driver and the CUDA
# 13 libraries are found (point LD_LIBRARY_PATH at them).
#
#   bash scripts/cuda_build.sh            # -> $GRIN_CUDA_TARGET/release/grin
#
# Environment:
#   GRIN_CUDA_TOOLKIT  where the wheels are installed (default ~/.cache/grin-cuda/toolkit)
#   GRIN_CUDA_TARGET   cargo target directory (default ~/.cache/grin-cuda/target;
#                      kept outside the clone because compiling candle's
#                      kernels takes ~8 minutes on 2 cores)
#   CUDA_COMPUTE_CAP   GPU architecture to compile for (default 90 = Hopper)
# Fails (never skips) when a step cannot be done.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${HOME}/.cache/grin-cuda"
toolkit="${GRIN_CUDA_TOOLKIT:-$cache/toolkit}"
target="${GRIN_CUDA_TARGET:-$cache/target}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

if [ ! -x "$toolkit/venv/bin/python" ]; then
  python3 -m venv "$toolkit/venv"
fi
# Pinned to CUDA 13 (what cudarc 0.19 and candle 0.11 build against).
"$toolkit/venv/bin/python" -m pip install -q --disable-pip-version-check \
  "nvidia-cuda-nvcc==13.*" "nvidia-cuda-runtime==13.*" "nvidia-cuda-crt==13.*" \
  "nvidia-cuda-cccl==13.*" "nvidia-cublas==13.*" "nvidia-cuda-nvrtc==13.*" "nvidia-curand"
cu=$(ls -d "$toolkit"/venv/lib/python3*/site-packages/nvidia/cu13 | head -n1)
test -x "$cu/bin/nvcc" || { echo "FAIL: no nvcc in $cu" >&2; exit 1; }

# Unversioned library names for the linker, and the libcuda stub.
link="$toolkit/link"
mkdir -p "$link"
for lib in cublas cublasLt cudart nvrtc curand; do
  real=$(ls "$cu"/lib/lib$lib.so.* | head -n1)
  ln -sf "$real" "$link/lib$lib.so"
done
cudarc=$(cargo metadata --format-version 1 --locked --features grin-cli/cuda \
  | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
driver_sys="$(dirname "$cudarc")/src/driver/sys/mod.rs"
test -f "$driver_sys" || { echo "FAIL: cudarc driver bindings not found at $driver_sys" >&2; exit 1; }
# Every driver entry point cudarc declares; each stub returns
# CUDA_ERROR_UNKNOWN (999) and is never called: the real driver wins at run
# time because the stub is only on the link path, not in the binary.
grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+\(' "$driver_sys" | sed -E 's/pub unsafe fn (.*)\(/\1/' | sort -u \
  | awk '{printf "int %s(void) { return 999; }\n", $1}' > "$link/cuda_stub.c"
echo "libcuda stub: $(wc -l < "$link/cuda_stub.c") driver symbols"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"

export CUDA_ROOT="$cu" CUDA_PATH="$cu" PATH="$cu/bin:$PATH"
# cudarc cannot parse the wheel's nvcc version string (13.5); tell it.
export CUDARC_CUDA_VERSION=13000
export RUSTFLAGS="${RUSTFLAGS:-} -L $link"
export CARGO_TARGET_DIR="$target"
cargo build --release --locked -p grin-cli --features cuda
bin="$target/release/grin"
file "$bin" 2>/dev/null || true
# The binary must be linked against the CUDA libraries, not built without them.
if ! readelf -d "$bin" | grep -q 'libcuda.so.1'; then
  echo "FAIL: $bin does not link libcuda; the cuda feature did not take effect" >&2
  exit 1
fi
echo "built $bin (CUDA, compute capability $CUDA_COMPUTE_CAP)"
