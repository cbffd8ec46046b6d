"""One training step of a decoder LLM, chunk by chunk along the sequence.

Forward, per layer, over chunks [s, e) of the sequence:
  pass 1: the layer input x goes to the host (the checkpoint); K and V of the whole
          sequence are computed (the only full-length tensors besides the residual);
  pass 2: queries of the chunk attend keys [0, e) (lower-right causal mask), the
          output and its logsumexp go to the host; o_proj, the MLP and both residual
          adds run on the chunk, and the layer output overwrites x in place.
Then the final norm, the LM head and the cross-entropy run by loss chunks; each
chunk's gradient with respect to the last hidden state is computed at once and
written over it, so between forward and backward the GPU keeps one (tokens x hidden)
tensor.

Backward, per layer from the last: K and V are recomputed from the host's x; chunks
are visited from the last to the first, so that when chunk c is done every later
query has already added its part to dK/dV of c's keys.  For chunk c: the MLP and
o_proj part by autograd on the chunk (giving dh and d attention-output), attention's
backward from the kept output and logsumexp (no attention recompute), then the
q/k/v projections, rope and norm by autograd on the chunk; dx overwrites dy in place.
Parameter gradients of a layer are summed over chunks in fp32 and rounded once.

Every token-wise op is the model's own module called on a chunk, so the numbers are
the model's; only attention is run here (attention.py), exactly.

With the sequence split over a process group (Run.sp), each rank runs the above on
its own tokens, a layer's attention through ulysses.py, and the loss and parameter
gradients are summed over the group (sequence_parallel.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..lm_loss import chunk_loss_and_grad
from . import attention, sharding, ulysses
from . import sequence_parallel as SP
from .host_store import HostStore
from .model import LayerParts, ModelParts


@dataclass
class Run:
    """Everything one step needs besides the tensors autograd tracks."""
    parts: ModelParts
    store: HostStore
    chunks: List[Tuple[int, int]]
    keep_attention: bool
    position_ids: Tensor
    targets: Tensor            # (B, T) already shifted; ignore_index where no target
    ignore_index: int
    denom: Optional[float]
    loss_chunk: int
    params: List[torch.nn.Parameter]
    stats: Dict[str, float] = field(default_factory=dict)
    sp: Optional[SP.SeqPar] = None  # the sequence split over a group (None: one process)


# ---------------------------------------------------------------- the layer's pieces

def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, c, H, D); cos, sin (B or 1, c, D): the same ops as HF's apply_rotary_pos_emb."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return (x * cos) + (_rotate_half(x) * sin)


def _heads(t: Tensor, d: int) -> Tensor:
    return t.view(*t.shape[:-1], -1, d)


def project_q(L: LayerParts, n: Tensor, cos: Tensor, sin: Tensor, d: int) -> Tensor:
    q = _heads(L.q_proj(n), d)
    if L.q_norm is not None:
        q = L.q_norm(q)
    return rope(q, cos, sin)


def project_kv(L: LayerParts, n: Tensor, cos: Tensor, sin: Tensor, d: int):
    k = _heads(L.k_proj(n), d)
    if L.k_norm is not None:
        k = L.k_norm(k)
    return rope(k, cos, sin), _heads(L.v_proj(n), d)


def out_and_mlp(L: LayerParts, x: Tensor, o: Tensor) -> Tuple[Tensor, Tensor]:
    """h = x + o_proj(o); y = h + mlp(norm2(h))."""
    h = x + L.o_proj(o.reshape(*o.shape[:2], -1))
    return h, h + L.mlp(L.norm2(h))


def attention_params(L: LayerParts) -> List[torch.nn.Parameter]:
    mods = [L.norm1, L.q_proj, L.k_proj, L.v_proj, L.q_norm, L.k_norm]
    return [p for m in mods if m is not None for p in m.parameters()]


def mlp_params(L: LayerParts) -> List[torch.nn.Parameter]:
    return [p for m in (L.o_proj, L.norm2, L.mlp) for p in m.parameters()]


def all_params(parts: ModelParts) -> List[torch.nn.Parameter]:
    """Every parameter the step uses, each once (a tied head is the embedding)."""
    seen, out = set(), []
    groups = [list(parts.embed.parameters())]
    for L in parts.layers:
        groups += [attention_params(L), mlp_params(L)]
    groups += [list(parts.final_norm.parameters()), list(parts.lm_head.parameters())]
    for g in groups:
        for p in g:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _trainable(ps: Sequence[torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    return [p for p in ps if p.requires_grad]


def _accumulate(acc: Dict[int, Tensor], ps, gs) -> None:
    for p, g in zip(ps, gs):
        if g is None:
            continue
        a = acc.get(id(p))
        if a is None:
            acc[id(p)] = g.to(torch.float32, copy=True)
        else:
            a += g


# ---------------------------------------------------------------- host layout

def host_specs(parts: ModelParts, B: int, chunks, keep_attention: bool, dtype, sp=None):
    H = parts.embed.weight.shape[1]
    hq, d = parts.num_heads, parts.head_dim
    for layer in range(len(parts.layers)):
        for ci, (s, e) in enumerate(chunks):
            c = e - s
            yield ("x", layer, ci), (B, c, H), dtype
            if keep_attention:
                yield ("o", layer, ci), (B, c, hq, d), dtype
                # split sequence: this rank's heads for every rank's chunk ci (ulysses.py)
                lse = (B, hq, c) if sp is None else (B, hq // sp.size, sp.size * c)
                yield ("lse", layer, ci), lse, torch.float32


def host_bytes_per_token(parts: ModelParts, keep_attention: bool, dtype) -> int:
    es = torch.empty((), dtype=dtype).element_size()
    per_layer = parts.embed.weight.shape[1] * es
    if keep_attention:
        per_layer += parts.num_heads * (parts.head_dim * es + 4)
    return per_layer * len(parts.layers)


# ---------------------------------------------------------------- forward

def _layer_forward(run: Run, li: int, resid: Tensor, cos: Tensor, sin: Tensor,
                   save: bool) -> None:
    P, st = run.parts, run.store
    L = P.layers[li]
    B, T, _ = resid.shape
    d = P.head_dim
    K = resid.new_empty((B, T, P.num_kv_heads, d))
    V = torch.empty_like(K)
    for ci, (s, e) in enumerate(run.chunks):
        x = resid[:, s:e]
        if save:
            st.save(("x", li, ci), x)
        k, v = project_kv(L, L.norm1(x), cos[:, s:e], sin[:, s:e], d)
        K[:, s:e] = k
        V[:, s:e] = v
    for ci, (s, e) in enumerate(run.chunks):
        x = resid[:, s:e]
        q = project_q(L, L.norm1(x), cos[:, s:e], sin[:, s:e], d)
        o, lse = attention.forward(q, K[:, :e], V[:, :e], P.scale)
        if save and run.keep_attention:
            st.save(("o", li, ci), o)
            st.save(("lse", li, ci), lse)
        _, y = out_and_mlp(L, x, o)
        if save:
            st.wait_saved(("x", li, ci))  # x is on the host before y overwrites it
        resid[:, s:e] = y


def _loss(run: Run, resid: Tensor, need_grad: bool, acc: Dict[int, Tensor]) -> Tensor:
    """Mean (or sum / denom) cross-entropy; with need_grad, d loss / d resid is written
    over resid and the head's and final norm's gradients go to acc (fp32)."""
    P = run.parts
    H = resid.shape[-1]
    flat = resid.view(-1, H)
    tgt = run.targets.reshape(-1)
    valid = tgt != run.ignore_index
    scale = run.denom if run.denom is not None else float(valid.sum().item())
    W, b = P.lm_head.weight, P.lm_head.bias
    norm_ps = _trainable(list(P.final_norm.parameters()))
    need_w, need_b = W.requires_grad, b is not None and b.requires_grad
    db = torch.zeros(W.shape[0], dtype=torch.float32, device=W.device) if need_b else None
    dw = torch.zeros(W.shape, dtype=torch.float32, device=W.device) if need_w else None
    total = torch.zeros((), dtype=torch.float32, device=resid.device)
    for s in range(0, flat.shape[0], run.loss_chunk):
        rows = slice(s, s + run.loss_chunk)
        if not need_grad:
            part, _ = chunk_loss_and_grad(P.final_norm(flat[rows]), W, b, tgt[rows],
                                          valid[rows], scale, False)
            total += part
            continue
        with torch.enable_grad():
            hl = flat[rows].detach().requires_grad_()
            n = P.final_norm(hl)
        part, g = chunk_loss_and_grad(n.detach(), W, b, tgt[rows], valid[rows], scale, True,
                                      db)
        total += part
        if need_w:
            dw += g.t().mm(n.detach()).float()
        gs = torch.autograd.grad(n, [hl] + norm_ps, g.mm(W))
        _accumulate(acc, norm_ps, gs[1:])
        flat[rows] = gs[0]
        del g, n, hl, gs
    if need_w:
        acc[id(W)] = dw
    if need_b:
        acc[id(b)] = db
    return total / scale


def forward_step(run: Run, ids: Tensor, need_grad: bool):
    """The loss; with need_grad also (d loss / d last hidden state, fp32 gradients of
    the head and final norm, cos, sin) for the backward."""
    P = run.parts
    resid = F.embedding(ids, P.embed.weight)
    cos, sin = P.rotary(resid, run.position_ids)
    if need_grad:
        run.stats["host_bytes"] = run.store.plan(
            host_specs(P, ids.shape[0], run.chunks, run.keep_attention, resid.dtype, run.sp))
    layer_forward = _layer_forward if run.sp is None else ulysses.layer_forward
    for li in range(len(P.layers)):
        with sharding.gathered(P.layers[li].module):  # FSDP2 units only
            layer_forward(run, li, resid, cos, sin, need_grad)
    acc: Dict[int, Tensor] = {}
    loss = _loss(run, resid, need_grad, acc)
    if run.sp is not None:  # this rank's tokens' share of the mean -> the whole loss
        loss = SP.sum_loss(loss, run.sp)
    return loss, (resid, acc, cos, sin) if need_grad else None


# ---------------------------------------------------------------- backward

def _layer_backward(run: Run, li: int, dY: Tensor, cos: Tensor, sin: Tensor,
                    acc: Dict[int, Tensor]) -> None:
    P, st = run.parts, run.store
    L = P.layers[li]
    B, T, _ = dY.shape
    d, n = P.head_dim, len(run.chunks)
    ps1, ps3 = _trainable(mlp_params(L)), _trainable(attention_params(L))
    # K and V again, from the layer inputs on the host
    K = dY.new_empty((B, T, P.num_kv_heads, d))
    V = torch.empty_like(K)
    nxt = st.load(("x", li, 0))
    for ci, (s, e) in enumerate(run.chunks):
        x = nxt()
        if ci + 1 < n:
            nxt = st.load(("x", li, ci + 1))
        with torch.no_grad():
            k, v = project_kv(L, L.norm1(x), cos[:, s:e], sin[:, s:e], d)
        K[:, s:e] = k
        V[:, s:e] = v
        del x, k, v
    dK = torch.zeros(K.shape, dtype=torch.float32, device=K.device)
    dV = torch.zeros_like(dK)

    def fetch(ci):
        keys = [("x", li, ci)] + ([("o", li, ci), ("lse", li, ci)] if run.keep_attention else [])
        return [st.load(k) for k in keys]

    pending = fetch(n - 1)
    for ci in reversed(range(n)):
        s, e = run.chunks[ci]
        handles = pending
        if ci > 0:
            pending = fetch(ci - 1)
        x = handles[0]()
        cs, sn = cos[:, s:e], sin[:, s:e]
        with torch.enable_grad():
            xl = x.detach().requires_grad_()
            n1 = L.norm1(xl)
            q = project_q(L, n1, cs, sn, d)
            k, v = project_kv(L, n1, cs, sn, d)
        if run.keep_attention:
            o, lse = handles[1](), handles[2]()
        else:  # the one attention pass that keeping the output saves
            o, lse = attention.forward(q.detach(), K[:, :e], V[:, :e], P.scale)
        with torch.enable_grad():
            ol = o.detach().requires_grad_()
            h, y = out_and_mlp(L, x, ol)
            g1 = torch.autograd.grad(y, [h, ol] + ps1, dY[:, s:e])
        dh, do = g1[0], g1[1]
        _accumulate(acc, ps1, g1[2:])
        del h, y, ol, g1
        dq, pieces = attention.backward(do, q.detach(), K[:, :e], V[:, :e], o, lse, P.scale)
        for off, dk, dv in pieces:
            dK[:, off:off + dk.shape[1]] += dk
            dV[:, off:off + dv.shape[1]] += dv
        del pieces, dk, dv, do, o, lse
        # every query at or after s has now added its part to dK, dV of keys [s, e)
        g3 = torch.autograd.grad([q, k, v], [xl] + ps3,
                                 [dq, dK[:, s:e].to(k.dtype), dV[:, s:e].to(v.dtype)])
        _accumulate(acc, ps3, g3[1:])
        dY[:, s:e] = dh + g3[0]
        del g3, dq, q, k, v, n1, xl, x, dh
    # the layer is done: its gradients rounded once to the dtype they are returned in now,
    # so that only one layer's fp32 sums live at a time
    for p in ps1 + ps3:
        if id(p) in acc:
            acc[id(p)] = acc[id(p)].to(sharding.grad_dtype(p))


class LongContextLM(torch.autograd.Function):
    """forward(run, ids, *params) -> loss (fp32 scalar); gradients for params."""

    @staticmethod
    def forward(ctx, run: Run, ids: Tensor, *params):
        loss, keep = forward_step(run, ids, True)
        ctx.save_for_backward(ids)
        ctx.run, ctx.keep = run, keep
        return loss

    @staticmethod
    def backward(ctx, gout):
        run, (ids,) = ctx.run, ctx.saved_tensors
        dY, acc, cos, sin = ctx.keep
        ctx.keep = None
        P = run.parts
        dY.mul_(gout.to(dY.dtype))
        for key in list(acc):  # the head's and final norm's parts were made for gout = 1
            acc[key] *= gout
        layer_backward = _layer_backward if run.sp is None else ulysses.layer_backward
        for li in reversed(range(len(P.layers))):
            L = P.layers[li]
            with sharding.gathered(L.module):
                layer_backward(run, li, dY, cos, sin, acc)
                if sharding.is_sharded(L.module):  # FSDP2 reduce-scatters these later
                    sharding.hand_over(acc, _trainable(attention_params(L) + mlp_params(L)))
        We = P.embed.weight
        if We.requires_grad:
            ge = torch.zeros(We.shape, dtype=torch.float32, device=We.device)
            H = dY.shape[-1]
            flat_ids, flat = ids.reshape(-1), dY.view(-1, H)
            step = max(run.loss_chunk, 1)
            for s in range(0, flat.shape[0], step):
                ge.index_add_(0, flat_ids[s:s + step], flat[s:s + step].float())
            if P.embed.padding_idx is not None:  # nn.Embedding gives that row no gradient
                ge[P.embed.padding_idx] = 0
            if id(We) in acc:  # tied head: its gradient was accumulated under this id
                ge += acc[id(We)]
            acc[id(We)] = ge
        del dY
        if run.sp is not None:  # the layers' gradients were summed per layer
            SP.sum_grads(acc, [p for m in (P.embed, P.final_norm, P.lm_head)
                               for p in m.parameters()], run.sp)
        grads = [acc[id(p)].to(sharding.grad_dtype(p)) if (p.requires_grad and id(p) in acc)
                 else None
                 for p in run.params]
        return (None, None, *grads)
