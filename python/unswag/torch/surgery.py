"""Model surgery: give every activation of a loaded PyTorch model its UnSwag protocol.

    from unswag import apply_unswag_surgery
    report = apply_unswag_surgery(model)          # in place; returns a report
    print(report)
    model.activation_checkpointing_enable()       # still works
    remove_unswag_surgery(model)                   # the original model, exactly

Protocols (DESIGN.md §1):

- relu, leaky_relu, relu6, hardtanh modules: exact, 1 bit kept for backward;
- non-gated silu / gelu / gelu-tanh modules: exact forward, ``bits``-bit
  codebook backward (default DEFAULT_BITS); the built-in codebook, or with
  ``calibrate=N`` one fitted per layer to the inputs of its first N calls, or with
  ``codes="stochastic"`` unbiased random codes (a fresh seed every call);
- gated MLPs (SwiGLU / GeGLU) in the forms of unswag.torch.gated_forms (separate
  gate/up projections, Phi-3's fused ``gate_up_proj``, T5 v1.1's ``wi_0``/``wi_1``),
  each verified on a probe, with plain ``nn.Linear`` projections: one fused autograd
  function, exact, in mode ``fused`` (keeps x, g, u) or ``recompute`` (keeps x only);
- an activation whose output is multiplied by another tensor in a form not recognised
  is left alone and reported, never coded (unswag.torch.flow finds them);
- relu whose output the next layer keeps anyway is left alone (a code saves nothing);
- Hugging Face models that support it are switched to SDPA attention;
- opt-in, ``lm_loss="chunked"``: a causal LM's loss is computed by a chunked
  linear + cross-entropy that never keeps the (tokens x vocab) logits; the
  output's ``logits`` is then None whenever ``labels`` are given.

Weights, buffers and ``state_dict`` are untouched (activation modules have no
state; gated MLPs only get a new ``forward``).  Accelerate hooks are kept (the
hooked ``_old_forward`` is replaced, not the hook).  Linear layers that are
not plain ``nn.Linear`` (LoRA, bitsandbytes, ...) are left alone and reported.
Applying twice with the same options changes nothing; with other options, or when
the model's parameters, devices or modules changed since (e.g. patched on ``meta``,
then ``to_empty``), the surgery is redone from the original (the latter with a
warning).
"""
from __future__ import annotations

import inspect
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .._native import DEFAULT_BITS

_STATE = "_unswag_surgery"
_THE_MODEL = object()  # stands for the patched model in its own undo records
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
                "Softsign", "Tanhshrink", "Threshold", "LogSigmoid"}

ATTENTION_IMPLS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
_EXACT_ACTS = ("relu", "relu6", "leaky_relu", "hardtanh")


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


def _make_module(act: str, params: Dict[str, Any], bits: int, codes: str = "deterministic"):
    from . import modules as M
    if act == "relu":
        return M.ReLU()
    if act == "relu6":
        return M.ReLU6()
    if act == "leaky_relu":
        return M.LeakyReLU(params["slope"])
    if act == "hardtanh":
        return M.Hardtanh(params["lo"], params["hi"])
    if act == "silu":
        return M.SiLU(bits=bits, codes=codes)
    if act == "gelu":
        return M.GELU("none", bits=bits, codes=codes)
    return M.GELU("tanh", bits=bits, codes=codes)


