#!/usr/bin/env bash
# The 2-GPU checks and benchmark of issue 14 on the lent nvidia-h200-x2 machine, from any
# directory:
#
#   bash tests/gpu/run_multi_gpu.sh                  # tests/gpu/test_multi_gpu.py
#   bash tests/gpu/run_multi_gpu.sh bench [ARGS...]  # bench/gpu/bench_multi_gpu.py ARGS
#
# Uses $UNSWAG_LIBRARY if set and loadable, else builds libunswag with CUDA for this GPU
# into build-gpu/.  NVLink multicast stays off (the machine requires it).  With OUT set,
# the test log goes to $OUT/multi_gpu_tests.txt, the bench writes $OUT/multi_gpu*.{txt,json}.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
PY=${PYTHON:-python3}
echo "== unswag multi-GPU: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
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
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
if [ "${1:-}" = bench ]; then
  shift
  exec "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
    bench/gpu/bench_multi_gpu.py "$@"
fi
exec "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 tests/gpu/test_multi_gpu.py "$@"
