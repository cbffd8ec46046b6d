"""Long-context training mode for decoder LLMs (Llama, Mistral, Qwen2, Qwen3).

    from unswag import apply_unswag_surgery
    apply_unswag_surgery(model, long_context=True)      # or LongContextConfig(...)
    loss = model(input_ids=ids, labels=ids).loss        # logits is None in this mode
    loss.backward()

What a step keeps, per token: on the host, each layer's input (and, by default, its
attention output and logsumexp, so the backward runs no attention forward); on the
GPU, one (tokens x hidden) residual tensor plus, during one layer's backward, K, V
and their fp32 gradients.  Everything else lives one chunk at a time (engine.py).
Exact: the model's own modules on chunks, attention exactly (attention.py), fp32
sums of the parameter gradients.  Calls without labels (inference, generation) run
the model's original forward unchanged.

Sequence parallelism (one sequence split over the ranks of a process group, each rank
holding a contiguous slice; docs/multi_gpu.md):

    cfg = LongContextConfig(sequence_parallel=group)    # e.g. dist.group.WORLD
    apply_unswag_surgery(model, long_context=cfg)
    loss = model(**split_sequence(ids, labels, group)).loss   # the whole sequence's loss
    loss.backward()       # every rank: the whole sequence's parameter gradients
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import sequence_parallel as SP
from . import sharding
from .engine import LongContextLM, Run, all_params, forward_step, host_bytes_per_token, host_specs
from .host_store import HostMemoryError, HostStore
from .model import NORMS, SUPPORTED, UnsupportedModelError, inspect_model
from .sequence_parallel import split_sequence

__all__ = [
    "SUPPORTED",
    "HostMemoryError",
    "LongContextConfig",
    "UnsupportedModelError",
    "host_bytes",
    "host_bytes_per_token",
    "inspect_model",
    "last_step",
    "make_forward",
    "release_host_memory",
    "reserve_host_memory",
    "split_sequence",
]


@dataclass(frozen=True)
class LongContextConfig:
    """chunk_tokens: tokens per chunk of every token-wise op and of attention's queries.
    loss_chunk_tokens: rows per chunk of the LM head + cross-entropy.
    keep_attention: keep each layer's attention output and logsumexp on the host so the
        backward needs no attention forward (True), recompute it (False), or keep it
        when the host has room for it, under half its memory ("auto").
    norm: "model" runs the model's own RMSNorm modules on each chunk; "unswag" computes
        the Llama-style ones with libunswag's RMSNorm kernel (same weight and rounding,
        docs/rmsnorm.md); opt-in until measured faster on a GPU.
    sequence_parallel: a torch.distributed ProcessGroup of P ranks that share each
        sequence (rank r holds tokens [r*T/P, (r+1)*T/P) of every sequence of the
        batch: split_sequence), or None (one process holds whole sequences).  P must
        divide the numbers of attention and KV heads.  Every rank returns the whole
        sequence's loss, and its backward leaves the whole sequence's parameter
        gradients (summed over the group), so DDP / FSDP2 over these ranks or over a
        separate data-parallel group average them as usual."""
    chunk_tokens: int = 8192
    loss_chunk_tokens: int = 2048
    keep_attention: bool | str = "auto"
    norm: str = "model"
    sequence_parallel: object = None

    def __post_init__(self):
        for name in ("chunk_tokens", "loss_chunk_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"LongContextConfig.{name} must be a positive int, got {v!r}")
        if self.norm not in NORMS:
            raise ValueError(f"LongContextConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.keep_attention not in (True, False, "auto"):
            raise ValueError("LongContextConfig.keep_attention must be True, False or 'auto', "
                             f"got {self.keep_attention!r}")
        if self.sequence_parallel is not None:
            SP.check_group(self.sequence_parallel)


# keyword arguments a training call may pass that change nothing here
_HARMLESS = {"use_cache": (None, False), "output_attentions": (None, False),
             "output_hidden_states": (None, False), "return_dict": (None, True),
             "cache": (None,), "past_key_values": (None,), "logits_to_keep": (None, 0)}


def _check_call(kwargs, ids) -> None:
    for k, v in kwargs.items():
        if k in _HARMLESS and any(v is ok or v == ok for ok in _HARMLESS[k]):
            continue
        raise NotImplementedError(
            f"unswag long-context mode: {k}={v!r} is not supported in a training call "
            "(it computes the loss without logits, cache or hidden states)")
    if ids is None:
        raise NotImplementedError("unswag long-context mode needs input_ids "
                                  "(inputs_embeds is not supported)")
    if ids.dim() != 2:
        raise ValueError(f"unswag long-context mode: input_ids must be (batch, tokens), got "
                         f"{tuple(ids.shape)}")


def _keep_attention(cfg: LongContextConfig, parts, T: int, B: int, dtype, device) -> bool:
    if cfg.keep_attention != "auto":
        return bool(cfg.keep_attention)
    from .host_store import _mem_total_bytes
    total = _mem_total_bytes()
    need = host_bytes_per_token(parts, True, dtype) * T * B
    return device.type == "cuda" and (total == 0 or need <= 0.5 * total)


def make_forward(model, original, cfg: LongContextConfig):
    """A replacement ``forward`` for `model` (a supported *ForCausalLM): calls with labels
    run the long-context step, all others the original forward."""
    from ..weak_binding import module_ref, weak_original
    parts = inspect_model(model, cfg.norm)
    # the forward is stored on `model`: it reaches the model only through weak references
    original, model_ref = weak_original(model, original), module_ref(model)
    group = cfg.sequence_parallel
    if group is not None and torch.distributed.get_world_size(group) == 1:
        group = None  # one rank holds the whole sequence: the plain path
    if group is not None:
        SP.check_model(parts, group)
    stores = {}

    def layout(B: int, T: int, device):
        """The host store of `device`, the chunks and whether attention outputs are kept."""
        store = stores.get(device)
        if store is None:
            store = stores[device] = HostStore(device)
        chunk = cfg.chunk_tokens
        keep = _keep_attention(cfg, parts, T, B, parts.embed.weight.dtype, device)
        return store, [(s, min(s + chunk, T)) for s in range(0, T, chunk)], keep

    def reserve(B: int, T: int, device) -> int:
        sp = None
        if group is not None:  # `tokens` counts the whole sequence
            T //= torch.distributed.get_world_size(group)
            sp = SP.describe(group, T)
        store, chunks, keep = layout(B, T, device)
        return store.plan(host_specs(parts, B, chunks, keep, parts.embed.weight.dtype, sp))

    def forward(*args, labels=None, **kwargs):
        shift = kwargs.pop("shift_labels", None)
        if labels is None and shift is None:
            return original(*args, **kwargs)
        if len(args) > 1:
            raise NotImplementedError("unswag long-context mode: pass arguments other than "
                                      "input_ids by keyword")
        ids = args[0] if args else kwargs.pop("input_ids", None)
        mask = kwargs.pop("attention_mask", None)
        pos = kwargs.pop("position_ids", None)
        num_items = kwargs.pop("num_items_in_batch", None)
        ignore = int(kwargs.pop("ignore_index", -100))
        if kwargs.pop("inputs_embeds", None) is not None:
            ids = None
        _check_call(kwargs, ids)
        B, T = ids.shape
        sp = None
        if group is not None:
            sp = SP.describe(group, T)
            SP.check_shapes(sp, B, T, ids.device)
        if mask is not None and not bool((mask != 0).all()):
            raise NotImplementedError(
                "unswag long-context mode: attention_mask with padding (zeros) is not "
                "supported; every token attends all earlier tokens (pack sequences without "
                "padding, or pass no mask)")
        total = T if sp is None else sp.total
        for i, L in enumerate(parts.layers):
            if L.sliding_window is not None and total > L.sliding_window:
                raise NotImplementedError(
                    f"unswag long-context mode: layer {i} uses a sliding window of "
                    f"{L.sliding_window} tokens and the sequence has {total}; sliding-window "
                    "attention is not supported")
        if parts.attention_dropout and model_ref().training:
            raise NotImplementedError("unswag long-context mode: attention dropout "
                                      f"{parts.attention_dropout} is not supported in training")
        if pos is None:
            pos = (torch.arange(T, device=ids.device).unsqueeze(0) if sp is None
                   else SP.positions(sp, T, ids.device))
        if shift is None:
            shift = (F.pad(labels, (0, 1), value=ignore)[..., 1:] if sp is None
                     else SP.shift_labels(labels.to(ids.device), ignore, sp))
        denom = None
        if num_items is not None:  # under sequence parallelism: the whole sequence's count
            denom = float(num_items.item() if torch.is_tensor(num_items) else num_items)
        elif sp is not None:
            denom = SP.target_count(shift.to(ids.device), ignore, sp)
        sharded = sharding.check_layout(model_ref(), parts)
        # taken per call: FSDP2 swaps the modules' parameters (sharded / unsharded)
        params = sharding.step_params(parts, all_params) if sharded else all_params(parts)
        store, chunks, keep = layout(B, T, ids.device)
        run = Run(parts=parts, store=store, chunks=chunks, keep_attention=keep,
                  position_ids=pos, targets=shift.to(ids.device), ignore_index=ignore,
                  denom=denom, loss_chunk=cfg.loss_chunk_tokens, params=params, sp=sp)
        need_grad = torch.is_grad_enabled() and (
            sharding.any_needs_grad(parts) if sharded else any(p.requires_grad for p in params))
        if need_grad and not any(p.requires_grad for p in params):
            raise NotImplementedError(
                "unswag long-context mode: under FSDP2 with sharded layers, the embedding, "
                "final norm or head must be trainable (the step's gradients flow through them)")
        if need_grad:
            loss = LongContextLM.apply(run, ids, *params)
        else:
            with torch.no_grad():
                loss, _ = forward_step(run, ids, False)
        forward.last_run = run.stats | {"keep_attention": run.keep_attention,
                                        "chunks": len(run.chunks),
                                        "sequence_parallel": 1 if sp is None else sp.size}
        from transformers.modeling_outputs import CausalLMOutputWithPast
        return CausalLMOutputWithPast(loss=loss, logits=None)

    forward.__unswag__ = True
    forward.last_run = {}
    forward.host_stores = stores
    forward.reserve = reserve
    return forward


def last_step(model) -> dict:
    """What the model's last long-context training call did: host bytes used by its
    layout, whether attention outputs were kept, the number of chunks ({} before any)."""
    fwd = model.__dict__.get("forward") or model.__dict__.get("_old_forward")
    return dict(getattr(fwd, "last_run", {}))


def host_bytes(model) -> int:
    """Host bytes the long-context mode holds for `model` (pinned arena capacity)."""
    fwd = model.__dict__.get("forward") or model.__dict__.get("_old_forward")
    stores = getattr(fwd, "host_stores", {}) if fwd is not None else {}
    return sum(s.capacity for s in stores.values())


def reserve_host_memory(model, tokens: int, batch: int = 1) -> int:
    """Allocates and page-locks now the host memory that a training step of `batch` x
    `tokens` will keep, so that the first step does not pay for it; returns its bytes.
    HostMemoryError if the host cannot hold it."""
    fwd = model.__dict__.get("forward") or model.__dict__.get("_old_forward")
    if getattr(fwd, "reserve", None) is None:
        raise ValueError("reserve_host_memory: the model is not in the long-context mode "
                         "(apply_unswag_surgery(model, long_context=True) first)")
    return fwd.reserve(int(batch), int(tokens), next(model.parameters()).device)


def release_host_memory(model) -> None:
    fwd = model.__dict__.get("forward") or model.__dict__.get("_old_forward")
    for s in getattr(fwd, "host_stores", {}).values():
        s.release()

