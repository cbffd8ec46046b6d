#!/usr/bin/env bash
# UnSwag's first-run demo, from a fresh clone:
#
#   scripts/demo.sh
#
# Installs cmake / a C compiler / make if they are missing (apt-get, as root
# or through sudo), builds the library and the example in build/ (Release,
# CPU only), decompresses the digits data set next to the build and trains
# the example MLP (examples/mlp_digits.c).  Extra arguments go to the
# example, e.g. `scripts/demo.sh --epochs 5`.
#
# Environment: BUILD_DIR (default build), UNSWAG_CUDA (default OFF: the demo
# runs on the CPU; set ON to build the CUDA kernels too), JOBS (default nproc).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
UNSWAG_CUDA=${UNSWAG_CUDA:-OFF}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# ---- tools ------------------------------------------------------------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
  missing+=(gcc)
fi
if ((${#missing[@]})); then
  echo "demo: installing ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "demo: missing ${missing[*]} and no apt-get here; install them and rerun" >&2
    exit 1
  fi
  SUDO=
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
      echo "demo: missing ${missing[*]}; rerun as root or install them" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi

# ---- build ------------------------------------------------------------------------
cmake_version=$(cmake --version | head -n1 | sed 's/[^0-9.]*\([0-9.]*\).*/\1/')
if [ "$(printf '%s\n' 3.24 "$cmake_version" | sort -V | head -n1)" != 3.24 ]; then
  echo "demo: cmake $cmake_version is older than 3.24; install a newer one" \
    "(e.g. python3 -m pip install cmake) and rerun" >&2
  exit 1
fi
echo "demo: building in $BUILD_DIR/ (Release, UNSWAG_CUDA=$UNSWAG_CUDA)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DUNSWAG_CUDA="$UNSWAG_CUDA" \
  -DUNSWAG_BUILD_EXAMPLES=ON >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target mlp_digits

# ---- data -------------------------------------------------------------------------
csv="$BUILD_DIR/digits.csv"
if [ ! -s "$csv" ] || [ examples/data/digits.csv.gz -nt "$csv" ]; then
  gzip -dc examples/data/digits.csv.gz >"$csv.tmp"
  mv "$csv.tmp" "$csv"
fi

# ---- run --------------------------------------------------------------------------
echo
"$BUILD_DIR/examples/mlp_digits" "$csv" "$@"
