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
. tests/gpu/cuda_library.sh
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
if [ "${1:-}" = bench ]; then
  shift
  exec "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
    bench/gpu/bench_multi_gpu.py "$@"
fi
exec "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 tests/gpu/test_multi_gpu.py "$@"
