#!/usr/bin/env python3
"""The surgery and the long-context mode under DDP and FSDP2: loss and every parameter
gradient of a 2-process step equal to one process's step on the same global batch.

On the lent 2-GPU machine (NCCL, bf16, a 4-layer Llama at 4k tokens per GPU), with
libunswag built for CUDA (tests/gpu/run_multi_gpu.sh builds it and runs this):

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 \\
    PYTHONPATH=python UNSWAG_LIBRARY=build-gpu/libunswag.so \\
      torchrun --standalone --nproc-per-node 2 tests/gpu/test_multi_gpu.py

On the CPU (gloo, fp32, tiny models; what tests/python/test_torch_distributed.py runs):

    torchrun --standalone --nproc-per-node 2 tests/gpu/test_multi_gpu.py --device cpu

Rank 0 also runs the 1-process reference of each case (the same patched model, unwrapped,
on the whole global batch).  Every rank takes its half of the batch; DDP averages the
gradients, FSDP2 reduce-scatters (averages) them into the shards, which are gathered
back (``DTensor.full_tensor``) for the comparison.  Criteria:
  fp32: relative error of the loss and of each gradient (norm) <= 1e-5;
  bf16 (and FSDP2 mixed precision): the 2-process run's relative error against an fp32
  1-process reference <= 1.25x the 1-process bf16 run's own error + 2^-9.
Also: the patched model's state_dict has the unpatched model's keys and round-trips
(FSDP2: get/set_model_state_dict with full state dicts through a file; DDP: the inner
module's state_dict), checked by a step of a model loaded over different weights.
Then the long-context mode's sequence parallelism (multi_gpu_sp.py: one sequence split
over the ranks, against one process and the unpatched model) and its refusals.
Last line (rank 0): "N passed, N failed"; with OUT set also $OUT/multi_gpu_tests.txt.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from datetime import timedelta

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # the lent machine needs NVLink multicast off
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

import multi_gpu_sp as sp_cases  # beside this file (sys.path[0] when run as a script)
import torch
import torch.distributed as dist

SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=64)
GPU = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
           num_key_value_heads=2, vocab_size=1024)

# name -> (family, surgery keyword arguments)
MODELS = {
    "gpt2-codes": ("gpt2", dict(bits=2)),
    "llama-fused": ("llama", dict(gated="fused")),
    "llama-recompute-chunked": ("llama", dict(gated="recompute", tile_tokens=8,
                                              lm_loss="chunked")),
    "llama-long": ("llama", "long"),
}
# (model, wrapper, state_dict round trip)
CASES = [(m, w, False) for m in MODELS for w in ("ddp", "fsdp")] + [
    ("llama-long", "fsdp-mp", False), ("llama-fused", "ddp", True),
    ("llama-long", "fsdp", True)]


def build(name, shape, seq, seed, dtype, chunk, patched=True, **long_kw):
    """A random-weight model of `name` with its surgery applied (patched=False: without;
    long_kw: more LongContextConfig fields for the long-context models)."""
    import transformers as T

    from unswag import apply_unswag_surgery
    family, kw = MODELS[name]
    if family == "gpt2":
        cfg = T.GPT2Config(n_embd=shape["hidden_size"], n_layer=shape["num_hidden_layers"],
                           n_head=shape["num_attention_heads"], vocab_size=shape["vocab_size"],
                           n_positions=max(seq, 64), resid_pdrop=0.0, embd_pdrop=0.0,
                           attn_pdrop=0.0)
    else:
        cfg = T.LlamaConfig(**shape, max_position_embeddings=max(seq, 64))
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float()
    with torch.no_grad():
        for p in model.parameters():  # far from the init's symmetric values
            p.normal_(0, 0.02 if shape is GPU else 0.2)
    model = model.to(dtype).train()
    if not patched:
        return model
    if kw == "long":
        from unswag.torch.long_context import LongContextConfig
        apply_unswag_surgery(model, long_context=LongContextConfig(
            **dict(dict(chunk_tokens=chunk, loss_chunk_tokens=chunk, keep_attention=True),
                   **long_kw)))
    else:
        if "tile_tokens" in kw:  # several tiles per sequence, on either device
            kw = dict(kw, tile_tokens=chunk)
        apply_unswag_surgery(model, **kw)
    return model


def layers_of(model):
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def global_batch(vocab, seq, world, per_rank=2):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (world * per_rank, seq), generator=g)


def step(model, ids):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach()


def plain_grads(model):
    return {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()
            if p.grad is not None}


def wrap(model, how, device):
    """DDP, or FSDP2 per decoder layer and on the model (its recipe)."""
    if how == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy()
    if how == "fsdp-mp":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in layers_of(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def gathered_grads(model, how):
    """Every parameter's full gradient (the same on every rank), by its unwrapped name."""
    inner = model.module if how == "ddp" else model
    out = {}
    for n, p in inner.named_parameters():
        g = p.grad
        if g is None:
            continue
        if hasattr(g, "full_tensor"):  # an FSDP2 shard: torch gathers it
            g = g.full_tensor()
        out[n] = g.detach().float().cpu()
    return out


