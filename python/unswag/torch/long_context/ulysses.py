"""One decoder layer's forward and backward under sequence parallelism (engine.py's
_layer_forward / _layer_backward when the sequence is split over a group).

Each rank holds T/P tokens of the residual stream.  Forward: the local q, k, v
(chunk by chunk) -> all-to-all -> the whole sequence for this rank's heads -> the
engine's query-chunk loop (attention.py, the same chunks one process uses) -> the
output back to the local tokens by a second all-to-all -> o_proj, MLP, residuals by
chunks.  Kept per rank on the host: the layer input and attention output of its local
chunks, and the logsumexp of its heads per query chunk of the whole sequence.

Backward, in phases (an all-to-all needs every local chunk's tensor first):
  A. q, k, v again from the host's layer inputs -> the heads layout;
  B. the attention output in both layouts (from the host, or attention forward again);
  C. o_proj + MLP backward by local chunks: dh (over dY) and d(attention output);
  D. d(attention output) to the heads layout; attention's backward, last query chunk
     first as in the engine, dK / dV summed in fp32 and complete for every key;
  E. dq, dk, dv back to the local tokens; the q/k/v projections, rope and norm by
     autograd on each local chunk; dx added to dY.
The layer's parameter gradients (this rank's tokens' part) are summed over the group
in fp32, then rounded once as in the engine.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import Tensor

from . import attention, sharding
from . import engine as E
from . import sequence_parallel as SP


def _attend(run, Qh: Tensor, Kh: Tensor, Vh: Tensor, li: int, save: bool):
    """The whole sequence's causal attention for this rank's heads, by query chunks:
    (output, [logsumexp per chunk])."""
    out = torch.empty_like(Qh)
    lses = []
    for gi, (s, e) in enumerate(run.sp.chunks):
        o, lse = attention.forward(Qh[:, s:e], Kh[:, :e], Vh[:, :e], run.parts.scale)
        out[:, s:e] = o
        if save:
            run.store.save(("lse", li, gi), lse)
        lses.append(lse)
    return out, lses


def _local_qkv(run, li: int, cos, sin, xs) -> List[Tensor]:
    """q, k, v of the local tokens, chunk by chunk; xs(ci) gives chunk ci's layer input."""
    P = run.parts
    L, d = P.layers[li], P.head_dim
    Q = K = V = None
    for ci, (s, e) in enumerate(run.chunks):
        x = xs(ci)
        n = L.norm1(x)
        q = E.project_q(L, n, cos[:, s:e], sin[:, s:e], d)
        k, v = E.project_kv(L, n, cos[:, s:e], sin[:, s:e], d)
        if Q is None:
            B, T = x.shape[0], run.chunks[-1][1]
            Q = q.new_empty((B, T) + q.shape[2:])
            K = k.new_empty((B, T) + k.shape[2:])
            V = torch.empty_like(K)
        Q[:, s:e], K[:, s:e], V[:, s:e] = q, k, v
    return [SP.to_heads(t, run.sp) for t in (Q, K, V)]


def _loader(run, li: int, key: str):
    """xs(ci) for chunks visited in order, each host load issued one chunk ahead."""
    st, n = run.store, len(run.chunks)
    nxt = [st.load((key, li, 0))]

    def xs(ci):
        got = nxt[0]()
        if ci + 1 < n:
            nxt[0] = st.load((key, li, ci + 1))
        return got
    return xs


def layer_forward(run, li: int, resid: Tensor, cos: Tensor, sin: Tensor, save: bool) -> None:
    st, L = run.store, run.parts.layers[li]

    def xs(ci):
        s, e = run.chunks[ci]
        if save:
            st.save(("x", li, ci), resid[:, s:e])
        return resid[:, s:e]
    Qh, Kh, Vh = _local_qkv(run, li, cos, sin, xs)
    Oh, _ = _attend(run, Qh, Kh, Vh, li, save and run.keep_attention)
    del Qh, Kh, Vh
    O = SP.to_tokens(Oh, run.sp)
    del Oh
    for ci, (s, e) in enumerate(run.chunks):
        o = O[:, s:e]
        if save and run.keep_attention:
            st.save(("o", li, ci), o)
        _, y = E.out_and_mlp(L, resid[:, s:e], o)
        if save:
            st.wait_saved(("x", li, ci))  # x is on the host before y overwrites it
        resid[:, s:e] = y


