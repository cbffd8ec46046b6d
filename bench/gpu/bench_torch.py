"""PyTorch eager baseline for bench_cuda: relu, silu, gelu on bf16.

    python3 bench/gpu/bench_torch.py [--n ELEMENTS] [--reps R] [--csv FILE]

Forward: torch.nn.functional.relu / silu / gelu.  Backward: the aten kernel
autograd runs for that activation, called directly on the saved tensor
(threshold_backward(dy, y, 0), silu_backward(dy, x), gelu_backward(dy, x)),
so only the backward kernel is timed.  CUDA events; median of R >= 20 timed
calls taken in 5 round-robin rounds over the copy and all kernels.  Bytes moved:
forward reads 2n and writes 2n; backward reads 4n (dy and the saved tensor) and writes 2n.
"""
import argparse
import statistics
import sys

import torch
import torch.nn.functional as F


class Timer:
    """Event timing of single calls: one untimed warm-up, then `count` timed."""

    def __init__(self):
        self.start = torch.cuda.Event(enable_timing=True)
        self.stop = torch.cuda.Event(enable_timing=True)

    def run(self, fn, count, out):
        fn()
        for _ in range(count):
            self.start.record()
            fn()
            self.stop.record()
            self.stop.synchronize()
            out.append(self.start.elapsed_time(self.stop))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256 << 20)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()
    n, reps = args.n, max(args.reps, 20)
    if not torch.cuda.is_available():
        print("bench_torch: no CUDA device visible to torch", file=sys.stderr)
        return 1

    dev = torch.device("cuda")
    print(f"# bench_torch: PyTorch {torch.__version__} eager, {torch.cuda.get_device_name(dev)}")
    print(f"# n = {n} bf16 elements, median of {5 * ((reps + 4) // 5)} timed calls")
    gen = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(n, device=dev, dtype=torch.bfloat16, generator=gen)
    dy = torch.randn(n, device=dev, dtype=torch.bfloat16, generator=gen) * 0.01
    out = torch.empty_like(x)

    with torch.no_grad():
        y_relu = F.relu(x)
    cases = [
        ("relu", lambda: F.relu(x),
         lambda: torch.ops.aten.threshold_backward(dy, y_relu, 0)),
        ("silu", lambda: F.silu(x), lambda: torch.ops.aten.silu_backward(dy, x)),
        ("gelu", lambda: F.gelu(x),
         lambda: torch.ops.aten.gelu_backward(dy, x, approximate="none")),
        ("gelu_tanh", lambda: F.gelu(x, approximate="tanh"),
         lambda: torch.ops.aten.gelu_backward(dy, x, approximate="tanh")),
    ]
    # round robin over the copy and every kernel, as bench_cuda does
    rounds = 5
    per_round = (reps + rounds - 1) // rounds
    timer = Timer()
    copy_t = []
    fwd_t = {name: [] for name, _, _ in cases}
    bwd_t = {name: [] for name, _, _ in cases}
    with torch.no_grad():
        for _ in range(rounds):
            timer.run(lambda: out.copy_(x), per_round, copy_t)
            for name, fwd, bwd in cases:
                timer.run(fwd, per_round, fwd_t[name])
                timer.run(bwd, per_round, bwd_t[name])
    copy_ms = statistics.median(copy_t)
    copy_gbs = 4.0 * n / (copy_ms * 1e6)
    print(f"\ntorch copy_: {copy_ms:.3f} ms, {copy_gbs:.0f} GB/s (read + write)\n")

    rows = []
    print(f"{'activation':<10} | {'fwd ms':>9} {'GB/s':>8} {'/copy':>6} | "
          f"{'bwd ms':>9} {'GB/s':>8} {'/copy':>6}")
    print("-----------+---------------------------+---------------------------")
    for name, _, _ in cases:
        f_ms = statistics.median(fwd_t[name])
        b_ms = statistics.median(bwd_t[name])
        f_gbs = 4.0 * n / (f_ms * 1e6)
        b_gbs = 6.0 * n / (b_ms * 1e6)
        rows.append((name, f_ms, b_ms, f_gbs, b_gbs))
        print(f"{name:<10} | {f_ms:9.3f} {f_gbs:8.0f} {100 * f_gbs / copy_gbs:5.0f}% | "
              f"{b_ms:9.3f} {b_gbs:8.0f} {100 * b_gbs / copy_gbs:5.0f}%")
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("act,fwd_ms,bwd_ms,fwd_gbs,bwd_gbs,copy_gbs\n")
            for name, f_ms, b_ms, f_gbs, b_gbs in rows:
                f.write(f"{name},{f_ms:.5f},{b_ms:.5f},{f_gbs:.1f},{b_gbs:.1f},{copy_gbs:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
