#!/usr/bin/env bash
# Runs every test: format and lint checks (scripts/lint.sh), the C suite built with gcc (with the CUDA part compiled
# when nvcc is present), the same suite under ASan+UBSan, a clang build with
# -Werror (these two with test_kernels in quick mode: the gcc run is the
# exhaustive one), and the install + package-config checks. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v gcc >/dev/null || need+=(gcc)
command -v clang >/dev/null || need+=(clang)
command -v pkg-config >/dev/null || need+=(pkg-config)
# real text for tests/python/test_bench_scripts.py's convergence bench (2.7 MB, BSD)
[ -d /usr/share/games/fortunes ] || need+=(fortunes)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" >/dev/null; fi
fi

# 0. format + lint: seconds, so style slips fail before the long builds
bash scripts/lint.sh

run_suite() { # name, build dir, extra cmake args...
  local name=$1 dir=$2; shift 2
  echo "== $name"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
  cmake --build "$dir" -j"$JOBS" >/dev/null
  (cd "$dir" && ctest --output-on-failure -j"$JOBS")
}

# 1. gcc, with CUDA compiled when nvcc is on PATH (no GPU needed to compile)
run_suite "gcc (CUDA compiled if nvcc found)" build-test
# 2. the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
UNSWAG_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  run_suite "gcc ASan+UBSan" build-asan -DUNSWAG_SANITIZE=ON -DUNSWAG_CUDA=OFF
# 3. clang, -Wall -Wextra -Werror
UNSWAG_TEST_QUICK=1 CC=clang CXX=clang++ run_suite "clang" build-clang -DUNSWAG_CUDA=OFF

# 4. install, then build a consumer through the CMake package and pkg-config
echo "== install + find_package + pkg-config"
prefix=$(mktemp -d)
cmake --install build-test --prefix "$prefix" >/dev/null
bash tests/install/check_install.sh "$prefix"
# 5. Python: pip install . into a cached venv, then pytest (torch, JAX)
echo "== python"
bash scripts/test_python.sh
echo "all suites passed"
