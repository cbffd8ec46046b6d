#!/usr/bin/env bash
# GPU tests, run on a machine with a CUDA device (from any directory):
#
#   bash tests/gpu/run.sh
#
# 1. builds libunswag with CUDA into build-gpu/ (Release, only this GPU's arch)
#    and the GPU tests' CMake targets (tests/gpu/CMakeLists.txt: test_cuda,
#    test_gated_cuda, test_rmsnorm_cuda; the same recipe the C build uses),
# 2. runs test_cuda (the CUDA kernels vs the CPU reference; prints
#    "test_cuda: N passed, N failed"),
# 3. runs `test_cuda --quick` under compute-sanitizer memcheck and racecheck
#    (each tool counts as one check: passed if it reports no error),
# 4. the gated MLP kernels (test_gated_cuda) and RMSNorm (test_rmsnorm_cuda)
#    against the CPU, plain and under compute-sanitizer (one check each run).
# The last line is the combined "N passed, N failed"; the exit status is
# nonzero on any failure.
#
# Environment: BUILD_DIR (default build-gpu), CUDA_ARCH (default: the GPU's
# compute capability, else 90), UNSWAG_CMAKE_ARGS (extra cmake arguments),
# OUT (if set, the log is also written to $OUT/gpu-tests.txt).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD_DIR=${BUILD_DIR:-build-gpu}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu-tests.txt") 2>&1
fi

# ---- toolchain ------------------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
NVCC=$(command -v nvcc) || { echo "run.sh: nvcc not found"; echo "0 passed, 1 failed"; exit 1; }
CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
. tests/gpu/cuda_build.sh
CUDA_ARCH=${CUDA_ARCH:-$(cuda_arch)}
echo "== unswag GPU tests: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
echo "nvcc: $("$NVCC" --version | tail -n1)   arch: sm_$CUDA_ARCH   cmake: $(cmake --version | head -n1)"

# ---- build ------------------------------------------------------------------------
t0=$(date +%s)
# shellcheck disable=SC2086
configure_cuda_build "$BUILD_DIR" "$BUILD_DIR/configure.log" -DUNSWAG_BUILD_TESTS=ON \
  ${UNSWAG_CMAKE_ARGS:-} || { echo "0 passed, 1 failed"; exit 1; }
cmake --build "$BUILD_DIR" -j "$(nproc)" --target test_cuda test_gated_cuda test_rmsnorm_cuda \
  >"$BUILD_DIR/build.log" 2>&1 || {
  tail -n 40 "$BUILD_DIR/build.log"; echo "0 passed, 1 failed"; exit 1; }
LIB="$BUILD_DIR/libunswag.a"
if ! nm "$LIB" 2>/dev/null | grep forward_kernel >/dev/null; then
  echo "run.sh: $LIB has no CUDA kernels (configured without CUDA?)"
  echo "0 passed, 1 failed"
  exit 1
fi
BIN="$BUILD_DIR/tests/gpu"
echo "build: $(( $(date +%s) - t0 )) s"

# ---- plain run -----------------------------------------------------------------------
passed=0
failed=0
set +e
t0=$(date +%s)
timeout 240 "$BIN/test_cuda" 2>&1 | tee "$BUILD_DIR/test_cuda.log"
rc=${PIPESTATUS[0]}
set -e
echo "test_cuda: exit $rc, $(( $(date +%s) - t0 )) s"
last=$(grep -E '^test_cuda: [0-9]+ passed, [0-9]+ failed$' "$BUILD_DIR/test_cuda.log" | tail -n1 || true)
if [ -n "$last" ]; then
  passed=$(echo "$last" | sed -E 's/^test_cuda: ([0-9]+) passed, ([0-9]+) failed$/\1/')
  failed=$(echo "$last" | sed -E 's/^test_cuda: ([0-9]+) passed, ([0-9]+) failed$/\2/')
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # crashed or timed out before its summary
fi

# ---- compute-sanitizer ------------------------------------------------------------------
SAN=$(command -v compute-sanitizer || true)
for c in "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer"; do
  if [ -z "$SAN" ] && [ -x "$c" ]; then SAN=$c; fi
done
if [ -z "$SAN" ]; then
  echo "compute-sanitizer: not found"
  failed=$((failed + 1))
else
  for tool in memcheck racecheck; do
    log="$BUILD_DIR/sanitizer-$tool.log"
    set +e
    t0=$(date +%s)
    timeout 200 "$SAN" --tool "$tool" --error-exitcode 99 "$BIN/test_cuda" --quick >"$log" 2>&1
    rc=$?
    set -e
    echo "== compute-sanitizer --tool $tool (test_cuda --quick): exit $rc, $(( $(date +%s) - t0 )) s"
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test_cuda: [0-9]+ passed' "$log" || true
    if [ "$rc" -eq 0 ]; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      case "$rc" in
        99) echo "$tool found errors:" ;;
        124) echo "$tool timed out:" ;;
        *) echo "test_cuda --quick failed under $tool:" ;;
      esac
      grep -E '^=========|FAIL' "$log" | head -n 40 || true
    fi
  done
fi

# ---- gated MLP kernels vs the CPU, plain and under memcheck ------------------------------
for runner in "" "${SAN:+$SAN --tool memcheck --error-exitcode 99}"; do
  set +e
  # shellcheck disable=SC2086
  timeout 200 $runner "$BIN/test_gated_cuda" >"$BUILD_DIR/gated.log" 2>&1
  rc=$?
  set -e
  echo "== ${runner:+compute-sanitizer memcheck: }test_gated_cuda: exit $rc"
  grep -E 'ERROR SUMMARY|test_gated_cuda: [0-9]+ passed|FAIL' "$BUILD_DIR/gated.log" | head -n 20 || true
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

# ---- RMSNorm vs the CPU: full run, then --quick under memcheck and racecheck -------------------
for runner in "" "${SAN:+$SAN --tool memcheck --error-exitcode 99}" \
    "${SAN:+$SAN --tool racecheck --error-exitcode 99}"; do
  args=""
  [ -n "$runner" ] && args="--quick"
  set +e
  # shellcheck disable=SC2086
  timeout 300 $runner "$BIN/test_rmsnorm_cuda" $args >"$BUILD_DIR/rmsnorm.log" 2>&1
  rc=$?
  set -e
  echo "== ${runner:+${runner%% --error*}: }test_rmsnorm_cuda $args: exit $rc"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test_rmsnorm_cuda: [0-9]+ passed|FAIL' "$BUILD_DIR/rmsnorm.log" | head -n 20 || true
  if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
