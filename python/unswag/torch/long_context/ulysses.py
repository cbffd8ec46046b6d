"""One decoder layer's forward and backward under sequence parallelism (engine.py's
_layer_forward / _layer_backward when the sequence is split over a group of P ranks).

Rank r holds tokens [r*n, (r+1)*n) of each sequence (n = T/P) and attends heads
[r*H/P, (r+1)*H/P) over the whole sequence.  The engine's structure is kept, with an
all-to-all where a tensor changes hands:
  pass 1: K, V of the local tokens by chunks -> all-to-all -> K, V of the whole sequence
          for this rank's KV heads (the only full-length tensors: 1/P of one process's);
  pass 2, per local chunk c = [s, e): q of the chunk -> all-to-all -> every rank's chunk
          c for this rank's heads, i.e. the queries at positions i*n + [s, e) of every
          rank i; each attends keys [0, i*n + e) (attention.py, lower-right causal mask);
          the outputs go back by a second all-to-all; o_proj, MLP, residuals on the chunk.
So every rank does the same attention work, and only one chunk of q / output is in
flight.  Kept per rank on the host: the layer input and attention output of its chunks,
and per chunk the logsumexp of its heads for those P query pieces.

Backward, local chunks from the last: o_proj + MLP by autograd (dh, d output); d output
to the heads layout; attention's backward of the P pieces from the kept output and
logsumexp, dK / dV summed in fp32; dq back to the local tokens and through q's
projection, rope and norm.  A key's dK / dV is complete only after every chunk (queries
of later ranks, in every chunk, see it), so K's and V's projections get theirs in a last
pass over the chunks, after dK / dV (rounded once, as one process does) go back to the
local tokens.  The layer's parameter gradients (this rank's tokens' part, fp32) are then
summed over the group and rounded once.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from . import attention, sharding
from . import engine as E
from . import sequence_parallel as SP


def _pieces(run, s: int, e: int):
    """(rows of the piece in the heads layout of chunk [s, e), key count) per rank."""
    c, n = e - s, run.sp.total // run.sp.size
    return [(slice(i * c, (i + 1) * c), i * n + e) for i in range(run.sp.size)]


def _attend(run, qh: Tensor, Kh: Tensor, Vh: Tensor, s: int, e: int):
    """Attention of every rank's chunk [s, e) of queries (heads layout) over its prefix."""
    outs, lses = [], []
    for rows, keys in _pieces(run, s, e):
        o, lse = attention.forward(qh[:, rows], Kh[:, :keys], Vh[:, :keys], run.parts.scale)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, dim=1), torch.cat(lses, dim=2)


def _whole_kv(run, li: int, cos, sin, xs):
    """K, V of the whole sequence for this rank's KV heads; xs(ci) gives chunk ci's x."""
    L, d = run.parts.layers[li], run.parts.head_dim
    K = V = None
    for ci, (s, e) in enumerate(run.chunks):
        x = xs(ci)
        k, v = E.project_kv(L, L.norm1(x), cos[:, s:e], sin[:, s:e], d)
        if K is None:
            K = k.new_empty((x.shape[0], run.chunks[-1][1]) + k.shape[2:])
            V = torch.empty_like(K)
        K[:, s:e], V[:, s:e] = k, v
    return SP.to_heads(K, run.sp), SP.to_heads(V, run.sp)


def _loader(run, li: int, keys, order):
    """A function giving, for the chunks visited in `order`, the host slots `keys` of
    each (a list of tensors), the loads for the next chunk issued one chunk ahead."""
    st = run.store

    def fetch(ci):
        return [st.load((k, li, ci)) for k in keys]
    order = list(order)
    state = {"i": 0, "next": fetch(order[0])}

    def get(ci):
        handles = state["next"]
        state["i"] += 1
        if state["i"] < len(order):
            state["next"] = fetch(order[state["i"]])
        return [h() for h in handles]
    return get


