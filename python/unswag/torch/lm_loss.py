"""Chunked linear + cross-entropy: a language model's loss without its logits.

At long context the LM head dominates a training step's memory: a T x V logits
tensor in bf16, its fp32 upcast, the softmax and its gradient (TinyLlama at 64k
tokens: 2.1e9 logits, over 20 GiB).  Here the head runs in chunks of
``chunk_tokens`` rows; each chunk's loss and its gradients (d hidden, d weight) are
computed in the forward pass, and only those gradients are kept (T x H and V x H),
never a T x V tensor.  The math is the one of ``F.cross_entropy(F.linear(h, W,
b).float(), t)`` with mean reduction over non-ignored targets (or a sum divided by
``denom``, as Hugging Face's ``num_items_in_batch``); only the order of fp32 sums
changes.  The same idea as Liger Kernel's fused linear cross-entropy, in plain torch.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_TOKENS = 2048


def chunk_loss_and_grad(hc: Tensor, weight: Tensor, bias: Optional[Tensor], t: Tensor,
                        valid: Tensor, scale: float, need_grad: bool,
                        db: Optional[Tensor] = None):
    """One chunk of rows: (sum of its losses (fp32 scalar), d loss / d logits in hc's
    dtype, or None when no gradient is needed).  The gradient of the bias, if any, is
    added to ``db`` (fp32).  Only a (rows x vocab) fp32 buffer lives, reused in place."""
    logits = F.linear(hc, weight, bias).float()  # what HF's head + .float() gives
    lse = torch.logsumexp(logits, dim=-1)
    tgt = t.clamp_min(0).unsqueeze(1)
    picked = logits.gather(1, tgt).squeeze(1)
    part = torch.where(valid, lse - picked, 0.0).sum()
    if not need_grad:
        return part, None
    # d loss / d logits = (softmax - onehot) / scale on valid rows, 0 elsewhere
    g = logits.sub_(lse.unsqueeze(1)).exp_()
    g.scatter_add_(1, tgt, torch.full_like(picked, -1.0).unsqueeze(1))
    g.mul_((valid.to(g.dtype) / scale).unsqueeze(1))
    if db is not None:
        db += g.sum(0)
    return part, g.to(hc.dtype)  # the gradient of .float() is cast back, as in eager


class LinearCrossEntropyFunction(torch.autograd.Function):
    """forward(h (N, H), weight (V, H), bias (V) or None, targets (N) int, ignore_index,
    chunk_tokens, denom or None) -> scalar fp32 loss."""

    @staticmethod
    def forward(ctx, h, weight, bias, targets, ignore_index, chunk_tokens, denom):
        N = h.shape[0]
        valid_all = targets != ignore_index
        scale = float(denom) if denom is not None else valid_all.sum().item()
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dh = torch.empty_like(h) if need_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if need_w else None
        db = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) \
            if need_b else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        step = max(1, int(chunk_tokens))
        for s in range(0, N, step):
            hc = h[s:s + step]
            part, g = chunk_loss_and_grad(hc, weight, bias, targets[s:s + step],
                                          valid_all[s:s + step], scale,
                                          need_h or need_w or need_b, db)
            total += part
            if g is None:
                continue
            if need_h:
                dh[s:s + step] = g.mm(weight)
            if need_w:
                dw += g.t().mm(hc).float()
            del g
        ctx.save_for_backward(dh, dw, db)
        ctx.wdtype = weight.dtype
        return total / scale

    @staticmethod
    def backward(ctx, gout):
        dh, dw, db = ctx.saved_tensors
        gh = dh * gout.to(dh.dtype) if ctx.needs_input_grad[0] else None
        gw = (dw * gout).to(ctx.wdtype) if ctx.needs_input_grad[1] else None
        gb = (db * gout).to(ctx.wdtype) if ctx.needs_input_grad[2] else None
        return gh, gw, gb, None, None, None, None


def linear_cross_entropy(h: Tensor, weight: Tensor, targets: Tensor,
                         bias: Optional[Tensor] = None, ignore_index: int = -100,
                         chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                         denom: Optional[float] = None) -> Tensor:
    """``F.cross_entropy(F.linear(h, weight, bias).float(), targets)`` (mean over targets
    that are not ``ignore_index``, or sum / ``denom``) without a (tokens x vocab) tensor
    kept for backward.  h: (..., H); targets: (...)."""
    h2 = h.reshape(-1, h.shape[-1])
    t2 = targets.reshape(-1).to(h2.device)
    if t2.shape[0] != h2.shape[0]:
        raise ValueError(f"linear_cross_entropy: {h2.shape[0]} rows of h but {t2.shape[0]} "
                         "targets")
    return LinearCrossEntropyFunction.apply(h2, weight, bias, t2, int(ignore_index),
                                            int(chunk_tokens), denom)


def causal_lm_loss(hidden: Tensor, weight: Tensor, labels: Tensor,
                   bias: Optional[Tensor] = None, ignore_index: int = -100,
                   chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                   num_items_in_batch=None, shift_labels: Optional[Tensor] = None) -> Tensor:
    """Hugging Face's causal-LM loss (position i predicts labels[i + 1]) computed by
    linear_cross_entropy.  hidden: (B, T, H); labels: (B, T)."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    denom = None
    if num_items_in_batch is not None:
        denom = float(num_items_in_batch.item() if torch.is_tensor(num_items_in_batch)
                      else num_items_in_batch)
    return linear_cross_entropy(hidden, weight, shift_labels, bias, ignore_index,
                                chunk_tokens, denom)
