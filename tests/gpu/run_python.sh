#!/usr/bin/env bash
# The Python layer on a machine with a CUDA device (from any directory):
#
#   bash tests/gpu/run_python.sh
#
# Builds libunswag (CUDA, this GPU's arch) and the JAX FFI handlers into build-gpu/
# (configured by tests/gpu/run.sh if that ran first), then runs every torch test in
# tests/python -- test_torch_cuda.py holds the CUDA ones; the CPU ones also check this
# machine's torch/transformers versions -- against that build.  The JAX tests on the GPU
# run in bench/gpu/bench_jax.py.  Last line: "N passed, N failed" (pytest's errors count
# as failed); with OUT set the log is also written to $OUT/gpu-python-tests.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu-python-tests.txt") 2>&1
fi
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
PY=${PYTHON:-python3}
echo "== unswag Python GPU tests: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'

. tests/gpu/cuda_build.sh
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  configure_cuda_build "$BUILD_DIR" "$BUILD_DIR.configure.log" \
    -DPython_EXECUTABLE="$(command -v "$PY")" || { echo "0 passed, 1 failed"; exit 1; }
fi
grep -E "JAX FFI|jax" "$BUILD_DIR/CMakeCache.txt" | grep -i "include_dir" || true
cmake --build "$BUILD_DIR" -j "$(nproc)" >"$BUILD_DIR/build-python.log" 2>&1 || {
  tail -n 40 "$BUILD_DIR/build-python.log"; echo "0 passed, 1 failed"; exit 1; }
export UNSWAG_LIBRARY=$PWD/$BUILD_DIR/libunswag.so
ffi=$(find "$PWD/$BUILD_DIR" -name 'libunswag_jax_ffi.so' | head -n1)
[ -n "$ffi" ] && export UNSWAG_JAX_FFI_LIBRARY=$ffi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
echo "UNSWAG_LIBRARY=$UNSWAG_LIBRARY UNSWAG_JAX_FFI_LIBRARY=${ffi:-none}"
"$PY" -m unswag info

log=$BUILD_DIR/pytest-torch.log
timeout "${PYTEST_TIMEOUT:-420}" "$PY" -m pytest -q -p no:cacheprovider -rfE \
  tests/python/test_torch_*.py tests/python/test_package.py \
  2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s' "$log" | tail -n1)
n_of() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
passed=$(n_of passed)
failed=$(( $(n_of failed) + $(n_of error) ))
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # crashed or timed out
echo "pytest exit $rc; summary: ${summary:-none}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
