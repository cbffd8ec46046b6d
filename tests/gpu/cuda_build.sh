# Sourced by the GPU scripts (from the repository root): the one recipe of a CUDA build.
#   cuda_arch                      this GPU's compute capability (e.g. 90), else 90
#   configure_cuda_build DIR LOG [CMAKE_ARGS...]
#                                  configures DIR: Release, CUDA for $CUDA_ARCH (default:
#                                  cuda_arch), no tests, examples or benchmarks unless
#                                  CMAKE_ARGS turn them on; on failure prints LOG's end
cuda_arch() {
  local arch
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .' || true)
  case "$arch" in '' | *[!0-9]*) arch=90 ;; esac
  echo "$arch"
}

configure_cuda_build() {
  local dir=$1 log=$2
  shift 2
  mkdir -p "$dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DUNSWAG_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-$(cuda_arch)}" -DUNSWAG_BUILD_TESTS=OFF \
    -DUNSWAG_BUILD_EXAMPLES=OFF -DUNSWAG_BUILD_BENCH=OFF "$@" >"$log" 2>&1 || {
    tail -n 30 "$log"
    return 1
  }
}
