#!/usr/bin/env bash
# Builds and runs tools/f32_exhaustive.c (all 2^32 fp32 inputs of the float-float
# silu, gelu_tanh and gelu against long double; ~12 min each on 2 cores; an argument N checks
# every N-th input only).  From any directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${BUILD_DIR:-build-tools}
mkdir -p "$out"
gcc -std=c11 -O2 -fopenmp -ffp-contract=off -Isrc/core tools/f32_exhaustive.c -lm \
  -o "$out/f32_exhaustive"
"$out/f32_exhaustive" "$@"
