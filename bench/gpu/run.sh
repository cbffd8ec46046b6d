#!/usr/bin/env bash
# GPU benchmark, run on a machine with a CUDA device (from any directory):
#
#   bash bench/gpu/run.sh [--n ELEMENTS]
#
# Builds libunswag with CUDA into build-gpu/ unless tests/gpu/run.sh already
# did, then runs bench/gpu/bench_cuda.cu (our bf16 kernels vs a device copy)
# and bench/gpu/bench_torch.py (PyTorch eager, if torch is importable), and
# prints a combined table: our forward + backward against PyTorch's, with the
# targets of the issue (every kernel >= 90% of copy bandwidth; silu k=2
# fwd+bwd >= 1.15x PyTorch; gelu >= 1.4x).
#
# Environment: EXTRA_DTYPES (e.g. "f32 f16": bench_cuda again in those dtypes),
# BUILD_DIR (default build-gpu), CUDA_ARCH (default: the GPU's
# compute capability, else 90), UNSWAG_CMAKE_ARGS (extra cmake arguments),
# OUT (if set: output also in $OUT/gpu-bench.txt, CSVs in $OUT).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BUILD_DIR=${BUILD_DIR:-build-gpu}
N_ARGS=("$@")
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu-bench.txt") 2>&1
fi

if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
NVCC=$(command -v nvcc) || { echo "bench/gpu/run.sh: nvcc not found"; exit 1; }
. tests/gpu/cuda_build.sh
CUDA_ARCH=${CUDA_ARCH:-$(cuda_arch)}
echo "== unswag GPU benchmark: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>/dev/null || true

LIB="$BUILD_DIR/libunswag.a"
if ! nm "$LIB" 2>/dev/null | grep forward_kernel >/dev/null; then
  # shellcheck disable=SC2086
  configure_cuda_build "$BUILD_DIR" "$BUILD_DIR/configure.log" ${UNSWAG_CMAKE_ARGS:-} || exit 1
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target unswag_static >"$BUILD_DIR/build.log" 2>&1 ||
    { tail -n 40 "$BUILD_DIR/build.log"; exit 1; }
fi
"$NVCC" -O3 -std=c++17 -arch="sm_$CUDA_ARCH" -Iinclude bench/gpu/bench_cuda.cu "$LIB" \
  -lgomp -lm -o "$BUILD_DIR/bench_cuda"

echo
"$BUILD_DIR/bench_cuda" --csv "$BUILD_DIR/bench_cuda.csv" ${N_ARGS[@]+"${N_ARGS[@]}"}
echo
# EXTRA_DTYPES="f32 f16": the same kernels-vs-copy table for those dtypes (no PyTorch side)
for d in ${EXTRA_DTYPES:-}; do
  "$BUILD_DIR/bench_cuda" --dtype "$d" --csv "$BUILD_DIR/bench_cuda_$d.csv" ${N_ARGS[@]+"${N_ARGS[@]}"}
  [ -n "${OUT:-}" ] && cp "$BUILD_DIR/bench_cuda_$d.csv" "$OUT/"
  echo
done
have_torch=0
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  python3 bench/gpu/bench_torch.py --csv "$BUILD_DIR/bench_torch.csv" ${N_ARGS[@]+"${N_ARGS[@]}"} && have_torch=1
else
  echo "(torch with CUDA not importable: no PyTorch comparison)"
fi

if [ -n "${OUT:-}" ]; then
  cp "$BUILD_DIR/bench_cuda.csv" "$OUT/"
  [ "$have_torch" = 1 ] && cp "$BUILD_DIR/bench_torch.csv" "$OUT/"
fi
[ "$have_torch" = 1 ] || exit 0

echo
python3 - "$BUILD_DIR/bench_cuda.csv" "$BUILD_DIR/bench_torch.csv" <<'EOF'
import csv, sys
ours = list(csv.DictReader(open(sys.argv[1])))
torch = {r["act"]: r for r in csv.DictReader(open(sys.argv[2]))}
print("combined: forward + backward, ours (bf16, k-bit codes) vs PyTorch eager (bf16)")
print(f"{'activation':<10} {'k':>2} | {'ours ms':>8} {'torch ms':>9} {'speedup':>8} | "
      f"{'fwd/copy':>8} {'bwd/copy':>8} | target")
print("--------------+-------------------------------+-------------------+-------")
worst = 1e9
for r in ours:
    t = torch.get(r["act"])
    if t is None:
        continue
    o = float(r["fwd_ms"]) + float(r["bwd_ms"])
    p = float(t["fwd_ms"]) + float(t["bwd_ms"])
    sp = p / o
    fr = float(r["fwd_gbs"]) / float(r["copy_gbs"])
    br = float(r["bwd_gbs"]) / float(r["copy_gbs"])
    worst = min(worst, fr, br)
    notes = []
    if r["act"] == "silu" and r["k"] == "2":
        notes.append(f"speedup >= 1.15: {'met' if sp >= 1.15 else 'MISSED'}")
    if r["act"] == "gelu":
        notes.append(f"speedup >= 1.4: {'met' if sp >= 1.4 else 'MISSED'}")
    if fr < 0.9 or br < 0.9:
        notes.append("< 90% of copy")
    print(f"{r['act']:<10} {r['k']:>2} | {o:8.3f} {p:9.3f} {sp:7.2f}x | "
          f"{100 * fr:7.0f}% {100 * br:7.0f}% | {'; '.join(notes)}")
print(f"slowest kernel: {100 * worst:.0f}% of copy bandwidth "
      f"(target >= 90%: {'met' if worst >= 0.9 else 'MISSED'})")
EOF
