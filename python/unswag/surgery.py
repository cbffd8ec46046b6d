"""Model surgery: give every activation of a loaded PyTorch model its UnSwag protocol.

    from unswag import apply_unswag_surgery
    report = apply_unswag_surgery(model)          # in place; returns a report
    print(report)
    model.gradient_checkpointing_enable()         # still works
    remove_unswag_surgery(model)                   # the original model, exactly

Protocols (DESIGN.md §1):

- relu, leaky_relu, relu6, hardtanh modules: exact, 1 bit kept for backward;
- non-gated silu / gelu / gelu-tanh modules: exact forward, ``bits``-bit
  codebook backward (default 2);
- gated MLPs (SwiGLU / GeGLU: ``down_proj(act(gate_proj(x)) * up_proj(x))``)
  with plain ``nn.Linear`` projections: one fused autograd function, exact,
  in mode ``fused`` (keeps x, g, u) or ``recompute`` (keeps x only);
- Hugging Face models that support it are switched to SDPA attention;
- opt-in, ``lm_loss="chunked"``: a causal LM's loss is computed by a chunked
  linear + cross-entropy that never keeps the (tokens x vocab) logits; the
  output's ``logits`` is then None whenever ``labels`` are given.

Weights, buffers and ``state_dict`` are untouched (activation modules have no
state; gated MLPs only get a new ``forward``).  Accelerate hooks are kept (the
hooked ``_old_forward`` is replaced, not the hook).  Linear layers that are
not plain ``nn.Linear`` (LoRA, bitsandbytes, ...) are left alone and reported.
Applying twice with the same options changes nothing; with other options the
surgery is redone from the original.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

_STATE = "_unswag_surgery"
GATED_MODES = ("fused", "recompute")

# Hugging Face activation classes (transformers.activations), matched by name
# so that this module does not import transformers.
_HF_ACTS = {
    "GELUActivation": ("gelu", {}),
    "NewGELUActivation": ("gelu_tanh", {}),
    "PytorchGELUTanh": ("gelu_tanh", {}),
    "GELUTanh": ("gelu_tanh", {}),
    "FastGELUActivation": ("gelu_tanh", {}),
    "SiLUActivation": ("silu", {}),
}
_UNSUPPORTED = {"QuickGELUActivation", "ClippedGELUActivation", "AccurateGELUActivation",
                "MishActivation", "LinearActivation", "LaplaceActivation",
                "ReLUSquaredActivation", "Hardswish", "Hardsigmoid", "Mish", "Sigmoid",
                "Tanh", "ELU", "SELU", "CELU", "GLU", "Softplus", "PReLU", "RReLU",
                "Mish", "Softsign", "Tanhshrink", "Threshold", "LogSigmoid"}

_GATED_SRC = re.compile(
    r"self\.down_proj\(\s*self\.act_fn\(\s*self\.gate_proj\(\s*(\w+)\s*\)\s*\)\s*\*\s*"
    r"self\.up_proj\(\s*\1\s*\)\s*\)")


def _classify_activation(m) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(activation name, params) of a supported activation module, else None."""
    import torch.nn as nn
    t = type(m)
    if t is nn.ReLU:
        return "relu", {}
    if t is nn.ReLU6:
        return "relu6", {}
    if t is nn.LeakyReLU:
        return "leaky_relu", {"slope": float(m.negative_slope)}
    if t is nn.Hardtanh:
        return "hardtanh", {"lo": float(m.min_val), "hi": float(m.max_val)}
    if t is nn.SiLU:
        return "silu", {}
    if t is nn.GELU:
        return ("gelu" if m.approximate == "none" else "gelu_tanh"), {}
    if t.__module__.startswith("transformers.") and t.__name__ in _HF_ACTS:
        if t.__name__ == "GELUActivation":
            import torch.nn.functional as F
            fn = getattr(m, "act", F.gelu)
            if fn is not F.gelu and getattr(fn, "__name__", "") != "_gelu_python":
                return None
        return _HF_ACTS[t.__name__]
    return None


def _make_module(act: str, params: Dict[str, Any], bits: int):
    from .torch import modules as M
    if act == "relu":
        return M.ReLU()
    if act == "relu6":
        return M.ReLU6()
    if act == "leaky_relu":
        return M.LeakyReLU(params["slope"])
    if act == "hardtanh":
        return M.Hardtanh(params["lo"], params["hi"])
    if act == "silu":
        return M.SiLU(bits=bits)
    if act == "gelu":
        return M.GELU("none", bits=bits)
    return M.GELU("tanh", bits=bits)


