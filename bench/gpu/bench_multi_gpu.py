#!/usr/bin/env python3
"""Long-context training on 2 GPUs of one host: HF + FSDP2 + checkpointing against
UnSwag's long-context mode + FSDP2, contexts doubling until a GPU runs out of memory.

TinyLlama-1.1B shape as in bench/gpu/bench_long_context.py (hidden 2048, 22 layers, 32
heads, 4 KV heads, vocab 32000), random weights, bf16, one training step (forward +
backward, no optimizer).  FSDP2: ``fully_shard`` on each decoder layer and on the model.
Data parallel modes: every GPU trains its own sequence of `context` tokens, so
tokens/s counts world x context per step.  Sequence-parallel modes (+sp): the GPUs
share one sequence of `context` tokens (each holds context / world of them,
LongContextConfig(sequence_parallel=WORLD), docs/multi_gpu.md), so `context` is the
whole sequence and tokens/s counts context per step.

  hf+fsdp+ckpt        Hugging Face (SDPA) + non-reentrant checkpointing + FSDP2
  unswag-long+fsdp    apply_unswag_surgery(model, long_context=True) + FSDP2
  unswag-long+sp      the long-context mode, one sequence split over the GPUs (weights
                      replicated; the mode sums the gradients over the GPUs)
  unswag-long+fsdp+sp the same with FSDP2 over the same GPUs (weights sharded)
  unswag-long@1gpu    the long-context mode on GPU 0 alone (GPU 1 idles): the 1-GPU
                      figure of the same run, for the tokens/s ratio

Per (mode, cap, context): whole peak per GPU (torch.cuda.max_memory_allocated, every
rank), step time (the slower rank), tokens/s, host bytes pinned per rank.  Contexts up
to 64k run two steps and report the second; longer ones one.  Each GPU is capped with
torch.cuda.set_per_process_memory_fraction (--caps, GiB).  A sweep stops at the first
context that fails on any rank (OOM, host memory) or would not finish within --budget.
On the lent 2-GPU machine (nvidia-h200-x2), from the repository root, one command per
device call (each under 10 minutes; tests/gpu/run_multi_gpu.sh builds libunswag for CUDA
if needed, sets NCCL_NVLS_ENABLE=0 and TORCH_SYMM_MEM_DISABLE_MULTICAST=1, and runs
``torchrun --standalone --nproc-per-node 2 bench/gpu/bench_multi_gpu.py ARGS``):

    bash tests/gpu/run_multi_gpu.sh bench --caps 16 --tag=-16g \
        --contexts 16384 32768 65536 131072 262144
    bash tests/gpu/run_multi_gpu.sh bench --caps 80 --tag=-80g \
        --contexts 16384 32768 65536 131072
    bash tests/gpu/run_multi_gpu.sh bench --caps 16 --tag=-16g-512k \
        --modes unswag-long+fsdp --contexts 524288
    bash tests/gpu/run_multi_gpu.sh bench --caps 16 --tag=-16g-sp \
        --modes unswag-long+fsdp+sp --contexts 262144 524288
    bash tests/gpu/run_multi_gpu.sh bench --caps 16 --tag=-16g-sp-1m \
        --modes unswag-long+fsdp+sp --contexts 1048576 --budget 580

(a 512k step takes about 5 minutes, as on one GPU: every GPU trains its own 512k tokens.
Measured on 2 H200s, 2026-11-30, unswag-long+fsdp+sp: 32 s at 256k, 110 s at 512k, 415 s
at 1048576, so run 1048576 alone in its own call: bench/results/gpu-multi-gpu-*-h200x2-*).
The script sets NCCL_NVLS_ENABLE=0 and TORCH_SYMM_MEM_DISABLE_MULTICAST=1 itself too.
Writes $OUT/multi_gpu{tag}.txt and .json when OUT is set, rewritten after every
context so that a killed run keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_shapes import TINY, TINYLLAMA  # found in this script's folder (no package)

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # the lent machine needs NVLink multicast off
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

MODES = ["hf+fsdp+ckpt", "unswag-long+fsdp", "unswag-long+sp", "unswag-long+fsdp+sp",
         "unswag-long@1gpu"]
CONTEXTS = [16384, 32768, 65536, 131072, 262144, 524288]
GIB = 2 ** 30


def build_model(mode: str, max_ctx: int, dev, small: bool, chunk: int):
    """The model of `mode` on `dev`, patched and sharded (FSDP2 over the default group)."""
    import torch
    import transformers as T
    cfg = T.LlamaConfig(**(TINY if small else TINYLLAMA),
                        max_position_embeddings=max(max_ctx, 2048), rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with dev:
        model = T.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                torch_dtype=torch.bfloat16)
    model.train()
    if mode.startswith("unswag-long"):
        import torch.distributed as dist

        from unswag import apply_unswag_surgery
        from unswag.torch.long_context import LongContextConfig
        kw = dict(chunk_tokens=chunk) if chunk else {}
        if mode.endswith("+sp"):
            kw["sequence_parallel"] = dist.group.WORLD
        apply_unswag_surgery(model, long_context=LongContextConfig(**kw))
    if mode.endswith("+ckpt"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if "+fsdp" in mode:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        mesh = init_device_mesh(dev.type, (dist.get_world_size(),))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def fake_oom_context() -> int:
    """UNSWAG_BENCH_FAKE_OOM_AT (the CPU smoke test's OOM from this context on); 0: off."""
    return int(os.environ.get("UNSWAG_BENCH_FAKE_OOM_AT") or 0)


def _one_context(model, mode, ctx, dev, world, steps):
    """One (or two) training steps of `ctx` tokens on this rank: a result dict."""
    import torch
    cuda = dev.type == "cuda"
    g = torch.Generator().manual_seed(ctx)  # the same sequence on every rank
    ids = torch.randint(0, model.config.vocab_size, (1, ctx), generator=g).to(dev)
    batch = {"input_ids": ids, "labels": ids}
    if mode.endswith("+sp"):  # this rank's slice of the one sequence
        from unswag.torch.long_context import split_sequence
        batch = split_sequence(ids, ids)
    res = {"ctx": ctx}
    hook = None
    fake_oom_at = fake_oom_context()
    if fake_oom_at and ctx >= fake_oom_at:
        def oom(*_):  # the CPU smoke test: an OOM in the middle of a step
            raise torch.cuda.OutOfMemoryError("fake OOM (UNSWAG_BENCH_FAKE_OOM_AT)")
        hook = model.model.norm.register_forward_pre_hook(oom)
    try:
        if mode.startswith("unswag-long"):  # page-lock the host memory before timing
            from unswag.torch.long_context import reserve_host_memory
            reserve_host_memory(model, ctx)
        times, peak = [], 0
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if cuda:
                peak = max(peak, torch.cuda.max_memory_allocated())
            del loss
        host = 0
        if mode.startswith("unswag-long"):
            from unswag.torch.long_context import host_bytes
            host = host_bytes(model)
        res.update(status="ok", peak_gib=peak / GIB, step_s=times[-1], steps=steps,
                   host_gib=host / GIB)
    except torch.cuda.OutOfMemoryError as e:
        res["status"] = "OOM"
        # why and where: the allocator's message and the innermost frames of the step
        res["oom"] = " ".join(str(e).split())[:400]
        res["where"] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                        for f in traceback.extract_tb(e.__traceback__)[-4:]]
    except MemoryError as e:  # unswag's HostMemoryError
        res["status"] = "host memory: " + str(e)[:120]
    if hook is not None:
        hook.remove()
    if res["status"] != "ok" and hasattr(model, "reset_iter_state"):
        model.reset_iter_state()  # FSDP2's recovery after an aborted step
    model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
    return res


