"""RMSNorm over libunswag (CPU and CUDA): torch.library ops, a function and a module.

Ops (namespace ``unswag``):

- ``rms_norm_forward(x, weight, eps) -> (y, rstd)``: Hugging Face LlamaRMSNorm over the
  last dimension, with its rounding: ``n = (x * rstd).to(x.dtype)``, ``y = weight * n``;
  ``rstd`` is fp32 with shape ``x.shape[:-1]``.
- ``rms_norm_backward(dy, x, weight, rstd) -> (dx, dw)``: ``dw`` is fp32 (cast to the
  weight's dtype by the autograd formula).

Only ``x`` and ``rstd`` are kept for backward (no fp32 copy of the activations).  Each op
has a fake implementation (``torch.compile``) and one kernel per device, written once for
both devices as in ops.py; the forward carries the autograd formula.  See docs/rmsnorm.md.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from ._device import DTYPES, register_kernels, same_device, unsupported_device


def _check(what: str, x: Tensor, weight: Tensor, *others: Tensor) -> int:
    """Dtype and shape checks shared by the real and the fake kernels; returns the dtype code."""
    if x.dtype not in DTYPES:
        raise TypeError(f"unswag.{what}: unsupported dtype {x.dtype}; RMSNorm takes float32, "
                        "float16 or bfloat16")
    for t in (weight,) + others:
        if t.dtype != x.dtype:
            raise TypeError(f"unswag.{what}: x is {x.dtype} but another tensor is {t.dtype} "
                            "(cast the weight to the input's dtype)")
    if x.dim() < 1:
        raise ValueError(f"unswag.{what}: x must have at least one dimension")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"unswag.{what}: weight of shape {tuple(weight.shape)} does not match "
                         f"the last dimension of x ({x.shape[-1]})")
    for t in others:
        if t.shape != x.shape:
            raise ValueError(f"unswag.{what}: shape {tuple(t.shape)} differs from x's "
                             f"{tuple(x.shape)}")
    return DTYPES[x.dtype]


def _check_rstd(what: str, x: Tensor, rstd: Tensor) -> None:
    if rstd.dtype != torch.float32 or tuple(rstd.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"unswag.{what}: rstd must be float32 of shape {tuple(x.shape[:-1])}, "
                         f"got {rstd.dtype} {tuple(rstd.shape)}")


def _check_eps(what: str, eps: float) -> None:
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"unswag.{what}: eps must be finite and >= 0, got {eps}")


def _rows_cols(x: Tensor) -> Tuple[int, int]:
    cols = x.shape[-1]
    return (x.numel() // cols if cols else math.prod(x.shape[:-1])), cols


# ---------------------------------------------------------------- forward

def _forward_outputs(x: Tensor) -> Tuple[Tensor, Tensor]:
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    rstd = x.new_empty(x.shape[:-1], dtype=torch.float32)
    return y, rstd


@torch.library.custom_op("unswag::rms_norm_forward", mutates_args=())
def rms_norm_forward(x: Tensor, weight: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    raise unsupported_device("rms_norm_forward", x)


def _rms_norm_forward(device, x: Tensor, weight: Tensor, eps: float) -> Tuple[Tensor, Tensor]:
    dt = _check("rms_norm_forward", x, weight)
    _check_eps("rms_norm_forward", eps)
    same_device("rms_norm_forward", x, weight)
    x, weight = x.contiguous(), weight.contiguous()
    y, rstd = _forward_outputs(x)
    rows, cols = _rows_cols(x)
    device.run(f"rms_norm_forward({x.dtype}, {x.device})", "unswag_rmsnorm_forward",
               dt, x, weight, y, rstd, rows, cols, eps, 0.0)
    return y, rstd


register_kernels(rms_norm_forward, _rms_norm_forward)


@rms_norm_forward.register_fake
def _(x, weight, eps):
    _check("rms_norm_forward", x, weight)
    _check_eps("rms_norm_forward", eps)
    return _forward_outputs(x)


# ---------------------------------------------------------------- backward

def _backward_outputs(x: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dw = weight.new_zeros(weight.shape, dtype=torch.float32)  # the library adds into it
    return dx, dw


@torch.library.custom_op("unswag::rms_norm_backward", mutates_args=())
def rms_norm_backward(dy: Tensor, x: Tensor, weight: Tensor,
                      rstd: Tensor) -> Tuple[Tensor, Tensor]:
    raise unsupported_device("rms_norm_backward", x)


def _rms_norm_backward(device, dy: Tensor, x: Tensor, weight: Tensor,
                       rstd: Tensor) -> Tuple[Tensor, Tensor]:
    dt = _check("rms_norm_backward", x, weight, dy)
    _check_rstd("rms_norm_backward", x, rstd)
    same_device("rms_norm_backward", dy, x, weight, rstd)
    dy, x, weight, rstd = dy.contiguous(), x.contiguous(), weight.contiguous(), rstd.contiguous()
    dx, dw = _backward_outputs(x, weight)
    rows, cols = _rows_cols(x)
    # the CUDA kernel sums dw per block in a workspace before adding into dw
    ws = device.workspace("rms_norm_backward", "unswag_rmsnorm_workspace_bytes", x, rows, cols)
    device.run(f"rms_norm_backward({x.dtype}, {x.device})", "unswag_rmsnorm_backward",
               dt, dy, x, weight, rstd, dx, dw, *ws, rows, cols, 0.0)
    return dx, dw


register_kernels(rms_norm_backward, _rms_norm_backward)


@rms_norm_backward.register_fake
def _(dy, x, weight, rstd):
    _check("rms_norm_backward", x, weight, dy)
    _check_rstd("rms_norm_backward", x, rstd)
    return _backward_outputs(x, weight)


# ---------------------------------------------------------------- autograd

def _setup(ctx, inputs, output):
    x, weight, _eps = inputs
    _y, rstd = output
    ctx.save_for_backward(x, weight, rstd)


def _backward(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dw = torch.ops.unswag.rms_norm_backward(dy, x, weight, rstd)
    return dx, dw.to(weight.dtype), None


torch.library.register_autograd("unswag::rms_norm_forward", _backward, setup_context=_setup)


# ---------------------------------------------------------------- function and module

def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """LlamaRMSNorm(x) with this weight: ``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)``,
    the mean over the last dimension in fp32.  Keeps x and one fp32 per row for backward."""
    return torch.ops.unswag.rms_norm_forward(x, weight, float(eps))[0]


class RMSNorm(torch.nn.Module):
    """Drop-in for Hugging Face's LlamaRMSNorm (also Mistral, Qwen2, Qwen3): the same
    parameter (``weight``, so the same state_dict keys) and ``variance_epsilon``.  The weight
    must have the input's dtype (as in a model loaded in that dtype)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.variance_epsilon = eps

    def forward(self, hidden_states: Tensor) -> Tensor:
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"