def _gated_kind(m) -> Tuple[Optional[str], Optional[str]]:
    """For a module with gate_proj/up_proj/down_proj/act_fn: (activation, None) if it
    can be fused, (None, reason) if it must be left alone; (None, None) if it is
    not a gated MLP at all."""
    import torch.nn as nn
    if not all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        return None, None
    name = type(m).__name__
    try:
        src = inspect.getsource(type(m).forward)
    except (OSError, TypeError):
        src = ""
    if not _GATED_SRC.search(src):
        return None, (f"{name}.forward is not down_proj(act_fn(gate_proj(x)) * up_proj(x)); "
                      "left alone")
    for a in ("gate_proj", "up_proj", "down_proj"):
        lin = getattr(m, a)
        if type(lin) is not nn.Linear:
            return None, (f"{a} is {type(lin).__module__}.{type(lin).__name__}, not a plain "
                          "nn.Linear (LoRA / quantised); left alone, eager path kept")
        w = lin.weight
        if w.device.type == "meta" or not w.is_floating_point():
            return None, f"{a}.weight is on meta or not floating point; left alone"
    cls = _classify_activation(m.act_fn)
    if cls is None or cls[0] not in ("silu", "gelu", "gelu_tanh"):
        return None, (f"act_fn {type(m.act_fn).__name__} is not silu/gelu/gelu_tanh; "
                      "left alone")
    return cls[0], None


def _forward_slot(m) -> str:
    # accelerate's add_hook_to_module wraps `forward` and calls `_old_forward`
    return "_old_forward" if (hasattr(m, "_hf_hook") and "_old_forward" in m.__dict__) \
        else "forward"


def _make_gated_forward(m, act: str, mode: str, tile_tokens: int):
    from .torch.gated import gated_mlp

    def forward(x, *args, **kwargs):
        return gated_mlp(x, m.gate_proj, m.up_proj, m.down_proj, act, mode, tile_tokens)

    forward.__unswag__ = True
    return forward


def _lm_loss_kind(model) -> Tuple[bool, Optional[str]]:
    """(True, None) if `model` is a Hugging Face causal LM whose loss can be chunked;
    (False, reason) if it is one that must be left alone; (False, None) otherwise."""
    import torch.nn as nn
    name = type(model).__name__
    if not (name.endswith("ForCausalLM") or name.endswith("LMHeadModel")):
        return False, None
    head = getattr(model, "lm_head", None)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if type(head) is not nn.Linear or base is None:
        return False, f"{name}: lm_head is not a plain nn.Linear over a base model; kept"
    cfg = getattr(model, "config", None)
    if getattr(cfg, "final_logit_softcapping", None):
        return False, f"{name}: final logit softcapping is not in the chunked loss; kept"
    try:
        src = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        src = ""
    if "self.loss_function(" not in src or "self.lm_head(" not in src:
        return False, f"{name}.forward is not lm_head + loss_function; kept"
    return True, None


def _make_lm_forward(model, original, chunk_tokens: int):
    from .torch.lm_loss import causal_lm_loss
    base = getattr(model, model.base_model_prefix)
    head = model.lm_head

    def forward(*args, labels=None, **kwargs):
        if labels is None and kwargs.get("shift_labels") is None:
            return original(*args, **kwargs)  # inference: logits as before
        if len(args) > 1 or kwargs.get("return_dict") is False:
            return original(*args, labels=labels, **kwargs)
        if args:
            kwargs["input_ids"] = args[0]
        from transformers.modeling_outputs import CausalLMOutputWithPast
        kwargs.pop("logits_to_keep", None)
        num_items = kwargs.pop("num_items_in_batch", None)
        shift_labels = kwargs.pop("shift_labels", None)
        ignore = kwargs.pop("ignore_index", -100)
        out = base(**kwargs)
        loss = causal_lm_loss(out.last_hidden_state, head.weight, labels, head.bias, ignore,
                              chunk_tokens, num_items, shift_labels)
        return CausalLMOutputWithPast(loss=loss, logits=None,
                                      past_key_values=getattr(out, "past_key_values", None),
                                      hidden_states=getattr(out, "hidden_states", None),
                                      attentions=getattr(out, "attentions", None))

    forward.__unswag__ = True
    return forward


