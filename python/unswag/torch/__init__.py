"""PyTorch bindings of libunswag.

    import unswag.torch as ut
    y = ut.relu(x)                 # exact, 1 bit kept for backward
    y = ut.gelu(x, bits=2)         # exact forward, 2-bit backward
    mlp_out = ut.gated_mlp(x, gate_proj, up_proj, down_proj, act="silu", mode="fused")
    y = ut.rms_norm(x, weight, eps=1e-6)   # LlamaRMSNorm; keeps x and one fp32 a row

Ops are registered under ``torch.ops.unswag`` (see ``unswag.torch.ops``).
"""
from . import ops
from .functional import (
    activation,
    codebook,
    gated_act,
    gelu,
    hardtanh,
    leaky_relu,
    relu,
    relu6,
    silu,
)
from .gated import GatedMLPFunction, gated_mlp, gated_mlp_weights
from .lm_loss import causal_lm_loss, linear_cross_entropy
from .modules import GELU, Hardtanh, LeakyReLU, ReLU, ReLU6, SiLU
from .norm_ops import RMSNorm, rms_norm

__all__ = [
    "GELU",
    "GatedMLPFunction",
    "Hardtanh",
    "LeakyReLU",
    "RMSNorm",
    "ReLU",
    "ReLU6",
    "SiLU",
    "activation",
    "causal_lm_loss",
    "codebook",
    "gated_act",
    "gated_mlp",
    "gated_mlp_weights",
    "gelu",
    "hardtanh",
    "leaky_relu",
    "linear_cross_entropy",
    "ops",
    "relu",
    "relu6",
    "rms_norm",
    "silu",
]
