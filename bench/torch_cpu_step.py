"""Time a small CPU training step whose activations go through libunswag.

    UNSWAG_LIBRARY=build/libunswag.so PYTHONPATH=python python bench/torch_cpu_step.py

Linear(32 -> 8192), unswag SiLU (2 bits), Linear(8192 -> 32) on a batch of 256 in
fp32: each activation call is 2^21 elements, so the library runs it threaded, between
torch's own threaded matmuls.  Prints the median and fastest step and the process CPU
time per step (a spinning thread pool shows up there).  Used to check that the
library's threading slows no framework step (NOTES.md, "CPU threading").
"""
import argparse
import statistics
import time

import torch

import unswag.torch as ut


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    a = ap.parse_args()
    dt = getattr(torch, a.dtype)
    torch.manual_seed(0)
    hidden, inner, batch = 32, 8192, 256
    model = torch.nn.Sequential(torch.nn.Linear(hidden, inner), ut.SiLU(bits=2),
                                torch.nn.Linear(inner, hidden)).to(dt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, hidden, dtype=dt)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    cpu0 = time.process_time()
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / a.steps
    print(f"{a.dtype}, torch threads {torch.get_num_threads()}: step median "
          f"{statistics.median(times) * 1e3:.1f} ms, fastest {min(times) * 1e3:.1f} ms, "
          f"cpu {cpu * 1e3:.1f} ms/step")


if __name__ == "__main__":
    main()