def _forward_slot(m) -> str:
    # accelerate's add_hook_to_module wraps `forward` and calls `_old_forward`
    return "_old_forward" if (hasattr(m, "_hf_hook") and "_old_forward" in m.__dict__) \
        else "forward"


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
    from .lm_loss import causal_lm_loss
    from .weak_binding import weak_original
    base = getattr(model, model.base_model_prefix)
    head = model.lm_head
    original = weak_original(model, original)  # the closure must not hold `model` (cycle)

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
    """What apply_unswag_surgery did: patched (path, protocol), left alone (path, reason),
    and for each patched module the bytes kept for backward before -> after
    (``kept_bytes[path] = (before, after, unit)``, measured on a probe) and its code
    (``codes[path]``: codebook kind and bits, or the exact path)."""
    patched: List[Tuple[str, str]] = field(default_factory=list)
    left_alone: List[Tuple[str, str]] = field(default_factory=list)
    attention: str = "unchanged"
    options: Dict[str, Any] = field(default_factory=dict)
    kept_bytes: Dict[str, Tuple[float, float, str]] = field(default_factory=dict)
    codes: Dict[str, str] = field(default_factory=dict)
    # modules whose code can change after the surgery (calibrated codebooks): their
    # line is read from the module when printed
    live: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for _, proto in self.patched:
            out[proto] = out.get(proto, 0) + 1
        return out

    def _line(self, p: str, proto: str) -> str:
        out = f"      {p}: {proto}"
        if p in self.live:
            out += f"; {self.live[p].codebook_text()}"
        elif p in self.codes:
            out += f"; {self.codes[p]}"
        if p in self.kept_bytes:
            b0, b1, unit = self.kept_bytes[p]
            out += f"; kept for backward {b0:g} -> {b1:g} bytes per {unit}"
        return out

    def __str__(self) -> str:
        lines = [f"UnSwag surgery ({', '.join(f'{k}={v}' for k, v in self.options.items())})",
                 f"  attention: {self.attention}",
                 f"  patched: {len(self.patched)}"]
        for proto, n in sorted(self.counts().items()):
            lines.append(f"    {n:4d} x {proto}")
        lines += [self._line(p, proto) for p, proto in self.patched[:50]]
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
    except Exception as e:  # report, never break the model
        return f"unchanged ({impl} refused: {e})", None
    if cfg._attn_implementation != impl:
        return f"unchanged ({type(model).__name__} kept {cfg._attn_implementation})", None
    return f"{old} -> {impl}", old


def _int_arg(name: str, v, allowed=None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"apply_unswag_surgery: {name} must be an int, got "
                        f"{type(v).__name__} {v!r}")
    v = int(v)
    if allowed is not None and v not in allowed:
        raise ValueError(f"apply_unswag_surgery: {name} must be one of {allowed}, got {v}")
    if allowed is None and v <= 0:
        raise ValueError(f"apply_unswag_surgery: {name} must be a positive int, got {v}")
    return v


def _choice_arg(name: str, v, allowed) -> Optional[str]:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"apply_unswag_surgery: {name} must be a str or None, got "
                        f"{type(v).__name__} {v!r}")
    if v not in allowed:
        raise ValueError(f"apply_unswag_surgery: {name} must be one of "
                         f"{tuple(a for a in allowed if a is not None)} or None, got {v!r}")
    return v


def _optional_int_arg(name: str, v) -> Optional[int]:
    return None if v is None else _int_arg(name, v)


