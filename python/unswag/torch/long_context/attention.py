"""Causal attention of one chunk of queries over its prefix, with its logsumexp.

Layout everywhere: q (B, c, Hq, D) for the queries of positions [e - c, e); k, v
(B, e, Hk, D) for keys [0, e); Hq a multiple of Hk (grouped-query attention).  The
mask is aligned to the lower right: query row i (absolute position e - c + i) sees
keys j <= e - c + i.  That is exactly the rows [e - c, e) of full causal attention,
so a sequence processed chunk by chunk gives the same attention as in one call.

Three implementations of the same two functions, picked per call by ``backend``:
- ``cudnn``: PyTorch's cuDNN attention ops (what F.scaled_dot_product_attention runs on
  Hopper; about 1.5x FlashAttention-2 there).  Its causal mask is upper-left aligned,
  so a chunk runs as two calls: its queries over keys [0, s) without a mask, and over
  keys [s, e) with the causal mask (a square, where both alignments agree); the two
  partial outputs are merged by their logsumexps.  The backward of each part, given the
  merged output and logsumexp, is exactly that part's share of the full gradient.
  Used only after a check on first use agrees with ``math``.
- ``flash``: PyTorch's FlashAttention-2 ops (CUDA, fp16/bf16, head dim <= 256);
  FA2's causal mask is lower-right aligned when there are fewer queries than keys.
- ``math``: plain torch, for the CPU, fp32 and the tests; the reference.

``forward`` returns (out (B, c, Hq, D), lse (B, Hq, c) fp32).  ``backward`` takes the
kept out and lse (so attention need not run forward again) and returns dq and a list
of (offset, dk, dv): contributions to keys [offset, offset + len).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor

Piece = Tuple[int, Tensor, Tensor]

# Above this many bytes of grouped-query expansion in one flash backward call, the
# call is split by KV head (FA2 expands dK/dV to all query heads before summing).
_MAX_EXPANDED_BYTES = 256 * 2 ** 20


def use_flash(q: Tensor) -> bool:
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256)


def _check(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"chunk attention: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}: expected (B, c, Hq, D) and (B, e, Hk, D)")
    if q.shape[1] > k.shape[1] or q.shape[2] % k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"chunk attention: q {tuple(q.shape)} does not fit k {tuple(k.shape)}")


# ---------------------------------------------------------------- math (reference)

def _expand(k: Tensor, groups: int) -> Tensor:
    return k if groups == 1 else k.repeat_interleave(groups, dim=2)


def _acc(t: Tensor) -> Tensor:
    """The math path computes in fp32, or fp64 for fp64 inputs."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _scores(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Masked, scaled scores (B, Hq, c, e), at least fp32."""
    c, e = q.shape[1], k.shape[1]
    s = torch.einsum("bihd,bjhd->bhij", _acc(q), _acc(k)) * scale
    rows = torch.arange(e - c, e, device=q.device).unsqueeze(1)
    cols = torch.arange(e, device=q.device).unsqueeze(0)
    return s.masked_fill(cols > rows, float("-inf"))


def math_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    _check(q, k, v)
    g = q.shape[2] // k.shape[2]
    s = _scores(q, _expand(k, g), scale)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1))
    out = torch.einsum("bhij,bjhd->bihd", p, _acc(_expand(v, g)))
    return out.to(q.dtype), lse


def math_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                  scale: float) -> Tuple[Tensor, List[Piece]]:
    _check(q, k, v)
    B, e, Hk, D = k.shape
    g = q.shape[2] // Hk
    kx, vx = _acc(_expand(k, g)), _acc(_expand(v, g))
    p = torch.exp(_scores(q, kx, scale) - lse.unsqueeze(-1))
    dof = _acc(do)
    dv = torch.einsum("bhij,bihd->bjhd", p, dof)
    dp = torch.einsum("bihd,bjhd->bhij", dof, vx)
    delta = (dof * _acc(out)).sum(-1).transpose(1, 2).unsqueeze(-1)  # (B, Hq, c, 1)
    ds = p * (dp - delta) * scale
    dq = torch.einsum("bhij,bjhd->bihd", ds, kx)
    dk = torch.einsum("bhij,bihd->bjhd", ds, _acc(q))
    if g > 1:  # sum the query heads of each group back onto their KV head
        dk = dk.view(B, e, Hk, g, D).sum(3)
        dv = dv.view(B, e, Hk, g, D).sum(3)
    return dq.to(q.dtype), [(0, dk.to(k.dtype), dv.to(v.dtype))]