def layer_forward(run, li: int, resid: Tensor, cos: Tensor, sin: Tensor, save: bool) -> None:
    st, sp, P = run.store, run.sp, run.parts
    L, d = P.layers[li], P.head_dim

    def xs(ci):
        s, e = run.chunks[ci]
        if save:
            st.save(("x", li, ci), resid[:, s:e])
        return resid[:, s:e]
    Kh, Vh = _whole_kv(run, li, cos, sin, xs)
    for ci, (s, e) in enumerate(run.chunks):
        x = resid[:, s:e]
        q = E.project_q(L, L.norm1(x), cos[:, s:e], sin[:, s:e], d)
        oh, lse = _attend(run, SP.to_heads(q, sp), Kh, Vh, s, e)
        o = SP.to_tokens(oh, sp)
        if save and run.keep_attention:
            st.save(("o", li, ci), o)
            st.save(("lse", li, ci), lse)
        _, y = E.out_and_mlp(L, x, o)
        if save:
            st.wait_saved(("x", li, ci))  # x is on the host before y overwrites it
        resid[:, s:e] = y


def layer_backward(run, li: int, dY: Tensor, cos: Tensor, sin: Tensor,
                   acc: Dict[int, Tensor]) -> None:
    P, sp = run.parts, run.sp
    L, d, n = P.layers[li], P.head_dim, len(run.chunks)
    ps1, ps3 = E._trainable(E.mlp_params(L)), E._trainable(E.attention_params(L))
    with torch.no_grad():  # K and V again, from the layer inputs on the host
        xs = _loader(run, li, ["x"], range(n))
        Kh, Vh = _whole_kv(run, li, cos, sin, lambda ci: xs(ci)[0])
    dK = torch.zeros(Kh.shape, dtype=torch.float32, device=Kh.device)
    dV = torch.zeros_like(dK)
    keys = ["x"] + (["o", "lse"] if run.keep_attention else [])
    get = _loader(run, li, keys, reversed(range(n)))
    for ci in reversed(range(n)):
        s, e = run.chunks[ci]
        got = get(ci)
        x = got[0]
        with torch.enable_grad():
            xl = x.detach().requires_grad_()
            q = E.project_q(L, L.norm1(xl), cos[:, s:e], sin[:, s:e], d)
        qh = SP.to_heads(q.detach(), sp)
        if run.keep_attention:
            o, lse = got[1], got[2]
            oh = SP.to_heads(o, sp)
        else:  # the one attention pass that keeping the output saves
            oh, lse = _attend(run, qh, Kh, Vh, s, e)
            o = SP.to_tokens(oh, sp)
        with torch.enable_grad():
            ol = o.detach().requires_grad_()
            h, y = E.out_and_mlp(L, x, ol)
            g1 = torch.autograd.grad(y, [h, ol] + ps1, dY[:, s:e])
        dh, doh = g1[0], SP.to_heads(g1[1], sp)
        E._accumulate(acc, ps1, g1[2:])
        del h, y, ol, g1, o
        dqh = torch.empty_like(qh)
        c = e - s
        for i, (rows, nk) in enumerate(_pieces(run, s, e)):
            dq, pieces = attention.backward(doh[:, rows], qh[:, rows], Kh[:, :nk], Vh[:, :nk],
                                            oh[:, rows], lse[:, :, i * c:(i + 1) * c],
                                            P.scale)
            dqh[:, rows] = dq
            for off, dk, dv in pieces:
                dK[:, off:off + dk.shape[1]] += dk
                dV[:, off:off + dv.shape[1]] += dv
            del dq, pieces
        g3 = torch.autograd.grad(q, [xl] + ps3, SP.to_tokens(dqh, sp), allow_unused=True)
        E._accumulate(acc, ps3, g3[1:])
        dY[:, s:e] = dh + g3[0]
        del g3, dqh, qh, oh, doh, lse, q, xl, x, dh, got
    # every query has added its part: dK, dV rounded once and back to the local tokens
    dKt = SP.to_tokens(dK.to(Kh.dtype), sp)
    dVt = SP.to_tokens(dV.to(Vh.dtype), sp)
    del dK, dV, Kh, Vh
    xs = _loader(run, li, ["x"], range(n))
    for ci, (s, e) in enumerate(run.chunks):
        with torch.enable_grad():
            xl = xs(ci)[0].detach().requires_grad_()
            k, v = E.project_kv(L, L.norm1(xl), cos[:, s:e], sin[:, s:e], d)
            g = torch.autograd.grad([k, v], [xl] + ps3, [dKt[:, s:e], dVt[:, s:e]],
                                    allow_unused=True)
        E._accumulate(acc, ps3, g[1:])
        dY[:, s:e] += g[0]
        del g, k, v, xl
    SP.sum_grads(acc, ps1 + ps3, sp)
    for p in ps1 + ps3:
        if id(p) in acc:
            acc[id(p)] = acc[id(p)].to(sharding.grad_dtype(p))
