"""Functional API: activations with an exact forward and a k-bit backward.

Each function computes ``y = f(x)`` exactly and keeps for the backward pass
only the packed code of ``x`` (``bits`` bits an element).  The relu family is
exact with 1 bit; silu and gelu use the library's built-in L2-optimal
codebook at ``bits`` in {1, 2, 4, 8} (default DEFAULT_BITS), or with
``codes="stochastic"`` unbiased random codes over a uniform level grid
(docs/design.md section 2): each call draws a fresh 64-bit seed from torch's
default CPU generator, so ``torch.manual_seed`` makes runs reproducible.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._native import DEFAULT_BITS
from . import ops  # noqa: F401  (registers torch.ops.unswag.*)


def draw_seed() -> Tensor:
    """A fresh seed for one stochastic forward, from torch's default CPU generator (a
    tensor: under torch.compile the draw is part of the graph)."""
    return torch.randint(0, 2**62, (), dtype=torch.int64)


def activation(x: Tensor, act: str, bits: int = 1, slope: float = 0.01, lo: float = -1.0,
               hi: float = 1.0, codebook=None, codes: str = "deterministic") -> Tensor:
    """Generic entry: ``act`` is one of relu, leaky_relu, relu6, hardtanh, silu, gelu, gelu_tanh.
    ``codebook`` (smooth only): None for the built-in one, or boundaries then levels.
    ``codes``: "deterministic" or "stochastic" (smooth only, no codebook; a fresh seed a call)."""
    cb = None if codebook is None else [float(v) for v in codebook]
    seed = draw_seed() if codes == "stochastic" else None
    y, _codes = torch.ops.unswag.act_forward(x, act, int(bits), float(slope), float(lo),
                                             float(hi), cb, codes, seed)
    return y


def relu(x: Tensor, bits: int = 1) -> Tensor:
    return activation(x, "relu", bits)


def leaky_relu(x: Tensor, negative_slope: float = 0.01, bits: int = 1) -> Tensor:
    return activation(x, "leaky_relu", bits, slope=negative_slope)


def relu6(x: Tensor, bits: int = 1) -> Tensor:
    return activation(x, "relu6", bits)


def hardtanh(x: Tensor, min_val: float = -1.0, max_val: float = 1.0, bits: int = 1) -> Tensor:
    return activation(x, "hardtanh", bits, lo=min_val, hi=max_val)


def silu(x: Tensor, bits: int = DEFAULT_BITS, codebook=None,
         codes: str = "deterministic") -> Tensor:
    return activation(x, "silu", bits, codebook=codebook, codes=codes)


def gelu(x: Tensor, approximate: str = "none", bits: int = DEFAULT_BITS,
         codebook=None, codes: str = "deterministic") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"unswag.torch.gelu: approximate must be 'none' or 'tanh', "
                         f"got {approximate!r}")
    return activation(x, "gelu" if approximate == "none" else "gelu_tanh", bits,
                      codebook=codebook, codes=codes)


def gated_act(g: Tensor, u: Tensor, act: str = "silu") -> Tensor:
    """``act(g) * u`` in one C kernel (exact; keeps g and u for backward)."""
    return torch.ops.unswag.gated_forward(g, u, act)


def codebook(act: str, bits: int) -> tuple[Tensor, Tensor, float]:
    """The built-in codebook of a smooth activation: (boundaries, levels, rms_error)."""
    from .. import _native as N
    cb = N.builtin_codebook(act, bits)
    m = 1 << bits
    return (torch.tensor(list(cb.boundaries[: m - 1]), dtype=torch.float32),
            torch.tensor(list(cb.levels[:m]), dtype=torch.float32), float(cb.rms_error))