# ---------------------------------------------------------------- flash (CUDA)

def flash_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    _check(q, k, v)
    # the SDPA-level op takes (B, H, T, D) views and transposes them back itself
    res = torch.ops.aten._scaled_dot_product_flash_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 0.0, True, False,
        scale=scale)
    out, lse = res[0], res[1]
    return out.transpose(1, 2), lse


_DENSE_MARKERS = {}


def _dense_markers(device, dtype):
    """The (cum_seq_q, cum_seq_k, rng_state, unused) objects a dense, dropout-free flash
    forward returns: the backward op takes them back and reads an undefined cum_seq as
    'not varlen', which no tensor made in Python can say.  Taken once from a tiny call."""
    key = (device, dtype)
    if key not in _DENSE_MARKERS:
        t = torch.zeros(1, 1, 8, 8, device=device, dtype=dtype)
        res = torch.ops.aten._scaled_dot_product_flash_attention(t, t, t, 0.0, True, False)
        _DENSE_MARKERS[key] = (res[2], res[3], res[6], res[7])
    return _DENSE_MARKERS[key]


def _flash_backward_call(do, q, k, v, out, lse, scale):
    c, e = q.shape[1], k.shape[1]
    cum_q, cum_k, rng, unused = _dense_markers(q.device, q.dtype)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
        do.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        out.transpose(1, 2), lse.contiguous(), cum_q, cum_k, c, e, 0.0, True, rng, unused,
        scale=scale)
    return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


def flash_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   scale: float) -> Tuple[Tensor, List[Piece]]:
    _check(q, k, v)
    B, e, Hk, D = k.shape
    Hq = q.shape[2]
    g = Hq // Hk
    expanded = 2 * B * e * Hq * D * k.element_size()
    if g == 1 or expanded <= _MAX_EXPANDED_BYTES:
        dq, dk, dv = _flash_backward_call(do, q, k, v, out, lse, scale)
        return dq, [(0, dk, dv)]
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    for h in range(Hk):  # one KV head and its query heads at a time
        qs = slice(h * g, (h + 1) * g)
        a, b, c_ = _flash_backward_call(do[:, :, qs], q[:, :, qs], k[:, :, h:h + 1],
                                        v[:, :, h:h + 1], out[:, :, qs], lse[:, qs], scale)
        dq[:, :, qs] = a
        dk[:, :, h:h + 1] = b
        dv[:, :, h:h + 1] = c_
    return dq, [(0, dk, dv)]


# ---------------------------------------------------------------- cuDNN (CUDA)

_CUDNN_OK: Dict[Tuple, str] = {}  # (device, dtype) -> "native" | "expand" | "no"


def _cudnn_call(q, k, v, causal, scale, expand):
    """One cuDNN attention call; q (B, c, Hq, D), k/v (B, n, Hk, D)."""
    if expand:
        g = q.shape[2] // k.shape[2]
        k, v = _expand(k, g), _expand(v, g)
    r = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, 0.0, causal,
        False, scale=scale)
    B, c, Hq, _ = q.shape
    return r[0].transpose(1, 2), r[1].reshape(B, Hq, c), r


def _cudnn_bwd_call(do, q, k, v, out, lse, causal, scale, expand, lse_shape):
    B, n, Hk, D = k.shape
    g = q.shape[2] // Hk
    if expand:
        k, v = _expand(k, g), _expand(v, g)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
        do.transpose(1, 2), q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        out.transpose(1, 2), lse.reshape(lse_shape), None, None, None, None, None,
        q.shape[1], n, 0.0, causal, scale=scale)
    dq, dk, dv = dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)
    if expand and g > 1:
        dk = dk.reshape(B, n, Hk, g, D).sum(3)
        dv = dv.reshape(B, n, Hk, g, D).sum(3)
    return dq, dk, dv


def _cudnn_mode(q: Tensor) -> str:
    return _CUDNN_OK.get((q.device, q.dtype), "no")