def rank_sweep(mode, contexts, cap, dev, small=False, budget=540.0, chunk=0, report=None):
    """This rank's part of one sweep: contexts in order until one fails on any rank or
    would overrun `budget` seconds.  Every rank returns the merged rows (peaks of every
    rank, the slower rank's step time).  `report(rows)` is called after each context."""
    import torch
    import torch.distributed as dist
    rank, world = dist.get_rank(), dist.get_world_size()
    coord = _coordination_group()
    if dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GIB / total), dev)
    alone = mode.endswith("@1gpu")
    active = not alone or rank == 0
    model = build_model(mode, max(contexts), dev, small, chunk) if active else None
    start, rows, last = time.time(), [], None
    for ctx in contexts:
        steps = 2 if ctx <= 65536 else 1
        go = True
        if last is not None:  # attention is quadratic: the next step costs ~4x
            go = time.time() - start + 4.5 * last * steps <= budget
        got = [None] * world
        if go and active:
            res = _one_context(model, mode, ctx, dev, world, steps)
        elif go:
            res = {"ctx": ctx, "status": "idle"}
        else:
            res = {"ctx": ctx, "status": "skipped (time budget)"}
        dist.all_gather_object(got, res, group=coord)
        row = _merge(got, mode, world)
        rows.append(row)
        if report is not None:
            report(rows)
        if row["status"] != "ok":
            break
        last = row["step_s"]
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
    dist.barrier(group=coord)
    return rows


