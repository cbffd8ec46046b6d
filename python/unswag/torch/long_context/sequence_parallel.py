"""Sequence parallelism for the long-context mode: one sequence split over a process group.

Ulysses' scheme (DeepSpeed's DistributedAttention), with torch.distributed's own
collectives and no communication code of ours: rank r of a group of P holds tokens
[r*T/P, (r+1)*T/P) of every sequence of the batch.  Everything token-wise (norms,
projections, rope at the global positions, MLP, loss) runs on the local tokens; per
layer, all-to-alls turn the local k, v (T/P tokens, all heads) into the whole sequence
for Hkv/P heads, and each chunk of local queries into every rank's same chunk for H/P
heads; the engine's causal attention runs on those, and an all-to-all brings the output
back to the local tokens.  The backward mirrors it (ulysses.py).  Hence P must divide
the number of KV heads.

What this file holds: the group's description for one call, the two layout changes,
the label shift across slice boundaries, the global target count and the sums of the
loss and of the parameter gradients over the group; and ``split_sequence`` for users.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SeqPar:
    """One call's view of the group: size, this rank, the whole sequence's length."""
    group: object
    size: int
    rank: int
    total: int


def check_group(group) -> None:
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError("LongContextConfig.sequence_parallel must be a "
                        f"torch.distributed.ProcessGroup or None, got {type(group).__name__}")


def check_model(parts, group) -> None:
    """P must divide the query and the KV heads: each rank attends whole heads."""
    P = dist.get_world_size(group)
    if parts.num_kv_heads % P or parts.num_heads % P:
        raise ValueError(
            f"unswag long-context mode: sequence parallelism over {P} processes needs the "
            f"number of KV heads ({parts.num_kv_heads}) and of attention heads "
            f"({parts.num_heads}) to be multiples of {P} (each process attends whole heads "
            "over the whole sequence); use a group whose size divides them")


def describe(group, local: int) -> SeqPar:
    """The SeqPar of a call whose ranks hold `local` tokens of each sequence."""
    P, r = dist.get_world_size(group), dist.get_rank(group)
    if r < 0:
        raise ValueError("unswag long-context mode: this process is not a member of the "
                         "sequence-parallel group")
    return SeqPar(group, P, r, P * local)


def check_shapes(sp: SeqPar, B: int, local: int, device) -> None:
    """Every rank must hold the same (batch, tokens): the all-to-alls exchange equal parts."""
    mine = torch.tensor([B, local], dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(sp.size)]
    dist.all_gather(every, mine, group=sp.group)
    if any(not torch.equal(t, mine) for t in every):
        shapes = [tuple(int(v) for v in t.tolist()) for t in every]
        raise ValueError("unswag long-context mode: under sequence parallelism every rank "
                         "holds the same number of sequences and tokens (its slice of each "
                         f"sequence); got (batch, tokens) {shapes} (see split_sequence)")


def positions(sp: SeqPar, local: int, device) -> Tensor:
    """Global positions of this rank's tokens (rope sees the whole sequence's)."""
    return torch.arange(sp.rank * local, (sp.rank + 1) * local, device=device).unsqueeze(0)


# ---------------------------------------------------------------- the two layouts

def to_heads(x: Tensor, sp: SeqPar) -> Tensor:
    """(B, T/P, h, D) of this rank's tokens -> (B, T, h/P, D): the whole sequence, heads
    [r*h/P, (r+1)*h/P)."""
    B, n, h, D = x.shape
    P = sp.size
    send = x.reshape(B, n, P, h // P, D).permute(2, 0, 1, 3, 4).contiguous()
    got = torch.empty_like(send)  # got[i]: rank i's tokens, my heads
    dist.all_to_all_single(got, send, group=sp.group)
    return got.permute(1, 0, 2, 3, 4).reshape(B, P * n, h // P, D)


def to_tokens(x: Tensor, sp: SeqPar) -> Tensor:
    """The inverse: (B, T, h/P, D) of this rank's heads -> (B, T/P, h, D)."""
    B, T, hp, D = x.shape
    P = sp.size
    send = x.reshape(B, P, T // P, hp, D).permute(1, 0, 2, 3, 4).contiguous()
    got = torch.empty_like(send)  # got[i]: my tokens, rank i's heads
    dist.all_to_all_single(got, send, group=sp.group)
    return got.permute(1, 2, 0, 3, 4).reshape(B, T // P, P * hp, D)


# ---------------------------------------------------------------- loss and gradients

def shift_labels(labels: Tensor, ignore: int, sp: SeqPar) -> Tensor:
    """labels shifted by one token over the whole sequence: the last token of rank r's
    slice predicts the first label of rank r+1's (the last rank's last has none)."""
    first = labels[:, :1].contiguous()
    every = [torch.empty_like(first) for _ in range(sp.size)]
    dist.all_gather(every, first, group=sp.group)
    nxt = every[sp.rank + 1] if sp.rank + 1 < sp.size else torch.full_like(first, ignore)
    return torch.cat([labels[:, 1:], nxt], dim=1)


def target_count(targets: Tensor, ignore: int, sp: SeqPar) -> float:
    """The number of targets of the whole sequence (the loss is their mean)."""
    n = (targets != ignore).sum().to(torch.float64).reshape(1)
    dist.all_reduce(n, group=sp.group)
    return float(n.item())


def sum_loss(loss: Tensor, sp: SeqPar) -> Tensor:
    """Each rank's loss is its tokens' share of the mean; every rank returns the sum."""
    total = loss.detach().clone()
    dist.all_reduce(total, group=sp.group)
    return total


def sum_grads(acc: Dict[int, Tensor], params, sp: SeqPar) -> None:
    """Sums the fp32 gradient sums of `params` in acc over the group, in one call: each
    rank computed the gradient of its own tokens' part of the loss."""
    seen, keys = set(), []
    for p in params:
        if id(p) in acc and id(p) not in seen:
            seen.add(id(p))
            keys.append(id(p))
    if not keys:
        return
    flat = torch.cat([acc[k].reshape(-1) for k in keys])
    dist.all_reduce(flat, group=sp.group)
    off = 0
    for k in keys:
        n = acc[k].numel()
        acc[k] = flat[off:off + n].view_as(acc[k])
        off += n


# ---------------------------------------------------------------- for users

def split_sequence(input_ids: Tensor, labels: Tensor | None = None, group=None,
                   ignore_index: int = -100) -> Dict[str, Tensor]:
    """This rank's slice of (batch, T) input_ids and labels (default: input_ids), for
    ``model(**split_sequence(ids, labels, group)).loss``: tokens [r*T/P, (r+1)*T/P) and
    their targets, the labels shifted over the whole sequence before splitting (so the
    last token of a slice predicts the first of the next), as ``shift_labels``.  T must
    be a multiple of the group's size.  Passing each rank's slice of ``labels`` instead
    gives the same targets (the mode shifts across slices itself)."""
    P = dist.get_world_size(group)
    r = dist.get_rank(group)
    T = input_ids.shape[-1]
    if T % P:
        raise ValueError(f"split_sequence: {T} tokens do not split evenly over {P} ranks")
    if labels is None:
        labels = input_ids
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    n = T // P
    return {"input_ids": input_ids[..., r * n:(r + 1) * n],
            "shift_labels": shifted[..., r * n:(r + 1) * n]}


__all__ = ["split_sequence"]
