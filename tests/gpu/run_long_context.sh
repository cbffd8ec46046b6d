#!/usr/bin/env bash
# The long-context mode's GPU checks (tests/gpu/test_long_context_cuda.py) on the lent
# GPU machine, from any directory:
#
#   bash tests/gpu/run_long_context.sh
#
# Uses $UNSWAG_LIBRARY if set and loadable, else builds libunswag with CUDA for this
# GPU into build-gpu/.  Last line: "N passed, N failed"; with OUT set the log is also
# written to $OUT/gpu-long-context-tests.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu-long-context-tests.txt") 2>&1
fi
PY=${PYTHON:-python3}
echo "== unswag long-context GPU tests: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
if ! "$PY" -c 'import ctypes, os, sys; ctypes.CDLL(os.environ["UNSWAG_LIBRARY"]).unswag_cuda_built() or sys.exit(1)' 2>/dev/null; then
  BUILD_DIR=${BUILD_DIR:-build-gpu}
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
  case "$arch" in ''|*[!0-9]*) arch=90 ;; esac
  { cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DUNSWAG_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$arch" -DUNSWAG_BUILD_TESTS=OFF -DUNSWAG_BUILD_EXAMPLES=OFF \
      -DUNSWAG_BUILD_BENCH=OFF && cmake --build "$BUILD_DIR" -j "$(nproc)" --target unswag; } \
      >"$BUILD_DIR.log" 2>&1 || { tail -n 30 "$BUILD_DIR.log"; echo "0 passed, 1 failed"; exit 1; }
  export UNSWAG_LIBRARY=$PWD/$BUILD_DIR/libunswag.so
fi
echo "library: $UNSWAG_LIBRARY"
PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} "$PY" tests/gpu/test_long_context_cuda.py
