"""The long-context mode under FSDP2 (``torch.distributed.fsdp.fully_shard``).

FSDP2 gathers a sharded module's parameters in hooks around the module's ``forward``.
The engine never calls a decoder layer's forward (it calls the layer's submodules on
chunks), so those hooks never fire for a layer sharded on its own.  Instead the engine
brackets each use of such a layer with FSDP2's public ``unshard()`` / ``reshard()``,
and in the backward hands the layer's gradients to the unsharded parameters' ``.grad``
(what autograd's accumulation would do); FSDP2's end-of-backward callback, queued by
the root module's hooks, reduce-scatters them into the sharded parameters.  No
communication is written here.

Supported layouts: ``fully_shard`` on each decoder layer and on the model (the root;
FSDP2's own recipe), or on the model only (its hooks then gather everything).  Sharding
a piece inside a layer (an MLP, a projection), or the layers without the model, is
refused with the reason.  Without FSDP2 every function here is a no-op.
"""
from __future__ import annotations

import contextlib
from typing import Dict, List

from torch import Tensor, nn

try:
    from torch.distributed.fsdp import FSDPModule
except ImportError:  # a torch without distributed support, or before FSDP2
    FSDPModule = None


def is_sharded(module: nn.Module) -> bool:
    return FSDPModule is not None and isinstance(module, FSDPModule)


def _inner_modules(parts) -> List[nn.Module]:
    mods = [parts.embed, parts.final_norm, parts.rotary, parts.lm_head]
    for L in parts.layers:
        mods += [m for m in (L.norm1, L.norm2, L.q_proj, L.k_proj, L.v_proj, L.o_proj,
                             L.q_norm, L.k_norm, L.mlp) if m is not None]
    return mods


def check_layout(model: nn.Module, parts) -> bool:
    """True when some decoder layer is an FSDP2 unit; NotImplementedError for layouts
    the engine cannot run (their parameters would stay sharded, or their gradients would
    never be reduced)."""
    if FSDPModule is None:
        return False
    for m in _inner_modules(parts):
        for sub in m.modules():
            if isinstance(sub, FSDPModule):
                raise NotImplementedError(
                    f"unswag long-context mode: fully_shard was applied to a "
                    f"{type(sub).__name__} inside the model; the mode runs fully_shard "
                    "applied to whole decoder layers and to the model (or to the model only)")
    layered = any(is_sharded(L.module) for L in parts.layers)
    if layered and not is_sharded(model):
        raise NotImplementedError(
            "unswag long-context mode: the decoder layers are sharded with fully_shard but "
            "the model is not; apply fully_shard to the model too (after its layers), so "
            "that FSDP2 reduces the layers' gradients at the end of the backward")
    return layered


@contextlib.contextmanager
def gathered(module: nn.Module):
    """The module's full parameters in place for the duration (FSDP2 unit), else nothing."""
    if not is_sharded(module):
        yield
        return
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def grad_dtype(p: Tensor):
    """The dtype autograd accumulates p's gradient in: p's own, or FSDP2's choice under a
    mixed-precision policy (fp32 gradients of bf16 unsharded parameters)."""
    return getattr(p, "grad_dtype", None) or p.dtype


def hand_over(acc: Dict[int, Tensor], params) -> None:
    """Moves the fp32 sums of `params` (the unsharded parameters of a gathered layer) from
    acc to their ``.grad``, rounded once to the dtype autograd would give them, as the
    engine does for the parameters it returns from its autograd function."""
    for p in params:
        g = acc.pop(id(p), None)
        if g is None:
            continue
        g = g.to(grad_dtype(p))
        if p.grad is None:
            p.grad = g
        else:
            p.grad += g


def step_params(parts, all_params) -> List[nn.Parameter]:
    """The parameters the engine's autograd function takes (and returns gradients for):
    all of them, less those of FSDP2-sharded layers, which are gathered and given their
    gradients per layer (their sharded parameters are not what the step computes with)."""
    skip = set()
    for L in parts.layers:
        if is_sharded(L.module):
            skip.update(id(p) for p in L.module.parameters())
    return [p for p in all_params(parts) if id(p) not in skip]


def any_needs_grad(parts) -> bool:
    return any(p.requires_grad for L in parts.layers for p in L.module.parameters()) or any(
        p.requires_grad for m in (parts.embed, parts.final_norm, parts.lm_head)
        for p in m.parameters())


__all__ = [
    "any_needs_grad",
    "check_layout",
    "gathered",
    "hand_over",
    "is_sharded",
    "step_params",
]