def cudnn_forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    _check(q, k, v)
    expand = _cudnn_mode(q) == "expand"
    c, e = q.shape[1], k.shape[1]
    s = e - c
    o2, l2, _ = _cudnn_call(q, k[:, s:], v[:, s:], True, scale, expand)
    if s == 0:
        return o2, l2.contiguous()
    o1, l1, _ = _cudnn_call(q, k[:, :s], v[:, :s], False, scale, expand)
    lse = torch.logaddexp(l1, l2)
    w1 = torch.exp(l1 - lse).transpose(1, 2).unsqueeze(-1)  # (B, c, Hq, 1)
    w2 = torch.exp(l2 - lse).transpose(1, 2).unsqueeze(-1)
    out = (o1.float() * w1).add_(o2.float() * w2).to(q.dtype)
    return out, lse


def cudnn_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   scale: float) -> Tuple[Tensor, List[Piece]]:
    _check(q, k, v)
    expand = _cudnn_mode(q) == "expand"
    B, c, Hq, _ = q.shape
    e = k.shape[1]
    s = e - c
    # the backward wants the logsumexp in the shape the forward op gave it
    shape = (B, Hq, c, 1) if _CUDNN_LSE_4D.get((q.device, q.dtype)) else (B, Hq, c)
    dq2, dk2, dv2 = _cudnn_bwd_call(do, q, k[:, s:], v[:, s:], out, lse, True, scale, expand,
                                    shape)
    if s == 0:
        return dq2, [(0, dk2, dv2)]
    dq1, dk1, dv1 = _cudnn_bwd_call(do, q, k[:, :s], v[:, :s], out, lse, False, scale, expand,
                                    shape)
    dq = dq1.float().add_(dq2.float()).to(q.dtype)
    return dq, [(0, dk1, dv1), (s, dk2, dv2)]


_CUDNN_LSE_4D: Dict[Tuple, bool] = {}


def _probe_cudnn(device, dtype) -> str:
    """Runs the cuDNN path once on a small problem against ``math``; the mode that agrees
    ("native" GQA, or K/V "expand"ed), else "no"."""
    g = torch.Generator(device="cpu").manual_seed(0)
    B, c, e, hq, hk, D = 1, 96, 224, 4, 2, 64
    mk = lambda *sh: torch.randn(*sh, generator=g).to(device=device, dtype=dtype)
    q, k, v, do = mk(B, c, hq, D), mk(B, e, hk, D), mk(B, e, hk, D), mk(B, c, hq, D)
    o_ref, l_ref = math_forward(q, k, v, 0.125)
    dq_ref, [(_, dk_ref, dv_ref)] = math_backward(do, q, k, v, o_ref, l_ref, 0.125)
    for mode in ("native", "expand"):
        _CUDNN_OK[(device, dtype)] = mode
        try:
            r = _cudnn_call(q, k[:, :c], v[:, :c], True, 0.125, mode == "expand")[2]
            _CUDNN_LSE_4D[(device, dtype)] = r[1].dim() == 4
            o, lse = cudnn_forward(q, k, v, 0.125)
            dq, pieces = cudnn_backward(do, q, k, v, o, lse, 0.125)
            dk = torch.cat([p[1] for p in pieces], 1)
            dv = torch.cat([p[2] for p in pieces], 1)
            errs = [(a.float() - b.float()).norm().item() / b.float().norm().item()
                    for a, b in ((o, o_ref), (dq, dq_ref), (dk, dk_ref), (dv, dv_ref))]
            if max(errs) < 3e-2 and (lse - l_ref).abs().max().item() < 1e-2:
                return mode
        except Exception:  # an unsupported shape or build: try the next mode
            pass
    _CUDNN_OK[(device, dtype)] = "no"
    return "no"


def backend(q: Tensor) -> str:
    """"cudnn", "flash" or "math" for queries like q."""
    if not use_flash(q):
        return "math"
    key = (q.device, q.dtype)
    if key not in _CUDNN_OK:
        _CUDNN_OK[key] = _probe_cudnn(q.device, q.dtype) if _CUDNN_ALLOWED else "no"
    return "cudnn" if _CUDNN_OK[key] != "no" else "flash"


_CUDNN_ALLOWED = True  # the GPU tests switch it off to test flash alone


def forward(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    return {"cudnn": cudnn_forward, "flash": flash_forward,
            "math": math_forward}[backend(q)](q, k, v, scale)


def backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
             scale: float) -> Tuple[Tensor, List[Piece]]:
    return {"cudnn": cudnn_backward, "flash": flash_backward,
            "math": math_backward}[backend(q)](do, q, k, v, out, lse, scale)
