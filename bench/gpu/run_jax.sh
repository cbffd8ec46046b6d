#!/usr/bin/env bash
# Issue 13's measurement in one device call, from the repository root:
#
#   bash bench/gpu/run_jax.sh            # results under $OUT (else build-bench-jax/)
#
# Builds libunswag with CUDA for this GPU and the JAX FFI handlers into build-gpu/ (kept if
# already configured), then runs bench/gpu/bench_jax.py: the op and MLP tables against
# jax.nn, the impl="auto" decision file (jax_auto_table.json), a profiler trace, and the
# JAX tests on CUDA.  The bench is stopped before the device's 600 s limit; its JSON files
# are rewritten after every row, so a cut-short run keeps what it measured.
# Extra arguments go to bench_jax.py (e.g. --no-tests, --dtypes bfloat16).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
DEST=${OUT:-build-bench-jax}
mkdir -p "$DEST"
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
. tests/gpu/cuda_build.sh
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  configure_cuda_build "$BUILD_DIR" "$DEST/configure.log" \
    -DPython_EXECUTABLE="$(command -v "$PY")" || exit 1
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" >"$DEST/build.log" 2>&1 || {
  tail -n 40 "$DEST/build.log"; exit 1; }
ffi=$(find "$PWD/$BUILD_DIR" -name 'libunswag_jax_ffi.so' | head -n1)
[ -n "$ffi" ] || { echo "libunswag_jax_ffi.so was not built (see $DEST/configure.log)"; exit 1; }
export UNSWAG_LIBRARY=$PWD/$BUILD_DIR/libunswag.so UNSWAG_JAX_FFI_LIBRARY=$ffi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
echo "built in ${SECONDS} s: $UNSWAG_LIBRARY, $ffi"
left=$((585 - SECONDS))
timeout "$left" "$PY" bench/gpu/bench_jax.py --out "$DEST" "$@"
rc=$?
[ "$rc" -eq 124 ] && echo "bench_jax.py stopped after $left s (the JSON files say partial: true)"
exit "$rc"
