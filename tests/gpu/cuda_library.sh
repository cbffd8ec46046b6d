# Sourced by the GPU scripts: makes UNSWAG_LIBRARY point at a CUDA build of libunswag.
# Keeps $UNSWAG_LIBRARY if it loads and has CUDA, else builds one for this GPU's arch
# into $BUILD_DIR (default build-gpu/); on a failed build prints the log's end and
# "0 passed, 1 failed" and exits.  Needs PY and the repository root as the directory.
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
