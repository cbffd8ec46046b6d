# Sourced by the GPU scripts: makes UNSWAG_LIBRARY point at a CUDA build of libunswag.
# Keeps $UNSWAG_LIBRARY if it loads and has CUDA, else builds one for this GPU's arch
# into $BUILD_DIR (default build-gpu/); on a failed build prints the log's end and
# "0 passed, 1 failed" and exits.  Needs PY and the repository root as the directory.
if ! "$PY" -c 'import ctypes, os, sys; ctypes.CDLL(os.environ["UNSWAG_LIBRARY"]).unswag_cuda_built() or sys.exit(1)' 2>/dev/null; then
  BUILD_DIR=${BUILD_DIR:-build-gpu}
  . tests/gpu/cuda_build.sh
  configure_cuda_build "$BUILD_DIR" "$BUILD_DIR.log" || { echo "0 passed, 1 failed"; exit 1; }
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target unswag >>"$BUILD_DIR.log" 2>&1 ||
    { tail -n 30 "$BUILD_DIR.log"; echo "0 passed, 1 failed"; exit 1; }
  export UNSWAG_LIBRARY=$PWD/$BUILD_DIR/libunswag.so
fi
echo "library: $UNSWAG_LIBRARY"
