"""The device layer of the torch ops: what a kernel needs from its device, and nothing else.

Each op in ops.py and norm_ops.py is written once, as ``impl(device, *args)``, and
registered once per device type by :func:`register_kernels`.  A CPU and a CUDA kernel
differ only in the C function they call (``unswag_x`` or ``unswag_x_cuda``), the
trailing stream argument of the CUDA one, and the CUDA scratch memory some calls
take; everything else (checks, output allocation, layouts) is shared, so the CPU
tests exercise it too.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Callable

import torch
from torch import Tensor

from .. import _native as N

DTYPES = {torch.float32: N.F32, torch.float16: N.F16, torch.bfloat16: N.BF16}


def ptr(t: Tensor):
    """The C pointer of a contiguous tensor (NULL when empty, as the C API allows for n == 0)."""
    return ctypes.c_void_p(t.data_ptr()) if t.numel() else None


def same_device(what: str, *ts: Tensor) -> None:
    for t in ts[1:]:
        if t.device != ts[0].device:
            raise ValueError(f"unswag.{what}: tensors on different devices ({ts[0].device} and "
                             f"{t.device})")


def unsupported_device(what: str, t: Tensor) -> NotImplementedError:
    """The error of the ops' default kernel, which runs for devices without a kernel."""
    return NotImplementedError(
        f"unswag.{what}: tensors on {t.device.type!r} are not supported; libunswag has "
        "CPU and CUDA kernels (use unswag.jax's pure path, or move the tensor)")


def _c_args(args) -> list:
    return [ptr(a) if isinstance(a, Tensor) else a for a in args]


class Cpu:
    type = "cpu"

    def run(self, what: str, name: str, *args) -> None:
        """Calls libunswag's ``name`` (tensors passed as pointers) and raises on a bad status."""
        N.check(getattr(N.lib(), name)(*_c_args(args)), what)

    def workspace(self, what: str, size_fn: str, like: Tensor, *size_args) -> tuple:
        """Scratch memory as the C arguments (buffer, bytes); the CPU functions take none."""
        return ()


class Cuda:
    type = "cuda"

    def run(self, what: str, name: str, *args) -> None:
        """Calls ``name``_cuda on the current stream of the first tensor's device."""
        t = next(a for a in args if isinstance(a, Tensor))
        with torch.cuda.device(t.device):
            stream = ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)
            N.check(getattr(N.lib(), name + "_cuda")(*_c_args(args), stream), what)

    def workspace(self, what: str, size_fn: str, like: Tensor, *size_args) -> tuple:
        """A buffer of the bytes ``size_fn(*size_args)`` asks for, on ``like``'s device."""
        need = ctypes.c_size_t()
        N.check(getattr(N.lib(), size_fn)(*size_args, ctypes.byref(need)), f"{what} workspace")
        ws = torch.empty((max(need.value, 4),), dtype=torch.uint8, device=like.device)
        return ws, ws.numel()


DEVICES = (Cpu(), Cuda())


def register_kernels(op, impl: Callable) -> None:
    """Registers ``impl`` with each device bound as the op's kernel for that device type."""
    for device in DEVICES:
        op.register_kernel(device.type, functools.partial(impl, device))
