"""The gated MLP forms the surgery gives the exact fused / recompute path.

A form names the submodules it needs and the formula it computes:

- ``separate`` (Llama, Mistral, Qwen2/3, Gemma's GeGLU, ...): ``gate_proj``, ``up_proj``,
  ``down_proj``; ``down(act(gate(x)) * up(x))``;
- ``gate_up`` (Phi-3): ``gate_up_proj``, ``down_proj``; ``g, u = gate_up(x).chunk(2, -1)``,
  ``down(u * act(g))``;
- ``t5`` (T5 v1.1 / flan-T5 ``T5DenseGatedActDense``): ``wi_0``, ``wi_1``, ``wo``,
  ``dropout``; ``wo(dropout(act(wi_0(x)) * wi_1(x)))``, the product cast to ``wo``'s
  dtype when they differ.

Attribute names alone prove nothing about the forward, so every candidate is verified:
its own forward, run on a small probe input (eval mode so that dropout is off, no grad,
the global RNG untouched), must equal the form's formula computed with the module's own
layers in plain torch.  A module that has the attributes but computes something else (a
scale, a clamp, the halves swapped) fails the probe and is left alone, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import nn

ACT_ATTRS = ("act_fn", "activation_fn", "act")


@dataclass
class Form:
    name: str
    linears: Tuple[str, ...]          # attributes that must be plain nn.Linear
    reference: Callable               # (module, act module, x) -> eager formula
    weights: Callable                 # module -> (wg, bg, wu, bu, wd, bd)
    dropout_attr: Optional[str] = None
    cast_down: bool = False


def _ref_separate(m, act, x):
    return m.down_proj(act(m.gate_proj(x)) * m.up_proj(x))


def _ref_gate_up(m, act, x):
    g, u = m.gate_up_proj(x).chunk(2, dim=-1)
    return m.down_proj(u * act(g))


def _ref_t5(m, act, x):
    h = m.dropout(act(m.wi_0(x)) * m.wi_1(x))
    if h.dtype != m.wo.weight.dtype:
        h = h.to(m.wo.weight.dtype)
    return m.wo(h)


def _wb(lin):
    return lin.weight, lin.bias


FORMS = (
    Form("separate", ("gate_proj", "up_proj", "down_proj"), _ref_separate,
         lambda m: (*_wb(m.gate_proj), *_wb(m.up_proj), *_wb(m.down_proj))),
    Form("gate_up", ("gate_up_proj", "down_proj"), _ref_gate_up,
         lambda m: (*_wb(m.gate_up_proj), None, None, *_wb(m.down_proj))),
    Form("t5", ("wi_0", "wi_1", "wo"), _ref_t5,
         lambda m: (*_wb(m.wi_0), *_wb(m.wi_1), *_wb(m.wo)), dropout_attr="dropout",
         cast_down=True),
)


def _act_attr(m) -> Optional[str]:
    for a in ACT_ATTRS:
        if isinstance(getattr(m, a, None), nn.Module):
            return a
    return None


def candidate(m) -> Optional[Form]:
    """The form whose submodules `m` has (not yet verified), else None."""
    if _act_attr(m) is None:
        return None
    for f in FORMS:
        if all(isinstance(getattr(m, a, None), nn.Module) for a in f.linears) and (
                f.dropout_attr is None or hasattr(m, f.dropout_attr)):
            return f
    return None


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def verify(m, form: Form, forward, act_name: str) -> Optional[str]:
    """None if `forward` (the module's current forward) computes `form`; else the reason
    it is left alone."""
    name = type(m).__name__
    for a in form.linears:
        lin = getattr(m, a)
        if type(lin) is not nn.Linear:
            return (f"{a} is {type(lin).__module__}.{type(lin).__name__}, not a plain "
                    "nn.Linear (LoRA / quantised); left alone, eager path kept")
        w = lin.weight
        if w.device.type == "meta":
            return (f"{a}.weight is on the meta device: apply the surgery after the weights "
                    "are materialised (it is redone automatically when applied again)")
        if not w.is_floating_point():
            return f"{a}.weight is not floating point; left alone"
    if form.dropout_attr is not None:
        d = getattr(m, form.dropout_attr)
        if type(d) is not nn.Dropout or not 0.0 <= d.p < 1.0:
            return f"{form.dropout_attr} is not an nn.Dropout with p < 1; left alone"
    first = getattr(m, form.linears[0])
    hidden = first.in_features
    w = first.weight
    flags = [(mod, mod.training) for mod in m.modules()]
    g = torch.Generator(device=w.device).manual_seed(0)
    x = torch.randn(2, 3, hidden, generator=g, device=w.device, dtype=w.dtype)
    act = getattr(m, _act_attr(m))
    try:
        m.eval()
        with torch.no_grad():
            got = forward(x)
            want = form.reference(m, act, x)
    except Exception as e:  # any failure: not this form
        return f"{name}: probe forward failed ({type(e).__name__}: {e}); left alone"
    finally:
        for mod, t in flags:
            mod.training = t
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return f"{name}.forward returns something else than the {form.name} gated MLP"
    tol = 1e-5 if w.dtype == torch.float32 else 2e-2
    err = _rel(got, want)
    if not err <= tol:
        return (f"{name}.forward differs from the {form.name} gated MLP formula on a probe "
                f"(relative {err:.1e}): gated form not recognised, exact path unavailable")
    return None


def make_forward(m, form: Form, act: str, mode: str, tile_tokens: int):
    """The replacement forward: the exact autograd function on the module's current
    weights (read at each call, so re-materialised weights are used)."""
    from .gated import gated_mlp_weights
    from .weak_binding import module_ref
    drop = getattr(m, form.dropout_attr) if form.dropout_attr else None
    module = module_ref(m)  # stored on m: holding m itself would make a cycle

    def forward(x, *args, **kwargs):
        p = drop.p if (drop is not None and drop.training) else 0.0
        return gated_mlp_weights(x, *form.weights(module()), act, mode, tile_tokens, p,
                                 form.cast_down)

    forward.__unswag__ = True
    return forward
