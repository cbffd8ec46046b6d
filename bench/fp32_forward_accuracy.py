#!/usr/bin/env python3
"""How close the fp32 forwards of unswag and of PyTorch come to the correctly rounded value,
on 65,536 standard normal samples x 4 (seed 0; the README's accuracy paragraph).

    python bench/fp32_forward_accuracy.py      # CPU; prints the table

The reference is each function in 100-bit arithmetic (mpmath), rounded once to float32.
Needs torch, mpmath (a dependency of torch) and libunswag (UNSWAG_LIBRARY or pip install .).
"""
import platform
import sys

import mpmath as mp
import numpy as np
import torch
import torch.nn.functional as F

try:
    import unswag.torch as ut
except ImportError:  # the source tree
    sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/python")
    import unswag.torch as ut

mp.mp.prec = 100
N = 1 << 16


def exact(act, x):
    x = mp.mpf(float(x))
    if act == "silu":
        return x / (1 + mp.exp(-x))
    if act == "gelu":
        return x * mp.erfc(-x / mp.sqrt(2)) / 2
    v = mp.sqrt(2 / mp.pi) * 2 * (x + mp.mpf(0.044715) * x ** 3)
    return x / (1 + mp.exp(-v))


def ulps(a, b):
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def main():
    x = torch.randn(N, generator=torch.Generator().manual_seed(0)) * 4
    print(f"fp32 forward vs the correctly rounded value: {N} samples of 4 * N(0, 1), seed 0; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}")
    print("exact = correctly rounded; <= 1 = within 1 ulp of it; worst = largest ulp distance "
          "(between bit patterns: a 0 where the value is 1e-30 counts ~10^9)")
    print(f"{'activation':<11}{'unswag exact':>13}{'<= 1':>9}{'worst':>8}"
          f"{'torch exact':>13}{'<= 1':>9}{'worst':>11}")
    ours = {"silu": lambda t: ut.silu(t), "gelu": lambda t: ut.gelu(t),
            "gelu_tanh": lambda t: ut.gelu(t, "tanh")}
    theirs = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}
    for act in ("silu", "gelu", "gelu_tanh"):
        want = np.array([float(exact(act, v)) for v in x.tolist()], np.float32)
        row = f"{act:<11}"
        for fn, width in ((ours[act], 8), (theirs[act], 11)):
            got = fn(x).detach().numpy()
            d = ulps(got, want)
            row += (f"{100 * np.mean(d == 0):>12.2f}%{100 * np.mean(d <= 1):>8.2f}%"
                    f"{int(d.max()):>{width}}")
        print(row)


if __name__ == "__main__":
    main()
