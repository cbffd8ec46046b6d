"""Flax wrappers (linen and nnx) for the unswag.jax activations.

    from unswag.jax.flax import Activation, NnxActivation
    # linen
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(256)(x)
            x = Activation("silu", bits=4)(x)
            return nn.Dense(10)(x)
    # nnx
    model = nnx.Sequential(nnx.Linear(64, 256, rngs=rngs), NnxActivation("gelu"), ...)

The plain functions (unswag.jax.relu, silu, ...) work in both APIs too;
these modules only carry the static arguments.  Importing this module
requires Flax.
"""
from __future__ import annotations

from typing import Any, Optional

import jax

from . import _ops

try:
    from flax import linen as _nn
except ImportError as e:  # pragma: no cover
    raise ImportError("unswag.jax.flax needs Flax: pip install flax") from e

try:
    from flax import nnx as _nnx
except ImportError:  # pragma: no cover - very old Flax
    _nnx = None


def _fn(act, bits, slope, lo, hi, codebook, impl):
    spec = _ops.make_spec(act, bits, slope=slope, lo=lo, hi=hi, codebook=codebook, impl=impl)
    return lambda x: _ops.apply(x, spec)


class Activation(_nn.Module):
    """linen module: act in relu, leaky_relu, relu6, hardtanh, silu, gelu, gelu_tanh."""
    act: str = "relu"
    bits: Optional[int] = None  # 1 for the relu family, DEFAULT_BITS for smooth
    negative_slope: float = 0.01
    min_val: float = -1.0
    max_val: float = 1.0
    codebook: Any = None
    impl: str = "auto"

    def __call__(self, x: jax.Array) -> jax.Array:
        return _fn(self.act, self.bits, self.negative_slope, self.min_val, self.max_val,
                   self.codebook, self.impl)(x)


def ReLU(**kw: Any) -> Activation:
    return Activation("relu", **kw)


def SiLU(bits: int | None = None, **kw: Any) -> Activation:
    return Activation("silu", bits=bits, **kw)


def GELU(bits: int | None = None, approximate: bool = False, **kw: Any) -> Activation:
    return Activation("gelu_tanh" if approximate else "gelu", bits=bits, **kw)


if _nnx is not None:

    class NnxActivation(_nnx.Module):
        """nnx module with the same arguments as the linen Activation."""

        def __init__(self, act: str = "relu", bits: int | None = None, *,
                     negative_slope: float = 0.01, min_val: float = -1.0, max_val: float = 1.0,
                     codebook: Any = None, impl: str = "auto"):
            # validate now (and keep only static Python values: no nnx state)
            self._spec = _ops.make_spec(act, bits, slope=negative_slope, lo=min_val,
                                        hi=max_val, codebook=codebook, impl=impl)

        def __call__(self, x: jax.Array) -> jax.Array:
            return _ops.apply(x, self._spec)

__all__ = ["GELU", "Activation", "NnxActivation", "ReLU", "SiLU"]
