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
    return _lin(x2, wg, bg), _lin(x2, wu, bu)


class GatedMLPFunction(torch.autograd.Function):
    """forward(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens) -> out."""

    @staticmethod
    def forward(ctx, x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens):
        if mode not in MODES:
            raise ValueError(f"unswag gated MLP: mode must be one of {MODES}, got {mode!r}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        T = x2.shape[0]
        ctx.act, ctx.mode, ctx.tile = act, mode, max(1, int(tile_tokens))
        ctx.lead = lead
        ctx.has_bias = (bg is not None, bu is not None, bd is not None)
        if mode == "fused":
            g, u = _gate_up(x2, wg, bg, wu, bu)
            h = torch.ops.unswag.gated_forward(g, u, act)
            out = _lin(h, wd, bd)
            del h
            ctx.save_for_backward(x2, wg, wu, wd, g, u)
        else:
            tile = ctx.tile
            out = x2.new_empty((T, wd.shape[0]))
            for s in range(0, T, tile):
                g, u = _gate_up(x2[s:s + tile], wg, bg, wu, bu)
                h = torch.ops.unswag.gated_forward(g, u, act)
                del g, u
                out[s:s + tile] = _lin(h, wd, bd)
                del h
            ctx.save_for_backward(x2, wg, bg, wu, bu, wd)
        return out.reshape(*lead, wd.shape[0])

    @staticmethod
    def backward(ctx, dout):
        act = ctx.act
        dout2 = dout.reshape(-1, dout.shape[-1])
        need = ctx.needs_input_grad
        if ctx.mode == "fused":
            x2, wg, wu, wd, g, u = ctx.saved_tensors
            h = torch.ops.unswag.gated_forward(g, u, act)
            dwd = dout2.t().mm(h) if need[5] else None
            del h
            dh = dout2.mm(wd)
            dg, du = torch.ops.unswag.gated_backward(dh, g, u, act)
            del dh
            dwg = dg.t().mm(x2) if need[1] else None
            dwu = du.t().mm(x2) if need[3] else None
            dbg = dg.sum(0) if need[2] else None
            dbu = du.sum(0) if need[4] else None
            dx = torch.addmm(dg.mm(wg), du, wu) if need[0] else None
            dbd = dout2.sum(0) if need[6] else None
        else:
            x2, wg, bg, wu, bu, wd = ctx.saved_tensors
            T, tile = x2.shape[0], ctx.tile
            multi = T > tile
            # accumulate weight gradients across tiles in fp32 (half-precision sums
            # would round once per tile)
            acc = torch.float32 if (multi and wg.dtype in (torch.float16, torch.bfloat16)) \
                else wg.dtype
            dwg = torch.zeros(wg.shape, dtype=acc, device=wg.device) if need[1] else None
            dwu = torch.zeros(wu.shape, dtype=acc, device=wu.device) if need[3] else None
            dwd = torch.zeros(wd.shape, dtype=acc, device=wd.device) if need[5] else None
            dbg = torch.zeros(wg.shape[0], dtype=acc, device=wg.device) if need[2] else None
            dbu = torch.zeros(wu.shape[0], dtype=acc, device=wu.device) if need[4] else None
            dx = torch.empty_like(x2) if need[0] else None
            for s in range(0, T, tile):
                xt, dt = x2[s:s + tile], dout2[s:s + tile]
                g, u = _gate_up(xt, wg, bg, wu, bu)
                if dwd is not None:
                    h = torch.ops.unswag.gated_forward(g, u, act)
                    dwd += dt.t().mm(h)
                    del h
                dh = dt.mm(wd)
                dg, du = torch.ops.unswag.gated_backward(dh, g, u, act)
                del dh, g, u
                if dwg is not None:
                    dwg += dg.t().mm(xt)
                if dwu is not None:
                    dwu += du.t().mm(xt)
                if dbg is not None:
                    dbg += dg.sum(0)
                if dbu is not None:
                    dbu += du.sum(0)
                if dx is not None:
                    dx[s:s + tile] = torch.addmm(dg.mm(wg), du, wu)
                del dg, du
            cast = lambda t, ref: None if t is None else t.to(ref.dtype)  # noqa: E731
            dwg, dwu, dwd = cast(dwg, wg), cast(dwu, wu), cast(dwd, wd)
            dbg, dbu = cast(dbg, wg), cast(dbu, wu)
            dbd = dout2.sum(0) if need[6] else None
        if dx is not None:
            dx = dx.reshape(*ctx.lead, dx.shape[-1])
        return dx, dwg, dbg, dwu, dbu, dwd, dbd, None, None, None


def gated_mlp_weights(x: Tensor, wg: Tensor, bg: Optional[Tensor], wu: Tensor,
                      bu: Optional[Tensor], wd: Tensor, bd: Optional[Tensor], act: str = "silu",
                      mode: str = "fused", tile_tokens: int = DEFAULT_TILE_TOKENS) -> Tensor:
    """The gated MLP on raw weights (nn.Linear layout: weight is (out, in)).

    Under autocast the inputs are cast to the autocast dtype first (as
    nn.Linear would be) and the function runs in that dtype.
    """
    dev = x.device.type
    if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        c = lambda t: None if t is None else t.to(dt)  # noqa: E731
        x, wg, bg, wu, bu, wd, bd = map(c, (x, wg, bg, wu, bu, wd, bd))
        with torch.autocast(dev, enabled=False):
            return GatedMLPFunction.apply(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens)
    return GatedMLPFunction.apply(x, wg, bg, wu, bu, wd, bd, act, mode, tile_tokens)


def gated_mlp(x: Tensor, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear,
              act: str = "silu", mode: str = "fused",
              tile_tokens: int = DEFAULT_TILE_TOKENS) -> Tensor:
    """``down_proj(act(gate_proj(x)) * up_proj(x))`` for plain nn.Linear layers."""
    return gated_mlp_weights(x, gate_proj.weight, gate_proj.bias, up_proj.weight, up_proj.bias,
                             down_proj.weight, down_proj.bias, act, mode, tile_tokens)