@dataclass
class SurgeryReport:
    """What apply_unswag_surgery did: patched (path, protocol), left alone (path, reason)."""
    patched: List[Tuple[str, str]] = field(default_factory=list)
    left_alone: List[Tuple[str, str]] = field(default_factory=list)
    attention: str = "unchanged"
    options: Dict[str, Any] = field(default_factory=dict)

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for _, proto in self.patched:
            out[proto] = out.get(proto, 0) + 1
        return out

    def __str__(self) -> str:
        lines = [f"UnSwag surgery ({', '.join(f'{k}={v}' for k, v in self.options.items())})",
                 f"  attention: {self.attention}",
                 f"  patched: {len(self.patched)}"]
        for proto, n in sorted(self.counts().items()):
            lines.append(f"    {n:4d} x {proto}")
        lines += [f"      {p}: {proto}" for p, proto in self.patched[:50]]
        if len(self.patched) > 50:
            lines.append(f"      ... {len(self.patched) - 50} more")
        lines.append(f"  left alone: {len(self.left_alone)}")
        lines += [f"      {p}: {why}" for p, why in self.left_alone]
        return "\n".join(lines)


def _set_attention(model, impl: str) -> Tuple[str, Optional[str]]:
    """Switch a Hugging Face model to `impl`; returns (description, previous value)."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "_attn_implementation"):
        return "unchanged (not a Hugging Face model)", None
    old = cfg._attn_implementation
    if old == impl:
        return f"already {impl}", None
    if impl == "sdpa" and not getattr(model, "_supports_sdpa", False):
        return f"unchanged ({type(model).__name__} does not support sdpa; stays {old})", None
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(impl)
        else:
            cfg._attn_implementation = impl
    except Exception as e:  # noqa: BLE001 - report, never break the model
        return f"unchanged ({impl} refused: {e})", None
    if cfg._attn_implementation != impl:
        return f"unchanged ({type(model).__name__} kept {cfg._attn_implementation})", None
    return f"{old} -> {impl}", old


def apply_unswag_surgery(model, *, bits: int = 2, gated: str = "fused",
                         tile_tokens: int = 2048, attention: Optional[str] = "sdpa",
                         activations: bool = True,
                         lm_loss: Optional[str] = None,
                         long_context=False) -> SurgeryReport:
    """Patch `model` in place; returns a SurgeryReport.

    bits: code width for non-gated silu/gelu (1, 2, 4 or 8); the relu family is
        always exact with 1 bit.
    gated: "fused" or "recompute" for SwiGLU/GeGLU MLPs, or None to leave them.
    tile_tokens: tile height (tokens) of the recompute mode and of the chunked loss.
    attention: "sdpa" to switch Hugging Face models that support it, None to keep.
    activations: False leaves standalone activation modules alone.
    lm_loss: "chunked" computes a causal LM's loss without keeping its logits (the
        output's logits are None when labels are given); None (default) keeps it.
    long_context: True, or a ``unswag.torch.long_context.LongContextConfig``, runs
        training calls (those with labels) of a Llama / Mistral / Qwen2 / Qwen3 causal
        LM through the long-context mode: layer inputs and attention outputs on the
        host, every layer in sequence chunks, the loss without logits
        (docs/long_context.md).  Raises UnsupportedModelError for other models.
    """
    from .torch import ops  # noqa: F401  (fails early, with a clear error, if torch is absent)
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8, got {bits}")
    if gated is not None and gated not in GATED_MODES:
        raise ValueError(f"gated must be one of {GATED_MODES} or None, got {gated!r}")
    if lm_loss not in (None, "chunked"):
        raise ValueError(f"lm_loss must be 'chunked' or None, got {lm_loss!r}")
    lc_cfg = _long_context_config(long_context)
    options = dict(bits=bits, gated=gated, tile_tokens=tile_tokens, attention=attention,
                   activations=activations, lm_loss=lm_loss, long_context=lc_cfg)
    state = model.__dict__.get(_STATE)
    if state is not None:
        if state["options"] == options:
            return state["report"]
        remove_unswag_surgery(model)

    report = SurgeryReport(options=options)
    undo: List[Tuple] = []
    inside_gated = set()  # act_fn of gated MLPs left alone: reported, kept
    covered = set()  # act_fn of fused gated MLPs: no longer called

    # 1. gated MLPs
    for path, m in model.named_modules():
        act, reason = _gated_kind(m)
        if act is None and reason is None:
            continue
        if reason is not None:
            inside_gated.add(id(m.act_fn))
            report.left_alone.append((path, reason))
            continue
        if gated is None:
            inside_gated.add(id(m.act_fn))
            report.left_alone.append((path, "gated MLP left alone (gated=None)"))
            continue
        covered.add(id(m.act_fn))
        slot = _forward_slot(m)
        had = slot in m.__dict__
        undo.append(("forward", m, slot, had, m.__dict__.get(slot)))
        object.__setattr__(m, slot, _make_gated_forward(m, act, gated, tile_tokens))
        report.patched.append((path, f"gated {act} {gated}"
                               + (f" (tile {tile_tokens})" if gated == "recompute" else "")))

    # 2. standalone activation modules
    for ppath, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            path = f"{ppath}.{cname}" if ppath else cname
            tname = type(child).__name__
            cls = _classify_activation(child)
            if cls is None:
                if tname in _UNSUPPORTED:
                    report.left_alone.append((path, f"{tname}: no UnSwag protocol"))
                continue
            if id(child) in covered:
                continue
            if id(child) in inside_gated:
                report.left_alone.append(
                    (path, f"{tname} inside a gated MLP: a code of the gate cannot replace it "
                           "(docs/gated_mlp.md); kept"))
                continue
            if not activations:
                report.left_alone.append((path, "activations=False"))
                continue
            act, params = cls
            new = _make_module(act, params, bits)
            undo.append(("child", parent, cname, child))
            setattr(parent, cname, new)
            proto = "exact 1 bit" if act in ("relu", "relu6", "leaky_relu", "hardtanh") \
                else f"{bits} bit"
            report.patched.append((path, f"{act} {proto}"))

    # 3. the causal-LM loss (opt-in); the long-context mode includes its own
    ok, reason = _lm_loss_kind(model)
    if lc_cfg is not None:
        _apply_long_context(model, lc_cfg, report, undo)
    elif lm_loss is not None and reason is not None:
        report.left_alone.append(("(model)", reason))
    elif lm_loss is not None and ok:
        slot = _forward_slot(model)
        had = slot in model.__dict__
        original = getattr(model, slot)
        undo.append(("forward", model, slot, had, model.__dict__.get(slot)))
        object.__setattr__(model, slot, _make_lm_forward(model, original, tile_tokens))
        report.patched.append(("(model)", f"lm loss chunked (chunk {tile_tokens} tokens)"))

    # 4. attention
    if attention is not None:
        report.attention, old = _set_attention(model, attention)
        if old is not None:
            undo.append(("attention", model, old))

    model.__dict__[_STATE] = {"options": options, "report": report, "undo": undo}
    return report


def _long_context_config(long_context):
    if long_context is False or long_context is None:
        return None
    from .torch.long_context import LongContextConfig
    if long_context is True:
        return LongContextConfig()
    if isinstance(long_context, LongContextConfig):
        return long_context
    raise TypeError("long_context must be True, False or a LongContextConfig, got "
                    f"{long_context!r}")


def _apply_long_context(model, cfg, report, undo) -> None:
    from .torch.long_context import host_bytes_per_token, inspect_model, make_forward
    parts = inspect_model(model)  # raises UnsupportedModelError with the reason
    slot = _forward_slot(model)
    had = slot in model.__dict__
    original = getattr(model, slot)
    fwd = make_forward(model, original, cfg)
    undo.append(("forward", model, slot, had, model.__dict__.get(slot)))
    object.__setattr__(model, slot, fwd)
    dtype = parts.embed.weight.dtype
    host = host_bytes_per_token(parts, True, dtype) / 1024
    host_x = host_bytes_per_token(parts, False, dtype) / 1024
    report.patched.append((
        "(model)", f"long-context mode: {len(parts.layers)} layers in chunks of "
        f"{cfg.chunk_tokens} tokens; host keeps {host:.1f} KiB/token with attention outputs "
        f"({host_x:.1f} without; keep_attention={cfg.keep_attention}); loss without logits "
        f"(chunks of {cfg.loss_chunk_tokens})"))


def remove_unswag_surgery(model) -> bool:
    """Undo apply_unswag_surgery exactly; returns False if the model was not patched."""
    state = model.__dict__.pop(_STATE, None)
    if state is None:
        return False
    for item in reversed(state["undo"]):
        kind = item[0]
        if kind == "forward":
            _, m, slot, had, old = item
            if had:
                object.__setattr__(m, slot, old)
            else:
                m.__dict__.pop(slot, None)
        elif kind == "child":
            _, parent, cname, child = item
            setattr(parent, cname, child)
        elif kind == "attention":
            _, m, old = item
            if hasattr(m, "set_attn_implementation"):
                m.set_attn_implementation(old)
            else:
                m.config._attn_implementation = old
    return True
