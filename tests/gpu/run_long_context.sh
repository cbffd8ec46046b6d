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
. tests/gpu/cuda_library.sh
PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} "$PY" tests/gpu/test_long_context_cuda.py
