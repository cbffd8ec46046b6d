#!/usr/bin/env python3
"""Headline GPU measurement: TinyLlama-1.1B-shaped Llama, one training step.

hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000; random
weights; bf16; batch 1; SDPA attention in every row (the surgery's switch is then a no-op,
so the rows differ only by the MLP path).  For each mode (unpatched, fused, recompute),
with and without gradient checkpointing, contexts 2k..64k: peak memory above
weights+grads and step time (forward + backward, no optimizer).  Every config runs in a
fresh subprocess; an OOM is caught and recorded and ends that mode's sweep.  A global
time budget (UNSWAG_BENCH_BUDGET_S, default 420 s) skips what does not fit in it.

    python bench/gpu/bench_llama_memory.py            # the whole sweep
    python bench/gpu/bench_llama_memory.py --contexts 2048 8192 --modes unpatched fused

Prints a table; writes it to $OUT/llama_memory.txt when OUT is set.  The budget rows
(16 GiB and 80 GiB) report the longest context whose peak + weights + grads fits.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONTEXTS = [2048, 4096, 8192, 16384, 32768, 65536]
MODES = ["unpatched", "fused", "recompute"]
GIB = 2 ** 30


def child(mode: str, ckpt: bool, ctx: int, tile: int) -> dict:
    import torch
    import transformers as T

    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device("cuda")
    cfg = T.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                        num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                        max_position_embeddings=max(ctx, 2048), rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with dev:
        model = T.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                torch_dtype=torch.bfloat16)
    model.train()
    report = None
    if mode != "unpatched":
        from unswag import apply_unswag_surgery
        report = apply_unswag_surgery(model, gated=mode, tile_tokens=tile)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    nparam = sum(p.numel() for p in model.parameters())
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=dev)
    times, peak = [], 0
    try:
        for _ in range(2):  # the first step warms up kernels and the allocator
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            peak = max(peak, torch.cuda.max_memory_allocated())
            del loss
    except torch.cuda.OutOfMemoryError:
        return {"status": "OOM", "params": nparam}
    return {"status": "ok", "params": nparam, "weights_gib": wbytes / GIB,
            "peak_above_wg_gib": (peak - 2 * wbytes) / GIB, "peak_gib": peak / GIB,
            "step_s": times[-1],
            "patched": None if report is None else sum(report.counts().values())}


def run_one(mode, ckpt, ctx, tile, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, str(int(ckpt)), str(ctx),
           "--tile", str(tile)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout {timeout:.0f}s"}
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
    oom = any("out of memory" in t.lower() for t in tail)
    return {"status": "OOM" if oom else "error: " + " | ".join(tail)[-200:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=3, metavar=("MODE", "CKPT", "CTX"))
    ap.add_argument("--contexts", type=int, nargs="*", default=CONTEXTS)
    ap.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    ap.add_argument("--tile", type=int, default=4096, help="recompute tile (tokens)")
    ap.add_argument("--budget", type=float,
                    default=float(os.environ.get("UNSWAG_BENCH_BUDGET_S", 420)))
    a = ap.parse_args()
    if a.child:
        mode, ckpt, ctx = a.child[0], a.child[1] == "1", int(a.child[2])
        print("RESULT " + json.dumps(child(mode, ckpt, ctx, a.tile)), flush=True)
        return 0

    import torch
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    total = torch.cuda.get_device_properties(0).total_memory / GIB if torch.cuda.is_available() \
        else 0
    start = time.time()
    rows, stopped = [], set()
    combos = [(m, c) for c in (False, True) for m in a.modes]
    # context-major order: every mode gets its short contexts before any gets long ones
    for ctx in sorted(a.contexts):
        for mode, ckpt in combos:
            key = (mode, ckpt)
            left = a.budget - (time.time() - start)
            if key in stopped:
                res = {"status": "skipped (OOM at a shorter context)"}
            elif left < 20:
                res = {"status": "skipped (time budget)"}
            else:
                res = run_one(mode, ckpt, ctx, a.tile, timeout=max(20, left))
                if res["status"] != "ok":
                    stopped.add(key)
            rows.append((mode, ckpt, ctx, res))
            print(f"  {mode:<10} ckpt={int(ckpt)} ctx={ctx:>6}: {res}", file=sys.stderr,
                  flush=True)

    lines = [f"# TinyLlama-1.1B-shaped Llama, bf16, batch 1, SDPA; one training step "
             f"(forward+backward) on {dev} ({total:.0f} GiB); "
             f"{time.strftime('%Y-%m-%d')}; recompute tile {a.tile} tokens",
             "# peak above weights+grads (GiB) / step time (s)", ""]
    hdr = f"{'mode':<11}{'ckpt':<6}" + "".join(f"{c:>17}" for c in sorted(a.contexts))
    lines += [hdr, "-" * len(hdr)]
    base_w = next((r["weights_gib"] for *_, r in rows if r.get("status") == "ok"), None)
    fits = {}
    for mode, ckpt in combos:
        cells = []
        for ctx in sorted(a.contexts):
            r = next(r for m, c, x, r in rows if (m, c, x) == (mode, ckpt, ctx))
            if r["status"] == "ok":
                cells.append(f"{r['peak_above_wg_gib']:7.2f}/{r['step_s']:6.2f}s")
                for budget in (16, 80):
                    if r["peak_gib"] <= budget:
                        fits[(mode, ckpt, budget)] = ctx
            else:
                s = r["status"]
                cells.append("OOM" if s == "OOM" else ("skip" if s.startswith("skipped")
                                                       else s[:15]))
        lines.append(f"{mode:<11}{('yes' if ckpt else 'no'):<6}" +
                     "".join(f"{c:>17}" for c in cells))
    lines += ["", "# longest context whose whole peak (weights+grads included) fits the budget "
              "(measured peaks; set_per_process_memory_fraction not applied)"]
    for budget in (16, 80):
        lines.append(f"  {budget} GiB: " + ", ".join(
            f"{m}{'+ckpt' if c else ''}={fits.get((m, c, budget), '-')}" for m, c in combos))
    if base_w is not None:
        lines.append(f"# weights {base_w:.2f} GiB (grads the same)")
    lines.append(f"# wall time {time.time() - start:.0f} s")
    text = "\n".join(lines)
    print(text)
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "llama_memory.txt"), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