def rel(a, b, floor):
    return ((a.double() - b.double()).norm() / max(b.double().norm().item(), floor)).item()


def full_state_dict(model, how):
    if how == "ddp":
        return {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def load_state(model, how, sd):
    if how == "ddp":
        model.module.load_state_dict(sd, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True,
                                                             broadcast_from_rank0=True))


def run_case(a, name, how, roundtrip, device, tmp):
    """(ok, message) on rank 0; (None, '') elsewhere."""
    rank, world = dist.get_rank(), dist.get_world_size()
    shape = SMALL if a.device == "cpu" else GPU
    seq, chunk = (16, 8) if a.device == "cpu" else (4096, 1024)
    per_rank = 2 if a.device == "cpu" else 1
    dtype = torch.float32 if (a.dtype == "fp32" or how == "fsdp-mp") else torch.bfloat16
    bf16_noise = a.dtype == "bf16" or how == "fsdp-mp"
    ids = global_batch(shape["vocab_size"], seq, world, per_rank).to(device)
    mine = ids[rank * per_rank:(rank + 1) * per_rank]

    ref = None
    if rank == 0:  # the 1-process reference(s) on the whole batch
        m = build(name, shape, seq, 0, torch.float32, chunk).to(device)
        ref = (step(m, ids).float().cpu(), plain_grads(m))
        del m
        if bf16_noise:
            m = build(name, shape, seq, 0, torch.bfloat16, chunk).to(device)
            one = (step(m, ids).float().cpu(), plain_grads(m))
            del m
    dist.barrier()

    path = os.path.join(tmp, f"{name}-{how}.pt")
    model = build(name, shape, seq, 123 if roundtrip else 0, dtype, chunk).to(device)
    if roundtrip:
        # the state dict of a patched, wrapped model of the reference weights, saved to a
        # file and loaded into this model (other weights) wrapped the same way
        src = wrap(build(name, shape, seq, 0, dtype, chunk).to(device), how, device)
        sd = full_state_dict(src, how)
        if rank == 0:
            torch.save(sd, path)
        del src
        dist.barrier()
        model = wrap(model, how, device)
        sd = torch.load(path) if (rank == 0 or how == "ddp") else {}
        load_state(model, how, sd)
    else:
        model = wrap(model, how, device)
    loss = step(model, mine).float()
    dist.all_reduce(loss)  # equal token counts per rank: the global mean is the mean
    loss = (loss / world).cpu()
    got = gathered_grads(model, how)
    if rank != 0:
        return None, ""

    msgs = []
    if roundtrip:
        keys = set(torch.load(path).keys())
        unpatched = set(_unpatched_state_keys(name, shape, seq))
        if keys != unpatched:
            msgs.append(f"state_dict keys differ from the unpatched model's: "
                        f"{sorted(keys ^ unpatched)[:4]}")
    l0, g0 = ref
    floor = 1e-5 * max(v.double().norm().item() for v in g0.values())
    if got.keys() != g0.keys():
        msgs.append(f"gradients of {sorted(set(g0) ^ set(got))[:4]} missing or extra")
    errs = {n: rel(got[n], g0[n], floor) for n in g0 if n in got}
    lerr = abs(float(loss) - float(l0)) / abs(float(l0))
    if bf16_noise:
        l1, g1 = one
        bound = {n: 1.25 * rel(g1[n], g0[n], floor) + 2 ** -9 for n in g0}
        lbound = 1.25 * abs(float(l1) - float(l0)) / abs(float(l0)) + 2 ** -9
    else:
        bound = {n: 1e-5 for n in g0}
        lbound = 1e-5
    if lerr > lbound:
        msgs.append(f"loss {float(loss):.6f} vs {float(l0):.6f} (rel {lerr:.1e} > {lbound:.1e})")
    bad = [n for n in errs if errs[n] > bound[n]]
    for n in bad[:4]:
        msgs.append(f"{n}: rel err {errs[n]:.2e} > {bound[n]:.2e}")
    worst = max(errs.values()) if errs else float("nan")
    detail = f"loss rel {lerr:.1e}, {len(errs)} grads, worst rel {worst:.1e}"
    return not msgs, detail + ("" if not msgs else " | " + "; ".join(msgs))


