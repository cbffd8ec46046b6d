"""Bytes a module keeps for backward, measured with saved-tensor hooks on a small probe.

The surgery reports, for each module it patches, what the original and the patched
module keep per token (gated MLPs) or per element (activations).  Both are measured the
same way: run the module on a few random rows with autograd recording, count the unique
storages packed for backward, parameters and buffers excluded.  The global RNG is left
as it was (dropout in a training-mode probe draws from a forked generator state).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

PROBE_TOKENS = 4
PROBE_ELEMENTS = 256


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique storages autograd saves while fn() runs, minus `exclude`'s."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            if st.data_ptr() not in skip:
                seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # storage-less tensors: not counted
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _fork(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def per_token(module: torch.nn.Module, forward: Callable, hidden: int, like: torch.Tensor
              ) -> float:
    """Bytes kept per token by forward(x) for x of shape (1, PROBE_TOKENS, hidden)."""
    g = torch.Generator(device=like.device).manual_seed(1)
    with _fork(like.device), torch.enable_grad():
        x = torch.randn(1, PROBE_TOKENS, hidden, generator=g, device=like.device,
                        dtype=like.dtype, requires_grad=True)
        own = list(module.parameters()) + list(module.buffers())
        return saved_bytes(lambda: forward(x), own) / PROBE_TOKENS


def per_element(module: torch.nn.Module, dtype: torch.dtype) -> float:
    """Bytes kept per element by a parameter-free activation module (its input counts:
    nothing else keeps the input of an activation that follows a linear layer)."""
    g = torch.Generator().manual_seed(1)
    with torch.enable_grad():
        x = torch.randn(PROBE_ELEMENTS, generator=g).to(dtype).requires_grad_()
        # through a copy: in-place activations (ReLU6(inplace=True)) refuse a leaf
        return saved_bytes(lambda: module(x.clone())) / PROBE_ELEMENTS
