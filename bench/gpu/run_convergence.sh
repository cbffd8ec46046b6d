#!/usr/bin/env bash
# The convergence benchmark of issue 11 on a machine with a CUDA device:
#
#   OUT=/some/dir bash bench/gpu/run_convergence.sh [bench_convergence.py arguments]
#
# Builds libunswag with CUDA into build-gpu/ unless it is there (as tests/gpu/run_python.sh
# does), finds the corpus (build-corpus/fortunes, carried from a machine with the Debian
# package 'fortunes', else /usr/share/games/fortunes) and runs
# bench/gpu/bench_convergence.py with it.  Prepare the corpus where the package is installed:
#   mkdir -p build-corpus && cp -rL /usr/share/games/fortunes build-corpus/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD_DIR=${BUILD_DIR:-build-gpu}
PY=${PYTHON:-python3}
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if [ ! -f "$BUILD_DIR/libunswag.so" ]; then
  . tests/gpu/cuda_build.sh
  configure_cuda_build "$BUILD_DIR" "$BUILD_DIR.configure.log" || exit 1
  cmake --build "$BUILD_DIR" -j "$(nproc)" >"$BUILD_DIR.build.log" 2>&1 || {
    tail -n 40 "$BUILD_DIR.build.log"; exit 1; }
fi
corpus=${UNSWAG_CORPUS:-}
for c in build-corpus/fortunes /usr/share/games/fortunes; do
  [ -z "$corpus" ] && [ -d "$c" ] && corpus=$c
done
[ -n "$corpus" ] || { echo "no corpus: see the comment at the top of $0" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true
UNSWAG_LIBRARY=$PWD/$BUILD_DIR/libunswag.so PYTHONPATH=$PWD/python \
  exec "$PY" bench/gpu/bench_convergence.py --corpus "$corpus" --out "${OUT:-.}" "$@"
