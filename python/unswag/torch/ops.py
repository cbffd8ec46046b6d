"""torch.library custom ops over libunswag (CPU and CUDA).

Ops (namespace ``unswag``):

- ``act_forward(x, act, bits, slope, lo, hi, codebook=None, code_kind="deterministic",
  seed=None) -> (y, codes)``: y = f(x) exactly, codes = packed k-bit code of x (uint8,
  ``ceil(numel*bits/8)`` bytes).
- ``act_backward(dy, codes, act, bits, slope, lo, hi, codebook=None,
  code_kind="deterministic") -> dx``.
  ``codebook`` (smooth activations only): None for the built-in table, or the
  2^bits - 1 boundaries followed by the 2^bits levels of a custom codebook (e.g.
  a per-layer calibrated one, unswag.torch.calibration); forward and backward
  must get the same one.
  ``code_kind``: "deterministic" (default) or "stochastic" (silu/gelu/gelu_tanh,
  no codebook): unbiased random codes drawn from ``seed``, a one-element int64
  tensor (None: 0; a tensor, not an int, so that torch.compile traces a fresh seed per
  call into its graph instead of breaking it; drawing it is the caller's job, see
  functional.activation); the backward then scales by
  the stochastic level grid, so forward and backward must get the same kind.
- ``gated_forward(g, u, act) -> h``: h = act(g) * u.
- ``gated_backward(dh, g, u, act) -> (dg, du)``.

Each op is defined once; its body is the default kernel, which only raises (a
device without libunswag kernels).  The CPU and CUDA kernels are one function
each, ``_name(device, ...)``, registered per device by ``_device.register_kernels``:
they differ only in the C function and stream (``_device.py``).  Each op has a
fake (meta) implementation, so it traces under ``torch.compile``;
``act_forward`` and ``gated_forward`` carry autograd formulas.  Tensors are
made contiguous before their ``data_ptr()`` goes to C.  Unsupported dtypes and
devices raise a clear error instead of computing something else.
"""
from __future__ import annotations

import ctypes
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .. import _native as N
from ._device import DTYPES, register_kernels, same_device, unsupported_device

_GATED_ACTS = ("silu", "gelu", "gelu_tanh")


def _dtype_code(t: Tensor, what: str) -> int:
    try:
        return DTYPES[t.dtype]
    except KeyError:
        raise TypeError(f"unswag.{what}: unsupported dtype {t.dtype}; libunswag kernels take "
                        "float32, float16 or bfloat16 (cast the input first)") from None


def _code_bytes(n, bits: int):
    # the same formula as unswag_code_bytes; works on SymInts for fake tensors
    return (n * bits + 7) // 8


def _validate_act(act: str, bits: int) -> None:
    if act not in N.ACTIVATIONS:
        raise ValueError(f"unswag: unknown activation {act!r}; expected one of "
                         f"{sorted(N.ACTIVATIONS)}")
    if act in N.EXACT:
        if bits != 1:
            raise ValueError(f"unswag: {act} is exact with 1 bit; got bits={bits}")
    elif bits not in (1, 2, 4, 8):
        raise ValueError(f"unswag: bits for {act} must be 1, 2, 4 or 8; got {bits}")


def _validate_codebook(act: str, bits: int, codebook) -> None:
    if codebook is None:
        return
    if act in N.EXACT:
        raise ValueError(f"unswag: {act} is exact and takes no codebook")
    m = 1 << bits
    if len(codebook) != 2 * m - 1:
        raise ValueError(f"unswag: a {bits}-bit codebook is {m - 1} boundaries and {m} levels "
                         f"({2 * m - 1} floats); got {len(codebook)}")


_CODEBOOKS = {}  # tuple of floats -> ctypes Codebook: built once, reused every call


def _validate_codes(act: str, code_kind: str, codebook) -> None:
    if code_kind not in N.CODE_KINDS:
        raise ValueError(f"unswag: codes must be one of {sorted(N.CODE_KINDS)}; "
                         f"got {code_kind!r}")
    if code_kind == "stochastic":
        if act in N.EXACT:
            raise ValueError(f"unswag: stochastic codes take silu, gelu or gelu_tanh; {act} is "
                             "exact")
        if codebook is not None:
            raise ValueError("unswag: stochastic codes use their own level grid; pass no "
                             "codebook")