def refusals(device):
    """The layouts the long-context mode cannot run are refused, naming why."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    shape = SMALL if device.type == "cpu" else GPU
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    ids = global_batch(shape["vocab_size"], 16, 1, 1).to(device)
    msgs = []
    for where, want in (("mlp", "inside the model"), ("layers", "the model is not")):
        m = build("llama-long", shape, 16, 0, torch.float32, 8).to(device)
        if where == "mlp":
            fully_shard(m.model.layers[0].mlp, mesh=mesh)
            fully_shard(m, mesh=mesh)
        else:
            for layer in m.model.layers:
                fully_shard(layer, mesh=mesh)
        try:
            m(input_ids=ids, labels=ids)
            msgs.append(f"fully_shard on {where}: not refused")
        except NotImplementedError as e:
            if want not in str(e):
                msgs.append(f"fully_shard on {where}: {e}")
    return not msgs, "; ".join(msgs) or "both refused with the reason"


def _unpatched_state_keys(name, shape, seq):
    import transformers as T
    family = MODELS[name][0]
    if family == "gpt2":
        cfg = T.GPT2Config(n_embd=shape["hidden_size"], n_layer=shape["num_hidden_layers"],
                           n_head=shape["num_attention_heads"], vocab_size=shape["vocab_size"],
                           n_positions=max(seq, 64))
    else:
        cfg = T.LlamaConfig(**shape, max_position_embeddings=max(seq, 64))
    return T.AutoModelForCausalLM.from_config(cfg).state_dict().keys()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                    help="of the 2-process model (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--cases", nargs="*", default=None,
                    help="e.g. llama-long:fsdp sp-gqa:none (the refusals always run)")
    a = ap.parse_args(argv)
    a.dtype = a.dtype or ("bf16" if a.device == "cuda" else "fp32")
    rank = int(os.environ.get("RANK", 0))
    if a.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=device, timeout=timedelta(seconds=600))
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    me = sys.modules[__name__]
    runs = [(f"{n} {w}" + (" state_dict round trip" if rt else ""),
             lambda n=n, w=w, rt=rt: run_case(a, n, w, rt, device, tmp))
            for n, w, rt in CASES if a.cases is None or f"{n}:{w}" in a.cases
            or f"{n}:{w}:roundtrip" in a.cases]
    runs += [(f"llama-long sequence parallel, {h}, {w}, keep_attention={k}, {sl}",
              lambda c=(h, w, k, sl): sp_cases.run_case(me, a, *c, device))
             for (h, w, k, sl), key in zip(sp_cases.CASES, sp_cases.case_names())
             if a.cases is None or key in a.cases]
    runs.append(("long-context sequence parallelism refusals",
                 lambda: sp_cases.refusals(me, a, device)))
    passed = failed = 0
    lines = []
    tmp = tempfile.mkdtemp(prefix="unswag-mgpu-") if rank == 0 else None
    holder = [tmp]
    dist.broadcast_object_list(holder, src=0)
    tmp = holder[0]
    for label, fn in runs:
        try:
            ok, detail = fn()
        except Exception:
            ok, detail = False, traceback.format_exc(limit=6).strip().replace("\n", " | ")
            if rank != 0:
                print(f"rank {rank}: {label}: {detail}", file=sys.stderr, flush=True)
        if rank == 0:
            passed += bool(ok)
            failed += not ok
            line = f"{'PASS' if ok else 'FAIL'} {label}: {detail}"
            lines.append(line)
            print(line, flush=True)
    ok, detail = refusals(device)
    if rank == 0:
        passed += ok
        failed += not ok
        lines.append(f"{'PASS' if ok else 'FAIL'} long-context layouts FSDP2 cannot run: {detail}")
        print(lines[-1], flush=True)
        lines.append(f"{passed} passed, {failed} failed")
        print(lines[-1], flush=True)
        out = os.environ.get("OUT")
        if out:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "multi_gpu_tests.txt"), "w") as f:
                f.write(f"# {torch.__version__}, {a.device}, {a.dtype}, world "
                        f"{dist.get_world_size()}\n" + "\n".join(lines) + "\n")
    dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
