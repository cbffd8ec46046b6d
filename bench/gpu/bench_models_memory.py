#!/usr/bin/env python3
"""BERT-base-shaped (GELU, k-bit) and ResNet-50 (ReLU, 1 bit) training steps on the GPU.

For each model and mode (unpatched, unswag), in a fresh subprocess: under a 16 GiB
budget (torch.cuda.set_per_process_memory_fraction), double the batch until OOM and
bisect (to a quarter of the last good batch); report the largest batch that fits, the
peak memory above weights+grads and the step time at that batch, and (for comparison at
equal work) at the unpatched largest batch.

    python bench/gpu/bench_models_memory.py [--bits 2]

Prints a table; writes it to $OUT/models_memory.txt when OUT is set.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

GIB = 2 ** 30
BUDGET_GIB = 16


def _build(name):
    import torch
    if name == "bert-base":
        import transformers as T
        cfg = T.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, vocab_size=30522, hidden_act="gelu")
        m = T.BertForMaskedLM._from_config(cfg, attn_implementation="sdpa",
                                           torch_dtype=torch.bfloat16)

        def batch(b):
            ids = torch.randint(0, cfg.vocab_size, (b, 512), device="cuda")
            return lambda: m(input_ids=ids, labels=ids).loss
    else:
        import torchvision
        m = torchvision.models.resnet50().to(torch.bfloat16)

        def batch(b):
            x = torch.randn(b, 3, 224, 224, device="cuda", dtype=torch.bfloat16)
            y = torch.randint(0, 1000, (b,), device="cuda")
            return lambda: torch.nn.functional.cross_entropy(m(x).float(), y)
    return m.cuda().train(), batch


def child(name: str, mode: str, bits: int, fixed_batch: int) -> dict:
    import torch
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, BUDGET_GIB * GIB / total))
    model, batch = _build(name)
    if mode == "unswag":
        from unswag import apply_unswag_surgery
        apply_unswag_surgery(model, bits=bits)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def step(b):
        fn = batch(b)
        res = None
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fn().backward()
            torch.cuda.synchronize()
            res = (time.perf_counter() - t0, torch.cuda.max_memory_allocated())
        return {"batch": b, "step_s": res[0], "peak_above_wg_gib": (res[1] - 2 * wbytes) / GIB}

    def fits(b):
        try:
            return step(b)
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    # double until OOM, then bisect down to a quarter of the last good batch
    best, b = None, 8
    while b <= 4096:
        r = fits(b)
        if r is None:
            break
        best, b = r, 2 * b
    if best is not None and b <= 4096:
        lo, hi = best["batch"], b
        while hi - lo > max(1, lo // 4):
            mid = (lo + hi) // 2
            r = fits(mid)
            if r is None:
                hi = mid
            else:
                best, lo = r, mid
    out = {"status": "ok" if best else "OOM", "largest": best}
    if fixed_batch:
        out["at_fixed"] = fits(fixed_batch)
    return out


def run(name, mode, bits, fixed, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, mode, str(bits),
           str(fixed)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"status": "error: " + " | ".join(r.stderr.strip().splitlines()[-3:])[-200:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=4)
    ap.add_argument("--bits", type=int, default=2, help="GELU code bits (BERT)")
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    if a.child:
        name, mode, bits, fixed = a.child
        print("RESULT " + json.dumps(child(name, mode, int(bits), int(fixed))), flush=True)
        return 0
    import torch
    dev = torch.cuda.get_device_name(0)
    lines = [f"# one training step (forward+backward), bf16, {BUDGET_GIB} GiB budget, on {dev}, "
             f"{time.strftime('%Y-%m-%d')}",
             f"{'model':<11}{'mode':<22}{'largest batch':>14}{'peak>w+g GiB':>14}{'step s':>9}"
             f"{'  at unpatched batch: peak GiB / step s':>40}"]
    for name, proto in (("bert-base", f"GELU {a.bits} bit"), ("resnet50", "ReLU exact 1 bit")):
        base = run(name, "unpatched", a.bits, 0, a.timeout)
        fixed = (base.get("largest") or {}).get("batch", 0)
        for mode, res in (("unpatched", base),
                          (f"unswag ({proto})", run(name, "unswag", a.bits, fixed, a.timeout))):
            big = res.get("largest")
            if not big:
                lines.append(f"{name:<11}{mode:<22}{res['status']:>14}")
                continue
            fx = res.get("at_fixed") or (big if mode == "unpatched" else None)
            fxs = f"{fx['peak_above_wg_gib']:.2f} / {fx['step_s']:.3f}" if fx else "-"
            lines.append(f"{name:<11}{mode:<22}{big['batch']:>14}{big['peak_above_wg_gib']:>14.2f}"
                         f"{big['step_s']:>9.3f}{fxs:>40}")
    text = "\n".join(lines)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "models_memory.txt"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