def layer_backward(run, li: int, dY: Tensor, cos: Tensor, sin: Tensor,
                   acc: Dict[int, Tensor]) -> None:
    P, st, sp = run.parts, run.store, run.sp
    L, d = P.layers[li], P.head_dim
    ps1, ps3 = E._trainable(E.mlp_params(L)), E._trainable(E.attention_params(L))
    # A
    with torch.no_grad():
        Qh, Kh, Vh = _local_qkv(run, li, cos, sin, _loader(run, li, "x"))
    # B
    if run.keep_attention:
        os_ = _loader(run, li, "o")
        O = torch.cat([os_(ci) for ci in range(len(run.chunks))], dim=1)
        Oh = SP.to_heads(O, sp)
        lses = [st.load(("lse", li, gi))() for gi in range(len(sp.chunks))]
    else:  # the one attention pass that keeping the output saves
        Oh, lses = _attend(run, Qh, Kh, Vh, li, False)
        O = SP.to_tokens(Oh, sp)
    # C
    dO = torch.empty_like(O)
    xs = _loader(run, li, "x")
    for ci, (s, e) in enumerate(run.chunks):
        x = xs(ci)
        with torch.enable_grad():
            ol = O[:, s:e].detach().requires_grad_()
            h, y = E.out_and_mlp(L, x, ol)
            g1 = torch.autograd.grad(y, [h, ol] + ps1, dY[:, s:e])
        E._accumulate(acc, ps1, g1[2:])
        dY[:, s:e] = g1[0]  # dh; dx of the attention part is added in E
        dO[:, s:e] = g1[1]
        del x, h, y, ol, g1
    del O
    # D
    dOh = SP.to_heads(dO, sp)
    del dO
    dQh = torch.empty_like(Qh)
    dK = torch.zeros(Kh.shape, dtype=torch.float32, device=Kh.device)
    dV = torch.zeros_like(dK)
    for gi in reversed(range(len(sp.chunks))):
        s, e = sp.chunks[gi]
        dq, pieces = attention.backward(dOh[:, s:e], Qh[:, s:e], Kh[:, :e], Vh[:, :e],
                                        Oh[:, s:e], lses[gi], P.scale)
        dQh[:, s:e] = dq
        for off, dk, dv in pieces:
            dK[:, off:off + dk.shape[1]] += dk
            dV[:, off:off + dv.shape[1]] += dv
        del dq, pieces
    del dOh, Oh, Qh, lses
    # E: every key's dK / dV is complete; rounded once, as one process does
    dQ = SP.to_tokens(dQh, sp)
    dKt = SP.to_tokens(dK.to(Kh.dtype), sp)
    dVt = SP.to_tokens(dV.to(Vh.dtype), sp)
    del dQh, dK, dV, Kh, Vh
    xs = _loader(run, li, "x")
    for ci, (s, e) in enumerate(run.chunks):
        x = xs(ci)
        cs, sn = cos[:, s:e], sin[:, s:e]
        with torch.enable_grad():
            xl = x.detach().requires_grad_()
            n1 = L.norm1(xl)
            q = E.project_q(L, n1, cs, sn, d)
            k, v = E.project_kv(L, n1, cs, sn, d)
            g3 = torch.autograd.grad([q, k, v], [xl] + ps3,
                                     [dQ[:, s:e], dKt[:, s:e], dVt[:, s:e]])
        E._accumulate(acc, ps3, g3[1:])
        dY[:, s:e] += g3[0]
        del x, xl, n1, q, k, v, g3
    SP.sum_grads(acc, ps1 + ps3, sp)
    for p in ps1 + ps3:
        if id(p) in acc:
            acc[id(p)] = acc[id(p)].to(sharding.grad_dtype(p))