def _native_codebook(bits: int, codebook):
    key = (bits, tuple(codebook))
    cb = _CODEBOOKS.get(key)
    if cb is None:
        m = 1 << bits
        cb = N.Codebook()
        cb.bits = bits
        cb.boundaries[: m - 1] = [float(v) for v in codebook[: m - 1]]
        cb.levels[:m] = [float(v) for v in codebook[m - 1:]]
        if len(_CODEBOOKS) > 4096:  # a bound, not a policy: calibrations are few
            _CODEBOOKS.clear()
        _CODEBOOKS[key] = cb
    return cb


def _check_seed(seed: Optional[Tensor]) -> None:
    if seed is not None and (seed.numel() != 1 or seed.dtype != torch.int64):
        raise TypeError("unswag.act_forward: seed must be a one-element int64 tensor, got "
                        f"{seed.dtype} with {seed.numel()} elements")


def _seed_value(seed: Optional[Tensor]) -> int:
    """The seed as the C op takes it (a CPU tensor: no device sync)."""
    _check_seed(seed)
    return 0 if seed is None else int(seed.reshape(()).item()) % 2**64


def _op(act, bits, slope, lo, hi, codebook=None, code_kind="deterministic", seed=0):
    """The C op (and the codebook it points to, to keep alive for the call)."""
    cb = None if codebook is None else _native_codebook(bits, codebook)
    return N.make_op(act, bits, slope, lo, hi, cb, code_kind, seed), cb


# ---------------------------------------------------------------- act forward/backward

