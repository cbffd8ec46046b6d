"""The sequence-parallel cases of test_multi_gpu.py (which passes itself in as `T` for
its model builder and helpers): the long-context mode with one sequence split over the
ranks (LongContextConfig(sequence_parallel=WORLD), each rank its contiguous slice), the
loss and every parameter gradient equal to one process's long-context step on the
whole sequence and to the unpatched Hugging Face model's; the same gradients on every
rank; plain, under FSDP2 and under DDP over the same ranks; attention outputs kept on
the host and recomputed; labels shifted before splitting (split_sequence) or each rank's
slice of the labels.  Also the refusals: a group size that does not divide the KV heads,
ranks holding different numbers of tokens.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

# (heads, wrapper, keep_attention, how each rank gets its slice)
CASES = [
    ("mha", "none", True, "split_sequence"),
    ("gqa", "none", False, "label slices"),
    ("gqa", "fsdp", True, "split_sequence"),
    ("mha", "ddp", False, "split_sequence"),
]


def case_names():
    return [f"sp-{h}:{w}" for h, w, _, _ in CASES]


def _setup(T, a, heads):
    shape = T.SMALL if a.device == "cpu" else T.GPU
    if heads == "mha":
        shape = dict(shape, num_key_value_heads=shape["num_attention_heads"])
    # CPU: 2 local chunks per rank, 4 query chunks over the sequence, 2 sequences
    seq, chunk, batch = (32, 8, 2) if a.device == "cpu" else (8192, 1024, 1)
    return shape, seq, chunk, batch


def _slices(ids, how, group):
    from unswag.torch.long_context import split_sequence
    if how == "split_sequence":
        return split_sequence(ids, ids, group)
    n = ids.shape[1] // dist.get_world_size(group)
    r = dist.get_rank(group)
    mine = ids[:, r * n:(r + 1) * n]
    return {"input_ids": mine, "labels": mine}


def _same_on_every_rank(loss, grads, device):
    """The largest relative difference between this rank's loss and gradients and rank
    0's (every rank holds the whole gradient), the same number on every rank.  Compared
    on `device`: NCCL moves CUDA tensors only."""
    names = sorted(grads)
    flat = torch.cat([loss.reshape(1).double()] + [grads[n].reshape(-1).double() for n in names])
    flat = flat.to(device)
    theirs = flat.clone()
    dist.broadcast(theirs, 0)
    d = ((flat - theirs).norm() / theirs.norm()).reshape(1)
    dist.all_reduce(d, op=dist.ReduceOp.MAX)
    return float(d.item())


def run_case(T, a, heads, how, keep, slicing, device):
    """(ok, message) on rank 0; (None, '') elsewhere."""
    rank = dist.get_rank()
    shape, seq, chunk, B = _setup(T, a, heads)
    bf16 = a.dtype == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    ids = T.global_batch(shape["vocab_size"], seq, 1, B).to(device)  # whole sequences
    refs = {}
    if rank == 0:  # one process, whole sequences: long-context mode and Hugging Face
        for label, patched in (("1-process long-context", True), ("unpatched HF", False)):
            m = T.build("llama-long", shape, seq, 0, torch.float32, chunk, patched).to(device)
            refs[label] = (T.step(m, ids).float().cpu(), T.plain_grads(m))
            del m
        if bf16:
            m = T.build("llama-long", shape, seq, 0, torch.bfloat16, chunk).to(device)
            one = (T.step(m, ids).float().cpu(), T.plain_grads(m))
            del m
    dist.barrier()
    group = dist.group.WORLD
    model = T.build("llama-long", shape, seq, 0, dtype, chunk, keep_attention=keep,
                    sequence_parallel=group).to(device)
    if how != "none":
        model = T.wrap(model, how, device)
    model.zero_grad(set_to_none=True)
    batch = _slices(ids, slicing, group)
    loss = model(**batch).loss
    loss.backward()
    loss = loss.detach().float().cpu()
    got = T.gathered_grads(model, how)
    spread = _same_on_every_rank(loss, got, device)
    msgs = []
    if how == "none":  # the loss without gradients; reserving the step's host memory
        from unswag.torch.long_context import last_step, reserve_host_memory
        used = last_step(model)["host_bytes"]
        with torch.no_grad():
            l2 = model(**batch).loss.float().cpu()
        if not torch.equal(l2, loss):
            msgs.append(f"no_grad loss {float(l2)} != {float(loss)}")
        if reserve_host_memory(model, seq, batch=B) != used:  # seq: the whole sequence
            msgs.append(f"reserve_host_memory != the step's {used} host bytes")
    if rank != 0:
        return None, ""
    if spread > 1e-6:
        msgs.append(f"ranks disagree (rel {spread:.1e})")
    worst = {}
    for label, (l0, g0) in refs.items():
        floor = 1e-5 * max(v.double().norm().item() for v in g0.values())
        if got.keys() != g0.keys():
            msgs.append(f"{label}: gradients of {sorted(set(g0) ^ set(got))[:4]} "
                        "missing or extra")
        errs = {n: T.rel(got[n], g0[n], floor) for n in g0 if n in got}
        lerr = abs(float(loss) - float(l0)) / abs(float(l0))
        if bf16:
            l1, g1 = one
            bound = {n: 1.25 * T.rel(g1[n], g0[n], floor) + 2 ** -9 for n in g0}
            lbound = 1.25 * abs(float(l1) - float(l0)) / abs(float(l0)) + 2 ** -9
        else:
            bound, lbound = {n: 1e-5 for n in g0}, 1e-5
        if lerr > lbound:
            msgs.append(f"{label}: loss {float(loss):.6f} vs {float(l0):.6f} "
                        f"(rel {lerr:.1e} > {lbound:.1e})")
        for n in [n for n in errs if errs[n] > bound[n]][:4]:
            msgs.append(f"{label}: {n}: rel err {errs[n]:.2e} > {bound[n]:.2e}")
        worst[label] = (lerr, max(errs.values()) if errs else float("nan"), len(errs))
    detail = "; ".join(f"vs {k}: loss rel {v[0]:.1e}, {v[2]} grads, worst rel {v[1]:.1e}"
                       for k, v in worst.items())
    return not msgs, detail + ("" if not msgs else " | " + "; ".join(msgs))


def refusals(T, a, device):
    """A group size not dividing the KV heads, and unequal slices, are refused."""
    shape, seq, chunk, _ = _setup(T, a, "gqa")
    group, world = dist.group.WORLD, dist.get_world_size()
    msgs = []
    try:
        T.build("llama-long", dict(shape, num_key_value_heads=1), seq, 0, torch.float32,
                chunk, sequence_parallel=group)
        msgs.append("1 KV head over 2 ranks: not refused")
    except ValueError as e:
        if f"multiples of {world}" not in str(e):
            msgs.append(f"1 KV head over 2 ranks: {e}")
    m = T.build("llama-long", shape, seq, 0, torch.float32, chunk,
                sequence_parallel=group).to(device)
    n = 8 * (1 + dist.get_rank())  # every rank a different length
    ids = T.global_batch(shape["vocab_size"], n, 1, 1).to(device)
    try:
        m(input_ids=ids, labels=ids)
        msgs.append("unequal slices: not refused")
    except ValueError as e:
        if "same number of sequences and tokens" not in str(e):
            msgs.append(f"unequal slices: {e}")
    return not msgs, "; ".join(msgs) or "both refused with the reason"
