"""Which Hugging Face decoder LLMs the long-context mode runs, and their parts.

The mode does not call a decoder layer's ``forward``: it calls the layer's own
submodules (norms, projections, MLP, the model's rotary embedding) on token chunks
and runs attention itself.  So it accepts only families whose layer is exactly

    h = x + o_proj(attn(rope(q(norm1(x))), rope(k(norm1(x))), v(norm1(x))))
    y = h + mlp(norm2(h))

with causal attention over all earlier tokens, plain nn.Linear projections (biases
allowed, Qwen2) and optional per-head q/k RMSNorm before rope (Qwen3).  Anything
else is refused with the reason, never run differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from torch import nn

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")
NORMS = ("model", "unswag")
# RMSNorm classes computing weight * (x * rstd).to(x.dtype), the formula of libunswag's kernel
_LLAMA_RMSNORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"}


class UnsupportedModelError(ValueError):
    """The long-context mode cannot run this model exactly."""


@dataclass
class LayerParts:
    norm1: nn.Module
    norm2: nn.Module
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    o_proj: nn.Linear
    q_norm: Optional[nn.Module]
    k_norm: Optional[nn.Module]
    mlp: nn.Module
    sliding_window: Optional[int]
    module: nn.Module          # the decoder layer itself (FSDP2 shards it as one unit)


@dataclass
class ModelParts:
    embed: nn.Embedding
    layers: List[LayerParts]
    final_norm: nn.Module
    rotary: nn.Module
    lm_head: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float
    attention_dropout: float


class UnswagRMSNorm(nn.Module):
    """A model's RMSNorm module computed by libunswag's kernel (unswag.torch.rms_norm):
    the same weight, the same rounding, only x and one fp32 rstd a row kept."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        from ..norm_ops import rms_norm
        return rms_norm(x, self.inner.weight, float(self.inner.variance_epsilon))


def _norm(m: Optional[nn.Module], norm: str) -> Optional[nn.Module]:
    if m is None or norm == "model" or type(m).__name__ not in _LLAMA_RMSNORMS:
        return m
    return UnswagRMSNorm(m)


def _need(cond: bool, name: str, why: str) -> None:
    if not cond:
        raise UnsupportedModelError(f"unswag long-context mode: {name}: {why}")


def inspect_model(model, norm: str = "model") -> ModelParts:
    """The parts of a supported causal LM; UnsupportedModelError naming what is not.
    norm="unswag" computes the Llama-style RMSNorms with libunswag's kernel."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    name = type(model).__name__
    cfg = getattr(model, "config", None)
    mtype = getattr(cfg, "model_type", None)
    _need(mtype in SUPPORTED, name,
          f"model_type {mtype!r} is not supported (supported: {', '.join(SUPPORTED)})")
    base = getattr(model, "model", None)
    _need(base is not None and hasattr(base, "layers"), name, "no .model.layers")
    head = getattr(model, "lm_head", None)
    _need(type(head) is nn.Linear, name, "lm_head is not a plain nn.Linear")
    embed = getattr(base, "embed_tokens", None)
    _need(type(embed) is nn.Embedding, name, "embed_tokens is not a plain nn.Embedding")
    for attr in ("norm", "rotary_emb"):
        _need(hasattr(base, attr), name, f"no .model.{attr}")
    _need(not getattr(cfg, "final_logit_softcapping", None), name,
          "final logit softcapping is not supported")
    _need(getattr(cfg, "pretraining_tp", 1) in (None, 1), name,
          "pretraining_tp > 1 is not supported")
    layers = []
    heads = kv = dim = None
    scale = None
    for i, layer in enumerate(base.layers[: cfg.num_hidden_layers]):
        where = f"{name}.model.layers[{i}]"
        attn = getattr(layer, "self_attn", None)
        _need(attn is not None, where, "no self_attn")
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            _need(type(getattr(attn, p, None)) is nn.Linear, where,
                  f"self_attn.{p} is not a plain nn.Linear (LoRA / quantised layers are "
                  "not supported by this mode)")
        for p in ("input_layernorm", "post_attention_layernorm", "mlp"):
            _need(hasattr(layer, p), where, f"no {p}")
        d = attn.head_dim
        h = attn.q_proj.out_features // d
        k = attn.k_proj.out_features // d
        _need(h % k == 0, where, f"{h} query heads do not group over {k} KV heads")
        if heads is None:
            heads, kv, dim, scale = h, k, d, float(attn.scaling)
        _need((h, k, d, float(attn.scaling)) == (heads, kv, dim, scale), where,
              "attention shapes differ between layers")
        window = getattr(attn, "sliding_window", None)
        if window is None and mtype == "mistral":
            window = getattr(cfg, "sliding_window", None)
        layers.append(LayerParts(
            norm1=_norm(layer.input_layernorm, norm),
            norm2=_norm(layer.post_attention_layernorm, norm),
            q_proj=attn.q_proj, k_proj=attn.k_proj, v_proj=attn.v_proj, o_proj=attn.o_proj,
            q_norm=_norm(getattr(attn, "q_norm", None), norm),
            k_norm=_norm(getattr(attn, "k_norm", None), norm),
            mlp=layer.mlp, sliding_window=window, module=layer))
    _need(bool(layers), name, "no decoder layers")
    return ModelParts(embed=embed, layers=layers, final_norm=_norm(base.norm, norm),
                      rotary=base.rotary_emb,
                      lm_head=head, num_heads=heads, num_kv_heads=kv, head_dim=dim,
                      scale=scale,
                      attention_dropout=float(getattr(cfg, "attention_dropout", 0.0) or 0.0))
