"""Gated MLPs (SwiGLU / GeGLU) as one autograd function.

    out = down_proj(act(gate_proj(x)) * up_proj(x))

The elementwise part (``act(g) * u`` and its backward) runs in libunswag's
gated kernels; the matmuls stay torch's.  Two exact modes (DESIGN.md §1):

- ``fused``: keeps x, g and u; recomputes act(g) * u in the backward pass
  (HF eager keeps g, act(g), u and h: four intermediate-sized tensors become two).
- ``recompute``: keeps only x; forward and backward run in tiles of
  ``tile_tokens`` rows along the token dimension, so no intermediate-sized
  tensor larger than one tile lives at once.

Nothing is approximated: gradients equal eager's up to fp32 rounding order.

Variants of the same MLP (DESIGN.md §1; the surgery recognises them):

- one fused gate/up weight (Phi-3's ``gate_up_proj``): pass it as ``wg``/``bg``
  with ``wu = bu = None``; ``g, u = linear(x, wg, bg).chunk(2, -1)``;
- dropout between the product and the down projection (T5 v1.1's
  ``T5DenseGatedActDense``): ``drop_p > 0``; the mask is drawn as
  ``F.dropout`` draws it (same RNG calls, so the same mask as eager) and kept
  as one byte an element;
- ``cast_down``: the product is cast to the down weight's dtype before the
  down projection, as T5 does when ``wo`` is kept in fp32.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import ops  # noqa: F401

MODES = ("fused", "recompute")
DEFAULT_TILE_TOKENS = 2048


def _lin(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    return torch.nn.functional.linear(x, w, b)


def _gate_up(x2, wg, bg, wu, bu):
    if wu is None:  # one fused weight, gate rows first (Phi-3's gate_up_proj + chunk)
        g, u = _lin(x2, wg, bg).chunk(2, dim=-1)
        return g, u
    return _lin(x2, wg, bg), _lin(x2, wu, bu)


def _dropout_mask(h: Tensor, p: float) -> Tensor:
    """The keep-mask eager dropout would draw for ``h`` (same RNG calls: F.dropout on a
    tensor of h's shape, dtype and device), as bool."""
    return torch.nn.functional.dropout(torch.ones_like(h), p, True) != 0


def _dropout_apply(t: Tensor, mask: Tensor, p: float) -> Tensor:
    """What eager dropout (and its backward) computes from ``t`` and the mask."""
    if t.is_cuda:  # native_dropout(_backward): float(t) * mask * scale, rounded once
        return (t.float() * mask * (1.0 / (1.0 - p))).to(t.dtype)
    # CPU: t * noise, noise = bernoulli(1 - p) / (1 - p) in t's dtype
    return t * mask.to(t.dtype).div_(1.0 - p)


def _proj_grads(dg, du, xt, wg, wu, need):
    """(dwg, dbg, dwu, dbu, dx) of the gate/up projections for one tile; None where not
    needed.  A fused gate/up weight gets the gradient of its two halves concatenated, as
    eager's chunk backward builds it."""
    if wu is None:
        dgu = torch.cat((dg, du), dim=-1)
        return (dgu.t().mm(xt) if need[1] else None, dgu.sum(0) if need[2] else None,
                None, None, dgu.mm(wg) if need[0] else None)
    return (dg.t().mm(xt) if need[1] else None, dg.sum(0) if need[2] else None,
            du.t().mm(xt) if need[3] else None, du.sum(0) if need[4] else None,
            torch.addmm(dg.mm(wg), du, wu) if need[0] else None)


class GatedMLPFunction(torch.autograd.Function):
    """forward(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens, drop_p=0.0,
    cast_down=False) -> out.  ``wu = bu = None``: ``wg``/``bg`` is one fused gate/up
    projection (gate rows first)."""

    @staticmethod
    def forward(ctx, x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens, drop_p=0.0,
                cast_down=False):
        if mode not in MODES:
            raise ValueError(f"unswag gated MLP: mode must be one of {MODES}, got {mode!r}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        T = x2.shape[0]
        ctx.act, ctx.mode, ctx.tile = act, mode, max(1, int(tile_tokens))
        ctx.lead = lead
        ctx.p = float(drop_p)
        # T5 casts the product to wo's dtype when they differ (wo kept in fp32)
        ctx.cast = bool(cast_down) and wd.dtype != x2.dtype
        n_inter = wg.shape[0] // 2 if wu is None else wg.shape[0]
        mask = None
        if ctx.p > 0:
            mask = _dropout_mask(x2.new_empty((T, n_inter)), ctx.p)

        def down(h, m):
            if m is not None:
                h = _dropout_apply(h, m, ctx.p)
            return _lin(h.to(wd.dtype) if ctx.cast else h, wd, bd)

        if mode == "fused":
            g, u = _gate_up(x2, wg, bg, wu, bu)
            h = torch.ops.unswag.gated_forward(g, u, act)
            out = down(h, mask)
            del h
            ctx.save_for_backward(x2, wg, wu, wd, g, u, mask)
        else:
            tile = ctx.tile
            out = x2.new_empty((T, wd.shape[0]), dtype=wd.dtype if ctx.cast else x2.dtype)
            for s in range(0, T, tile):
                g, u = _gate_up(x2[s:s + tile], wg, bg, wu, bu)
                h = torch.ops.unswag.gated_forward(g, u, act)
                del g, u
                out[s:s + tile] = down(h, None if mask is None else mask[s:s + tile])
                del h
            ctx.save_for_backward(x2, wg, bg, wu, bu, wd, mask)
        return out.reshape(*lead, wd.shape[0])

    @staticmethod
    def _h_and_dh(ctx, g, u, dt, wd, m):
        """h as the down projection saw it (for dwd), and the gradient at the product."""
        h = None
        if ctx.needs_input_grad[5]:
            h = torch.ops.unswag.gated_forward(g, u, ctx.act)
            if m is not None:
                h = _dropout_apply(h, m, ctx.p)
            if ctx.cast:
                h = h.to(wd.dtype)
        dh = dt.mm(wd)
        if ctx.cast:
            dh = dh.to(g.dtype)
        if m is not None:
            dh = _dropout_apply(dh, m, ctx.p)
        return h, dh

    @staticmethod
    def backward(ctx, dout):
        act = ctx.act
        dout2 = dout.reshape(-1, dout.shape[-1])
        need = ctx.needs_input_grad
        if ctx.mode == "fused":
            x2, wg, wu, wd, g, u, mask = ctx.saved_tensors
            h, dh = GatedMLPFunction._h_and_dh(ctx, g, u, dout2, wd, mask)
            dwd = dout2.t().mm(h) if need[5] else None
            del h
            dg, du = torch.ops.unswag.gated_backward(dh, g, u, act)
            del dh
            dwg, dbg, dwu, dbu, dx = _proj_grads(dg, du, x2, wg, wu, need)
            dbd = dout2.sum(0) if need[6] else None
        else:
            x2, wg, bg, wu, bu, wd, mask = ctx.saved_tensors
            T, tile = x2.shape[0], ctx.tile
            multi = T > tile
            # accumulate weight gradients across tiles in fp32 (half-precision sums
            # would round once per tile)

            def zeros(n, w, want):
                if not want:
                    return None
                acc = torch.float32 if (multi and w.dtype in (torch.float16, torch.bfloat16)) \
                    else w.dtype
                return torch.zeros(n, dtype=acc, device=w.device)

            dwg, dbg = zeros(wg.shape, wg, need[1]), zeros(wg.shape[0], wg, need[2])
            dwu = zeros(wu.shape, wu, need[3]) if wu is not None else None
            dbu = zeros(wu.shape[0], wu, need[4]) if wu is not None else None
            dwd = zeros(wd.shape, wd, need[5])
            dx = torch.empty_like(x2) if need[0] else None
            for s in range(0, T, tile):
                xt, dt = x2[s:s + tile], dout2[s:s + tile]
                g, u = _gate_up(xt, wg, bg, wu, bu)
                h, dh = GatedMLPFunction._h_and_dh(ctx, g, u, dt, wd,
                                                   None if mask is None else mask[s:s + tile])
                if dwd is not None:
                    dwd += dt.t().mm(h)
                del h
                dg, du = torch.ops.unswag.gated_backward(dh, g, u, act)
                del dh, g, u
                grads = _proj_grads(dg, du, xt, wg, wu, need)
                for acc, gr in zip((dwg, dbg, dwu, dbu), grads[:4]):
                    if acc is not None:
                        acc += gr
                if dx is not None:
                    dx[s:s + tile] = grads[4]
                del dg, du, grads
            cast = lambda t, ref: None if t is None else t.to(ref.dtype)
            dwg, dwd, dbg = cast(dwg, wg), cast(dwd, wd), cast(dbg, wg)
            if wu is not None:
                dwu, dbu = cast(dwu, wu), cast(dbu, wu)
            dbd = dout2.sum(0) if need[6] else None
        if dx is not None:
            dx = dx.reshape(*ctx.lead, dx.shape[-1])
        return dx, dwg, dbg, dwu, dbu, dwd, dbd, None, None, None, None, None


def gated_mlp_weights(x: Tensor, wg: Tensor, bg: Optional[Tensor], wu: Optional[Tensor],
                      bu: Optional[Tensor], wd: Tensor, bd: Optional[Tensor], act: str = "silu",
                      mode: str = "fused", tile_tokens: int = DEFAULT_TILE_TOKENS,
                      drop_p: float = 0.0, cast_down: bool = False) -> Tensor:
    """The gated MLP on raw weights (nn.Linear layout: weight is (out, in)).

    ``wu = bu = None``: ``wg``/``bg`` is one fused gate/up projection, gate rows first.
    ``drop_p``: dropout on the product before the down projection (pass 0 when not
    training).  ``cast_down``: cast the product to ``wd``'s dtype first (T5).
    Under autocast the inputs are cast to the autocast dtype first (as
    nn.Linear would be) and the function runs in that dtype.
    """
    if not 0.0 <= drop_p < 1.0:
        raise ValueError(f"unswag gated MLP: drop_p must be in [0, 1), got {drop_p!r}")
    dev = x.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        c = lambda t: None if t is None else t.to(dt)
        x, wg, bg, wu, bu, wd, bd = map(c, (x, wg, bg, wu, bu, wd, bd))
        with torch.autocast(dev, enabled=False):
            return GatedMLPFunction.apply(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens,
                                          drop_p, cast_down)
    return GatedMLPFunction.apply(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens, drop_p,
                                  cast_down)


def gated_mlp(x: Tensor, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear,
              act: str = "silu", mode: str = "fused",
              tile_tokens: int = DEFAULT_TILE_TOKENS) -> Tensor:
    """``down_proj(act(gate_proj(x)) * up_proj(x))`` for plain nn.Linear layers."""
    return gated_mlp_weights(x, gate_proj.weight, gate_proj.bias, up_proj.weight, up_proj.bias,
                             down_proj.weight, down_proj.bias, act, mode, tile_tokens)
