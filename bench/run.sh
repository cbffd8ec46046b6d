#!/usr/bin/env bash
# Builds the CPU benchmark in Release and records its output:
#
#   bench/run.sh [bench_cpu arguments, e.g. --quick or --n 16777216]
#
# Output: bench/results/cpu-<N>core-<YYYY-MM-DD>[-partial].txt (N = nproc; no host
# name), also echoed.  BUILD_DIR (default build-bench) is a separate build
# tree, so a developer's build/ keeps its own configuration.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build-bench}
JOBS=${JOBS:-$(nproc)}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DUNSWAG_CUDA=OFF \
  -DUNSWAG_BUILD_TESTS=OFF -DUNSWAG_BUILD_EXAMPLES=OFF -DUNSWAG_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" --target bench_cpu >/dev/null

mkdir -p bench/results
label="$(nproc)core"
suffix=""
case " $* " in *" --quick "*|*" --n "*|*" --dtype "*|*" --act "*) suffix="-partial" ;; esac
out="bench/results/cpu-${label}-$(date -u +%Y-%m-%d)${suffix}.txt"
{
  "$BUILD_DIR/bench/bench_cpu" "$@"
  if rev=$(git rev-parse --short HEAD 2>/dev/null); then
    dirty=$(git status --porcelain --untracked-files=no -- src include CMakeLists.txt 2>/dev/null)
    echo "source: git $rev${dirty:+ + uncommitted changes in src/, include/ or CMakeLists.txt}"
  fi
} | tee "$out.tmp"
mv "$out.tmp" "$out"
echo "bench: wrote $out"
