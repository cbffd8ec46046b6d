#!/usr/bin/env python3
"""Long-context training step, UnSwag against its peers, in one run on one GPU.

TinyLlama-1.1B shape (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads,
vocab 32000), random weights, bf16, batch 1, one training step (forward + backward, no
optimizer).  Modes (each in a subprocess of its own, contexts swept upward, stopping at
the first failure):

  hf+ckpt              Hugging Face (SDPA) + non-reentrant gradient checkpointing
  liger+ckpt           Liger Kernel (rope, RMSNorm, SwiGLU, fused linear cross-entropy) + ckpt
  liger-tiled+ckpt     the same with Liger's TiledMLP (LigerTiledSwiGLUMLP)
  liger-tiled+offload  the same, reentrant checkpointing inside
                       torch.autograd.graph.save_on_cpu(pin_memory=True)
  unswag-prev+ckpt     UnSwag's previous best: gated="recompute", lm_loss="chunked" + ckpt
  unswag-long          apply_unswag_surgery(model, long_context=True)
  unswag-long+norm     the same with LongContextConfig(norm="unswag"): libunswag's RMSNorm

Printed per (mode, context): whole peak (torch.cuda.max_memory_allocated), peak above
weights+grads, step time, host bytes held (pinned), and the slope of the peak per token
between measured contexts.  Contexts up to 64k run two steps and report the second;
longer ones run one (the process is warm from the shorter contexts), except the Liger
offload mode up to 128k, which runs two so that its pinned buffers exist before the
timed step; UnSwag's long-context mode reserves its host memory before timing
(unswag.torch.long_context.reserve_host_memory).  At 256k and beyond the Liger offload
mode's single step includes its first-use pinned allocations.  A mode whose
package is missing (Liger) is skipped, saying so.  The process is capped with
torch.cuda.set_per_process_memory_fraction (--cap GiB).

    python bench/gpu/bench_long_context.py --contexts 16384 32768 --modes hf+ckpt unswag-long
    python bench/gpu/bench_long_context.py --contexts 524288 --modes unswag-long --cap 16

Writes $OUT/long_context.txt, .json and a PNG plot of peak memory against context
when OUT is set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_shapes import TINY, TINYLLAMA  # found in this script's folder (no package)
from sweep import run_child

MODES = ["hf+ckpt", "liger+ckpt", "liger-tiled+ckpt", "liger-tiled+offload",
         "unswag-prev+ckpt", "unswag-long", "unswag-long+norm"]
CONTEXTS = [16384, 32768, 65536, 131072, 262144]
GIB = 2 ** 30
DEVICE = "cuda"  # the CPU smoke test overrides this


def build_model(mode: str, max_ctx: int, dev, small: bool = False):
    import torch
    import transformers as T
    shape = TINY if small else TINYLLAMA  # tiny: the CPU smoke test
    cfg = T.LlamaConfig(**shape, max_position_embeddings=max(max_ctx, 2048), rms_norm_eps=1e-5)
    if mode.startswith("liger"):
        from liger_kernel.transformers import apply_liger_kernel_to_llama
        apply_liger_kernel_to_llama()  # class-level patches: before the model is built
    torch.manual_seed(0)
    with dev:
        model = T.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                torch_dtype=torch.bfloat16)
    model.train()
    if mode.startswith("liger-tiled"):
        from liger_kernel.transformers.tiled_mlp import LigerTiledSwiGLUMLP
        for layer in model.model.layers:
            old = layer.mlp
            new = LigerTiledSwiGLUMLP(cfg)
            new.gate_proj, new.up_proj, new.down_proj = old.gate_proj, old.up_proj, old.down_proj
            layer.mlp = new
    if mode.startswith("unswag-prev"):
        from unswag import apply_unswag_surgery
        apply_unswag_surgery(model, gated="recompute", tile_tokens=4096, lm_loss="chunked")
    if mode.startswith("unswag-long"):
        from unswag import apply_unswag_surgery
        from unswag.torch.long_context import LongContextConfig
        cfg = LongContextConfig(norm="unswag" if mode.endswith("+norm") else "model")
        print(apply_unswag_surgery(model, long_context=cfg), file=sys.stderr)
    if mode.endswith("+ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode.endswith("+offload"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    return model


class _Offload:
    """torch.autograd.graph.save_on_cpu(pin_memory=True), counting the bytes it moves."""

    def __init__(self):
        import torch
        self.ctx = torch.autograd.graph.save_on_cpu(pin_memory=True)
        self.bytes = 0
        pack = self.ctx.pack_hook

        def counting(t):
            self.bytes += t.numel() * t.element_size()
            return pack(t)
        self.ctx.pack_hook = counting

    def __enter__(self):
        return self.ctx.__enter__()

    def __exit__(self, *a):
        return self.ctx.__exit__(*a)


def child(mode: str, contexts, cap: float, small: bool = False):
    import contextlib

    import torch
    dev = torch.device(DEVICE)
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        if total > cap * GIB:
            torch.cuda.set_per_process_memory_fraction(cap * GIB / total)
    model = build_model(mode, max(contexts), dev, small)
    wbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = model.config.vocab_size
    for ctx in contexts:
        ids = torch.randint(0, vocab, (1, ctx), device=dev)
        res = {"ctx": ctx}
        try:
            times, peak, host = [], 0, 0
            if mode.startswith("unswag-long"):  # page-lock the host memory before the timed steps
                from unswag.torch.long_context import reserve_host_memory
                reserve_host_memory(model, ctx)
            # two steps (the second timed) where affordable, and for the offload modes up
            # to 128k so that their pinned host memory is allocated before the timed step
            for _ in range(2 if ctx <= 65536 or (mode.endswith("offload")
                                                 and ctx <= 131072) else 1):
                model.zero_grad(set_to_none=True)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                off = _Offload() if mode.endswith("+offload") else contextlib.nullcontext()
                t0 = time.perf_counter()
                with off:
                    loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                if dev.type == "cuda":
                    peak = max(peak, torch.cuda.max_memory_allocated())
                host = getattr(off, "bytes", 0)
                del loss
            if mode.startswith("unswag-long"):
                from unswag.torch.long_context import host_bytes, last_step
                host = host_bytes(model)
                res["keep_attention"] = last_step(model).get("keep_attention")
            res.update(status="ok", weights_gib=wbytes / GIB, peak_gib=peak / GIB,
                       peak_above_wg_gib=(peak - 2 * wbytes) / GIB, step_s=times[-1],
                       steps=len(times), host_gib=host / GIB)
        except torch.cuda.OutOfMemoryError:
            res["status"] = "OOM"
        print("RESULT " + json.dumps(res), flush=True)
        if res["status"] != "ok":
            return
        model.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def run_mode(mode, contexts, cap, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--cap", str(cap),
           "--contexts", *map(str, contexts)]
    return run_child(cmd, contexts, timeout)


def _have(mod: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(mod) is not None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--contexts", type=int, nargs="*", default=CONTEXTS)
    ap.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    ap.add_argument("--cap", type=float, default=80.0, help="GiB the process may use")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    a = ap.parse_args()
    contexts = sorted(a.contexts)
    if a.child:
        child(a.child, contexts, a.cap)
        return 0

    import torch
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    versions = f"torch {torch.__version__}"
    if _have("liger_kernel"):
        from importlib.metadata import version
        versions += f", liger-kernel {version('liger-kernel')}"
    start = time.time()
    results = {}
    for _i, mode in enumerate(a.modes):
        if mode.startswith("liger") and not _have("liger_kernel"):
            results[mode] = {c: {"status": "skipped (liger-kernel not installed)"}
                             for c in contexts}
            continue
        left = a.budget - (time.time() - start)
        if left < 15:
            results[mode] = {c: {"status": "skipped (time budget)"} for c in contexts}
            continue
        results[mode], err = run_mode(mode, contexts, a.cap, left)
        for c in contexts:
            print(f"  {mode:<20} ctx={c:>7}: {results[mode][c]}", file=sys.stderr, flush=True)
        if any(r["status"].startswith("error") for r in results[mode].values()):
            print(err[-3000:], file=sys.stderr)

    lines = [f"# TinyLlama-1.1B shape, bf16, batch 1, one training step on {dev}, process "
             f"capped at {a.cap:g} GiB; {versions}; {time.strftime('%Y-%m-%d')}",
             "# whole peak GiB / above weights+grads GiB / step s / host GiB "
             "(2nd of 2 steps up to 64k, and up to 128k for liger-tiled+offload; "
             "else 1 step)", ""]
    for mode in a.modes:
        lines.append(mode)
        prev = None
        for c in contexts:
            r = results[mode][c]
            if r["status"] != "ok":
                lines.append(f"  {c:>7}: {r['status']}")
                continue
            slope = ""
            if prev is not None:
                kb = (r["peak_gib"] - prev[1]) * GIB / (c - prev[0]) / 1024
                slope = f"  slope {kb:6.1f} KB/token since {prev[0]}"
            lines.append(f"  {c:>7}: {r['peak_gib']:6.2f} / {r['peak_above_wg_gib']:6.2f} / "
                         f"{r['step_s']:7.2f} s / host {r['host_gib']:6.2f}{slope}")
            prev = (c, r["peak_gib"])
    lines.append(f"# wall time {time.time() - start:.0f} s")
    text = "\n".join(lines)
    print(text)
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"long_context{a.tag}.txt"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(out, f"long_context{a.tag}.json"), "w") as f:
            json.dump({"device": dev, "versions": versions, "cap_gib": a.cap,
                       "results": results}, f, indent=1)
        plot(results, a.modes, contexts, os.path.join(out, f"long_context{a.tag}.png"), dev)
    return 0


def plot(results, modes, contexts, path, dev):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode in modes:
        pts = [(c, results[mode][c]["peak_gib"]) for c in contexts
               if results[mode][c].get("status") == "ok"]
        if pts:
            ax.plot([p[0] / 1024 for p in pts], [p[1] for p in pts], marker="o", label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context (k tokens)")
    ax.set_ylabel("whole peak GPU memory (GiB)")
    ax.set_title(f"TinyLlama-1.1B shape, one training step, {dev}")
    ax.axhline(16, color="grey", lw=0.8, ls="--")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