@torch.library.custom_op("unswag::act_forward", mutates_args=())
def act_forward(x: Tensor, act: str, bits: int, slope: float, lo: float,
                hi: float, codebook: Optional[List[float]] = None,
                code_kind: str = "deterministic",
                seed: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    raise unsupported_device("act_forward", x)


def _act_forward(device, x: Tensor, act: str, bits: int, slope: float, lo: float,
                 hi: float, codebook: Optional[List[float]] = None,
                 code_kind: str = "deterministic",
                 seed: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    _validate_act(act, bits)
    _validate_codebook(act, bits, codebook)
    _validate_codes(act, code_kind, codebook)
    seed_value = _seed_value(seed)
    dt = _dtype_code(x, "act_forward")
    x = x.contiguous()
    n = x.numel()
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    codes = torch.empty((_code_bytes(n, bits),), dtype=torch.uint8, device=x.device)
    op, _cb = _op(act, bits, slope, lo, hi, codebook, code_kind, seed_value)
    device.run(f"act_forward({act}, bits={bits}, {x.dtype}, {x.device})", "unswag_forward",
               ctypes.byref(op), dt, x, y, codes, n)
    return y, codes


register_kernels(act_forward, _act_forward)


@act_forward.register_fake
def _(x, act, bits, slope, lo, hi, codebook=None, code_kind="deterministic", seed=None):
    _validate_act(act, bits)
    _validate_codebook(act, bits, codebook)
    _validate_codes(act, code_kind, codebook)
    _check_seed(seed)
    _dtype_code(x, "act_forward")
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    codes = x.new_empty((_code_bytes(x.numel(), bits),), dtype=torch.uint8)
    return y, codes


@torch.library.custom_op("unswag::act_backward", mutates_args=())
def act_backward(dy: Tensor, codes: Tensor, act: str, bits: int, slope: float, lo: float,
                 hi: float, codebook: Optional[List[float]] = None,
                 code_kind: str = "deterministic") -> Tensor:
    raise unsupported_device("act_backward", dy)


def _act_backward(device, dy: Tensor, codes: Tensor, act: str, bits: int, slope: float,
                  lo: float, hi: float, codebook: Optional[List[float]] = None,
                  code_kind: str = "deterministic") -> Tensor:
    _validate_act(act, bits)
    _validate_codebook(act, bits, codebook)
    _validate_codes(act, code_kind, codebook)
    same_device("act_backward", dy, codes)
    dt = _dtype_code(dy, "act_backward")
    if codes.dtype != torch.uint8:
        raise TypeError(f"unswag.act_backward: codes must be uint8, got {codes.dtype}")
    n = dy.numel()
    if codes.numel() != _code_bytes(n, bits):
        raise ValueError(f"unswag.act_backward: {codes.numel()} code bytes for {n} elements "
                         f"at {bits} bits (expected {_code_bytes(n, bits)})")
    dy = dy.contiguous()
    codes = codes.contiguous()
    dx = torch.empty_like(dy, memory_format=torch.contiguous_format)
    op, _cb = _op(act, bits, slope, lo, hi, codebook, code_kind)
    device.run(f"act_backward({act}, bits={bits}, {dy.dtype}, {dy.device})", "unswag_backward",
               ctypes.byref(op), dt, dy, codes, dx, n)
    return dx


register_kernels(act_backward, _act_backward)


@act_backward.register_fake
def _(dy, codes, act, bits, slope, lo, hi, codebook=None, code_kind="deterministic"):
    _validate_act(act, bits)
    _validate_codebook(act, bits, codebook)
    _validate_codes(act, code_kind, codebook)
    _dtype_code(dy, "act_backward")
    return torch.empty_like(dy, memory_format=torch.contiguous_format)


def _act_setup(ctx, inputs, output):
    _x, act, bits, slope, lo, hi, codebook, code_kind, _seed = inputs
    _y, codes = output
    ctx.save_for_backward(codes)
    ctx.params = (act, bits, slope, lo, hi, codebook, code_kind)


def _act_bwd(ctx, dy, _dcodes):
    (codes,) = ctx.saved_tensors
    dx = torch.ops.unswag.act_backward(dy, codes, *ctx.params)
    return dx, None, None, None, None, None, None, None, None


torch.library.register_autograd("unswag::act_forward", _act_bwd, setup_context=_act_setup)


# ---------------------------------------------------------------- gated (SwiGLU / GeGLU)

def _check_gated(act: str, what: str, *ts: Tensor) -> int:
    if act not in _GATED_ACTS:
        raise ValueError(f"unswag.{what}: gated activation must be one of {_GATED_ACTS}, "
                         f"got {act!r}")
    same_device(what, *ts)
    dt = _dtype_code(ts[0], what)
    for t in ts[1:]:
        if t.dtype != ts[0].dtype:
            raise TypeError(f"unswag.{what}: mixed dtypes {ts[0].dtype} and {t.dtype}")
        if t.shape != ts[0].shape:
            raise ValueError(f"unswag.{what}: shape mismatch {tuple(ts[0].shape)} vs "
                             f"{tuple(t.shape)}")
    return dt


@torch.library.custom_op("unswag::gated_forward", mutates_args=())
def gated_forward(g: Tensor, u: Tensor, act: str) -> Tensor:
    raise unsupported_device("gated_forward", g)


def _gated_forward(device, g: Tensor, u: Tensor, act: str) -> Tensor:
    dt = _check_gated(act, "gated_forward", g, u)
    g, u = g.contiguous(), u.contiguous()
    h = torch.empty_like(g, memory_format=torch.contiguous_format)
    device.run(f"gated_forward({act}, {g.dtype}, {g.device})", "unswag_gated_forward",
               N.ACTIVATIONS[act], dt, g, u, h, g.numel())
    return h


register_kernels(gated_forward, _gated_forward)


@gated_forward.register_fake
def _(g, u, act):
    _check_gated(act, "gated_forward", g, u)
    return torch.empty_like(g, memory_format=torch.contiguous_format)


@torch.library.custom_op("unswag::gated_backward", mutates_args=())
def gated_backward(dh: Tensor, g: Tensor, u: Tensor, act: str) -> Tuple[Tensor, Tensor]:
    raise unsupported_device("gated_backward", g)


def _gated_backward(device, dh: Tensor, g: Tensor, u: Tensor,
                    act: str) -> Tuple[Tensor, Tensor]:
    dt = _check_gated(act, "gated_backward", dh, g, u)
    dh, g, u = dh.contiguous(), g.contiguous(), u.contiguous()
    dg = torch.empty_like(g, memory_format=torch.contiguous_format)
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    device.run(f"gated_backward({act}, {g.dtype}, {g.device})", "unswag_gated_backward",
               N.ACTIVATIONS[act], dt, dh, g, u, dg, du, g.numel())
    return dg, du


register_kernels(gated_backward, _gated_backward)


@gated_backward.register_fake
def _(dh, g, u, act):
    _check_gated(act, "gated_backward", dh, g, u)
    return (torch.empty_like(g, memory_format=torch.contiguous_format),
            torch.empty_like(u, memory_format=torch.contiguous_format))


def _gated_setup(ctx, inputs, output):
    g, u, act = inputs
    ctx.save_for_backward(g, u)
    ctx.act = act


def _gated_bwd(ctx, dh):
    g, u = ctx.saved_tensors
    dg, du = torch.ops.unswag.gated_backward(dh, g, u, ctx.act)
    return dg, du, None


torch.library.register_autograd("unswag::gated_forward", _gated_bwd, setup_context=_gated_setup)