def _check_args(model, bits, gated, tile_tokens, attention, activations, lm_loss,
                calibrate=None, recalibrate_every=None, codes="deterministic"):
    import torch.nn as nn
    if not isinstance(model, nn.Module):
        raise TypeError("apply_unswag_surgery: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    if not isinstance(activations, bool):
        raise TypeError(f"apply_unswag_surgery: activations must be a bool, got "
                        f"{type(activations).__name__} {activations!r}")
    calibrate = _optional_int_arg("calibrate", calibrate)
    recalibrate_every = _optional_int_arg("recalibrate_every", recalibrate_every)
    if recalibrate_every is not None and (calibrate is None or recalibrate_every <= calibrate):
        raise ValueError("apply_unswag_surgery: recalibrate_every needs calibrate and must "
                         f"exceed it (got calibrate={calibrate}, "
                         f"recalibrate_every={recalibrate_every})")
    codes = _choice_arg("codes", codes, ("deterministic", "stochastic"))
    if codes == "stochastic" and calibrate is not None:
        raise ValueError("apply_unswag_surgery: codes='stochastic' has no codebook to "
                         "calibrate; pass calibrate=None")
    return dict(bits=_int_arg("bits", bits, (1, 2, 4, 8)), codes=codes,
                gated=_choice_arg("gated", gated, GATED_MODES + (None,)),
                tile_tokens=_int_arg("tile_tokens", tile_tokens),
                attention=_choice_arg("attention", attention, ATTENTION_IMPLS + (None,)),
                activations=activations,
                lm_loss=_choice_arg("lm_loss", lm_loss, ("chunked", None)),
                calibrate=calibrate, recalibrate_every=recalibrate_every)


def _fingerprint(model):
    """What must not change between two applications: every parameter and buffer
    (object, device, dtype, shape, storage) and every module's type at its path."""
    import itertools
    ts = itertools.chain(model.named_parameters(remove_duplicate=False),
                         model.named_buffers(remove_duplicate=False))
    return (tuple((n, id(t), str(t.device), t.dtype, tuple(t.shape),
                   0 if t.device.type == "meta" else t.data_ptr()) for n, t in ts),
            tuple((p, type(m)) for p, m in model.named_modules(remove_duplicate=False)))


def _model_dtype(model):
    import torch
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _codebook_text(act: str, bits: int, codes: str = "deterministic") -> str:
    if act in _EXACT_ACTS:
        return "exact 1-bit predicate code (no codebook)"
    if codes == "stochastic":
        from .modules import stochastic_codebook_text
        return stochastic_codebook_text(act, bits)
    from .functional import codebook
    rms = codebook(act, bits)[2]
    return f"codebook: built-in {act}, {bits} bit ({1 << bits} levels, L2 rms {rms:.4g})"


def _activation_decision(act: str, use) -> Optional[str]:
    """None if the activation should be coded, else why it is left alone."""
    if use.product:
        return (f"output multiplied by another tensor ({use.where[0]}): gated form not "
                "recognised: exact path unavailable; kept")
    if use.unknown:
        return (f"use of its output not followed ({use.unknown[0]}); kept, so that no "
                "unrecognised gated product gets a code")
    if act == "relu" and not use.dropout_p > 0:
        return ("torch keeps relu's output, which the next layer keeps anyway: a 1-bit code "
                "would save nothing (it adds 1 bit an element); kept")
    return None


def apply_unswag_surgery(model, *, bits: int = DEFAULT_BITS, gated: Optional[str] = "fused",
                         tile_tokens: int = 2048, attention: Optional[str] = "sdpa",
                         activations: bool = True,
                         lm_loss: Optional[str] = None,
                         long_context=False, calibrate: Optional[int] = None,
                         recalibrate_every: Optional[int] = None,
                         codes: str = "deterministic") -> SurgeryReport:
    """Patch `model` in place; returns a SurgeryReport.

    bits: code width for non-gated silu/gelu (1, 2, 4 or 8); the relu family is
        always exact with 1 bit.
    gated: "fused" or "recompute" for SwiGLU/GeGLU MLPs, or None to leave them.
    tile_tokens: tile height (tokens, a positive int) of the recompute mode and of the
        chunked loss.
    attention: one of ATTENTION_IMPLS to switch Hugging Face models that support it,
        None to keep.
    activations: False leaves standalone activation modules alone.
    lm_loss: "chunked" computes a causal LM's loss without keeping its logits (the
        output's logits are None when labels are given); None (default) keeps it.
    long_context: True, or a ``unswag.torch.long_context.LongContextConfig``, runs
        training calls (those with labels) of a Llama / Mistral / Qwen2 / Qwen3 causal
        LM through the long-context mode: layer inputs and attention outputs on the
        host, every layer in sequence chunks, the loss without logits
        (docs/long_context.md).  Raises UnsupportedModelError for other models.
    calibrate: None (default: the built-in codebooks), or N: each patched silu/gelu
        records its inputs during its first N training forward calls (train mode,
        gradients on; built-in codebook meanwhile), then fits its own codebook to them
        (unswag.torch.calibration).
    recalibrate_every: with calibrate=N, K > N repeats that every K training calls.
    codes: "deterministic" (default: the codebook's piecewise-constant f') or
        "stochastic": unbiased random codes for silu/gelu (E[level] = f'(x); a fresh
        seed from torch's default generator every forward call; no calibration).

    Raises TypeError / ValueError for arguments of the wrong type or value.
    """
    from . import gated_forms as GF
    from . import ops  # noqa: F401  (fails early, with a clear error, if torch is absent)
    from . import probe_bytes as PB
    from .flow import Analyzer, functional_activations
    options = _check_args(model, bits, gated, tile_tokens, attention, activations, lm_loss,
                          calibrate, recalibrate_every, codes)
    bits, tile_tokens = options["bits"], options["tile_tokens"]
    lc_cfg = _long_context_config(long_context)
    options["long_context"] = lc_cfg
    state = model.__dict__.get(_STATE)
    if state is not None:
        stale = state["fingerprint"] != _fingerprint(model)
        if state["options"] == options and not stale:
            return state["report"]
        if stale:
            warnings.warn("apply_unswag_surgery: the model's parameters, devices or modules "
                          "changed since the last surgery (e.g. materialised from meta with "
                          "to_empty); the surgery is redone", UserWarning, stacklevel=2)
        remove_unswag_surgery(model)

    report = SurgeryReport(options=options)
    undo: List[Tuple] = []
    inside_gated = {}  # id(act module) -> why its gated MLP was left alone
    covered = set()  # act modules of patched gated MLPs: no longer called
    flow = Analyzer(model)
    dtype = _model_dtype(model)

    # 1. gated MLPs
    for path, m in model.named_modules():
        form = GF.candidate(m)
        if form is None:
            continue
        act_mod = getattr(m, GF._act_attr(m))
        cls = _classify_activation(act_mod)
        slot = _forward_slot(m)
        reason = None
        if cls is None or cls[0] not in ("silu", "gelu", "gelu_tanh"):
            reason = (f"activation {type(act_mod).__name__} is not silu/gelu/gelu_tanh; "
                      "left alone")
        if reason is None:
            reason = GF.verify(m, form, getattr(m, slot), cls[0])
        if reason is None and gated is None:
            reason = "gated MLP left alone (gated=None)"
        if reason is not None:
            inside_gated[id(act_mod)] = reason
            report.left_alone.append((path, reason))
            continue
        covered.add(id(act_mod))
        had = slot in m.__dict__
        original = getattr(m, slot)
        new = GF.make_forward(m, form, cls[0], gated, tile_tokens)
        hidden = getattr(m, form.linears[0]).in_features
        like = getattr(m, form.linears[0]).weight
        b0 = PB.per_token(m, original, hidden, like)
        undo.append(("forward", m, slot, had, m.__dict__.get(slot)))
        object.__setattr__(m, slot, new)
        b1 = PB.per_token(m, new, hidden, like)
        report.patched.append((path, f"gated {cls[0]} {gated}"
                               + (f" (tile {tile_tokens})" if gated == "recompute" else "")))
        report.codes[path] = f"exact ({form.name} form: {type(m).__name__}), no code"
        report.kept_bytes[path] = (b0, b1, "token")

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
                    (path, f"{tname} inside a gated MLP left alone "
                           f"({inside_gated[id(child)]}): a code of the gate cannot replace "
                           "it (docs/gated_mlp.md); kept"))
                continue
            if not activations:
                report.left_alone.append((path, "activations=False"))
                continue
            act, params = cls
            why = _activation_decision(act, flow.use(child))
            if why is not None:
                report.left_alone.append((path, why))
                continue
            new = _make_module(act, params, bits, options["codes"])
            b0, b1 = PB.per_element(child, dtype), PB.per_element(new, dtype)
            undo.append(("child", parent, cname, child))
            setattr(parent, cname, new)
            proto = "exact 1 bit" if act in _EXACT_ACTS else f"{bits} bit"
            report.patched.append((path, f"{act} {proto}"))
            report.codes[path] = _codebook_text(act, 1 if act in _EXACT_ACTS else bits,
                                                options["codes"])
            if act not in _EXACT_ACTS and calibrate is not None:
                new.start_calibration(calibrate, recalibrate_every, train_only=True)
                report.live[path] = new
            report.kept_bytes[path] = (b0, b1, "element")

    # 2b. activation functions called inside forward code: nothing to replace
    for path, call in functional_activations(model):
        report.left_alone.append((path, f"functional call: not patched ({call})"))

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

    # the undo records live on the model: they name it by _THE_MODEL, not by a reference
    # (a reference would make a cycle that only the cyclic garbage collector frees)
    undo = [tuple(_THE_MODEL if x is model else x for x in item) for item in undo]
    model.__dict__[_STATE] = {"options": options, "report": report, "undo": undo,
                              "fingerprint": _fingerprint(model)}
    return report


def _long_context_config(long_context):
    if long_context is False or long_context is None:
        return None
    from .long_context import LongContextConfig
    if long_context is True:
        return LongContextConfig()
    if isinstance(long_context, LongContextConfig):
        return long_context
    raise TypeError("long_context must be True, False or a LongContextConfig, got "
                    f"{long_context!r}")


def _apply_long_context(model, cfg, report, undo) -> None:
    from .long_context import host_bytes_per_token, inspect_model, make_forward
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
    import torch.nn as nn
    if not isinstance(model, nn.Module):
        raise TypeError("remove_unswag_surgery: model must be a torch.nn.Module, got "
                        f"{type(model).__name__}")
    state = model.__dict__.pop(_STATE, None)
    if state is None:
        return False
    for item in reversed(state["undo"]):
        item = tuple(model if x is _THE_MODEL else x for x in item)
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
