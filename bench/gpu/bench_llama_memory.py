#!/usr/bin/env python3
"""Headline GPU measurement: TinyLlama-1.1B-shaped Llama, one training step.

hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000; random
weights; bf16; batch 1; SDPA attention in every row (the surgery's switch is then a no-op,
so the rows differ only by the MLP path and the loss).  For each mode (unpatched, fused,
recompute; recompute+loss adds lm_loss="chunked"), with and without gradient
checkpointing, contexts 2k..64k: peak memory above weights+grads and step time (forward +
backward, no optimizer; the second of two steps).

The process is capped at 80 GiB (torch.cuda.set_per_process_memory_fraction) when the card
has more, so "fits in 80 GiB" is literal; the 16 GiB column is read off the measured peaks
(weights and grads included).  Each (mode, checkpointing) pair runs in a fresh subprocess
that sweeps the contexts upward and stops at the first OOM.  A global time budget
(UNSWAG_BENCH_BUDGET_S, default 420 s) skips what does not fit in it.

    python bench/gpu/bench_llama_memory.py            # the whole sweep
    python bench/gpu/bench_llama_memory.py --contexts 2048 8192 --modes unpatched fused

Prints a table; writes it to $OUT/llama_memory.txt when OUT is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_shapes import TINYLLAMA  # found in this script's folder (no package)
from sweep import run_child

CONTEXTS = [2048, 4096, 8192, 16384, 32768, 65536]
# "+loss": also lm_loss="chunked" (the loss without the tokens x vocab logits)
MODES = ["unpatched", "fused", "recompute", "recompute+loss"]
GIB = 2 ** 30
CAP_GIB = 80
DEVICE = "cuda"  # a smoke test on the CPU overrides this


def child(mode: str, ckpt: bool, contexts, tile: int):
    """Prints one RESULT line per context; stops after the first failure."""
    import torch
    import transformers as T

    dev = torch.device(DEVICE)
    total = torch.cuda.get_device_properties(0).total_memory
    if total > CAP_GIB * GIB:
        torch.cuda.set_per_process_memory_fraction(CAP_GIB * GIB / total)
    cfg = T.LlamaConfig(**TINYLLAMA, max_position_embeddings=max(max(contexts), 2048),
                        rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with dev:
        model = T.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                torch_dtype=torch.bfloat16)
    model.train()
    patched = None
    if mode != "unpatched":
        from unswag import apply_unswag_surgery
        gated, _, loss = mode.partition("+")
        rep = apply_unswag_surgery(model, gated=gated, tile_tokens=tile,
                                   lm_loss="chunked" if loss else None)
        patched = sum(rep.counts().values())
    if ckpt:
        if hasattr(model, "activation_checkpointing_enable"):  # current transformers
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # older releases
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
    nparam = sum(p.numel() for p in model.parameters())
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for ctx in contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=dev)
        res = {"ctx": ctx, "params": nparam, "patched": patched}
        try:
            times, peak = [], 0
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
            res.update(status="ok", weights_gib=wbytes / GIB, peak_gib=peak / GIB,
                       peak_above_wg_gib=(peak - 2 * wbytes) / GIB, step_s=times[-1])
        except torch.cuda.OutOfMemoryError:
            res["status"] = "OOM"
        print("RESULT " + json.dumps(res), flush=True)
        if res["status"] != "ok":
            return
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def run_pair(mode, ckpt, contexts, tile, timeout):
    """Results by context for one (mode, ckpt) subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, str(int(ckpt)),
           "--contexts", *map(str, contexts), "--tile", str(tile)]
    return run_child(cmd, contexts, timeout)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CKPT"))
    ap.add_argument("--contexts", type=int, nargs="*", default=CONTEXTS)
    ap.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    ap.add_argument("--tile", type=int, default=4096, help="recompute tile (tokens)")
    ap.add_argument("--budget", type=float,
                    default=float(os.environ.get("UNSWAG_BENCH_BUDGET_S", 420)))
    a = ap.parse_args()
    contexts = sorted(a.contexts)
    if a.child:
        child(a.child[0], a.child[1] == "1", contexts, a.tile)
        return 0

    import torch
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    total = torch.cuda.get_device_properties(0).total_memory / GIB if torch.cuda.is_available() \
        else 0
    start = time.time()
    combos = [(m, c) for c in (False, True) for m in a.modes]
    results = {}
    for i, (mode, ckpt) in enumerate(combos):
        left = a.budget - (time.time() - start)
        # share what is left among the pairs still to run (the last gets all of it)
        share = left / (len(combos) - i) * (1.5 if i < len(combos) - 1 else 1.0)
        if left < 20:
            results[(mode, ckpt)] = {c: {"status": "skipped (time budget)"} for c in contexts}
        else:
            budget = max(20, min(left, share))
            results[(mode, ckpt)] = run_pair(mode, ckpt, contexts, a.tile, budget)
        for c in contexts:
            print(f"  {mode:<14} ckpt={int(ckpt)} ctx={c:>6}: {results[(mode, ckpt)][c]}",
                  file=sys.stderr, flush=True)

    cap = f"capped at {CAP_GIB} GiB" if total > CAP_GIB else "uncapped"
    lines = [f"# TinyLlama-1.1B-shaped Llama, bf16, batch 1, SDPA; one training step "
             f"(forward+backward, no optimizer) on {dev} ({total:.0f} GiB, {cap}); "
             f"{time.strftime('%Y-%m-%d')}; recompute tile {a.tile} tokens",
             "# peak above weights+grads (GiB) / step time (s)", ""]
    hdr = f"{'mode':<15}{'ckpt':<6}" + "".join(f"{c:>17}" for c in contexts)
    lines += [hdr, "-" * len(hdr)]
    base_w, fits = None, {}
    for mode, ckpt in combos:
        cells = []
        for ctx in contexts:
            r = results[(mode, ckpt)][ctx]
            if r["status"] == "ok":
                base_w = r["weights_gib"]
                cells.append(f"{r['peak_above_wg_gib']:7.2f}/{r['step_s']:6.2f}s")
                for budget in (16, CAP_GIB):
                    if r["peak_gib"] <= budget:
                        fits[(mode, ckpt, budget)] = ctx
            else:
                s = r["status"]
                cells.append("OOM" if s == "OOM" else ("skip" if s.startswith("skipped")
                                                       else s[:15]))
        lines.append(f"{mode:<15}{('yes' if ckpt else 'no'):<6}" +
                     "".join(f"{c:>17}" for c in cells))
    lines += ["", "# longest measured context whose whole peak (weights+grads included) fits"]
    for budget in (16, CAP_GIB):
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
        with open(os.path.join(out, "llama_memory.json"), "w") as f:
            json.dump({f"{m}{'+ckpt' if c else ''}": results[(m, c)] for m, c in combos}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