def _merge(got, mode, world):
    mine = [r for r in got if r["status"] != "idle"]
    bad = [r["status"] for r in mine if r["status"] != "ok"]
    ctx = got[0]["ctx"]
    if bad:
        first = next(r for r in mine if r["status"] != "ok")
        return {"ctx": ctx, "status": bad[0],
                **{k: first[k] for k in ("oom", "where") if k in first}}
    gpus = 1 if mode.endswith("@1gpu") else world
    seqs = 1 if mode.endswith("+sp") else gpus  # +sp: the GPUs share one sequence
    step = max(r["step_s"] for r in mine)
    return {"ctx": ctx, "status": "ok", "peak_gib": [r["peak_gib"] for r in mine],
            "step_s": step, "tokens_per_s": seqs * ctx / step, "gpus": gpus,
            "host_gib": [r["host_gib"] for r in mine]}


_COORD = {}


def _coordination_group():
    """A gloo group for the results (never queued behind FSDP's NCCL work), waiting long:
    GPU 1 idles in it while GPU 0 runs the 1-GPU mode."""
    import torch.distributed as dist
    if "g" not in _COORD:
        _COORD["g"] = dist.new_group(backend="gloo", timeout=timedelta(hours=2))
    return _COORD["g"]


def table(results, caps, modes, header):
    lines = [header, "# whole peak GiB per GPU / step s / tokens/s (all GPUs) / host GiB "
             "pinned per GPU; +sp modes: the context is the whole sequence over all GPUs", ""]
    for cap in caps:
        for mode in modes:
            rows = results.get(f"{mode}@{cap:g}")
            if rows is None:
                continue
            lines.append(f"{mode}, cap {cap:g} GiB per GPU")
            for r in rows:
                if r["status"] != "ok":
                    lines.append(f"  {r['ctx']:>7}: {r['status']}")
                    continue
                peaks = " ".join(f"{p:6.2f}" for p in r["peak_gib"])
                host = " ".join(f"{h:6.2f}" for h in r["host_gib"])
                lines.append(f"  {r['ctx']:>7}: {peaks} / {r['step_s']:7.2f} s / "
                             f"{r['tokens_per_s']:9.0f} tok/s / host {host}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    ap.add_argument("--contexts", type=int, nargs="*", default=CONTEXTS)
    ap.add_argument("--caps", type=float, nargs="*", default=[80.0, 16.0],
                    help="GiB each GPU's process may use")
    ap.add_argument("--budget", type=float, default=480.0,
                    help="seconds for the whole run (a device call lasts at most 600)")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: gloo and a tiny model (the CI smoke test)")
    ap.add_argument("--chunk-tokens", type=int, default=0,
                    help="long-context chunk (0: the mode's default)")
    a = ap.parse_args(argv)
    import torch
    import torch.distributed as dist
    small = a.device == "cpu"
    if a.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=dev, timeout=timedelta(minutes=30))
        name = torch.cuda.get_device_name(dev)
    else:
        dev = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timedelta(minutes=5))
        name = "CPU (smoke test, tiny model)"
    rank, world = dist.get_rank(), dist.get_world_size()
    # each rank pins its own host memory for the long-context mode: share the host
    os.environ.setdefault("UNSWAG_HOST_FRACTION", f"{0.9 / world:.3f}")
    contexts = sorted(a.contexts)
    header = (f"# TinyLlama-1.1B shape{' (tiny: smoke test)' if small else ''}, bf16, batch 1 "
              f"per GPU, one training step, {world} x {name}; torch {torch.__version__}; "
              f"{time.strftime('%Y-%m-%d')}")
    results, start = {}, time.time()
    out = os.environ.get("OUT") if rank == 0 else None

    def save():
        if not out:
            return
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"multi_gpu{a.tag}.txt"), "w") as f:
            f.write(table(results, a.caps, a.modes, header) +
                    f"\n# wall time {time.time() - start:.0f} s\n")
        with open(os.path.join(out, f"multi_gpu{a.tag}.json"), "w") as f:
            json.dump({"device": name, "world": world, "torch": torch.__version__,
                       "results": results}, f, indent=1)

    for cap in a.caps:
        for mode in a.modes:
            key = f"{mode}@{cap:g}"
            left = a.budget - (time.time() - start)

            def report(rows, key=key):
                results[key] = rows
                if rank == 0:
                    print("RESULT " + json.dumps({"mode": key, **rows[-1]}), flush=True)
                save()
            if left < 15:
                report([{"ctx": contexts[0], "status": "skipped (time budget)"}])
                continue
            rank_sweep(mode, contexts, cap, dev, small, left, a.chunk_tokens, report)
    if rank == 0:
        print(table(results, a.caps, a.modes, header))
        print(f"# wall time {time.time() - start:.0f} s")
    save()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
