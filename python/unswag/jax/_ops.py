"""The activations as jax.custom_vjp functions whose residual is the code."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _native
from . import _auto, _ffi, _pure

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
SMOOTH = ("silu", "gelu", "gelu_tanh")
EXACT = ("relu", "leaky_relu", "relu6", "hardtanh")
IMPLS = ("auto", "ffi", "pure")
DEFAULT_BITS = _native.DEFAULT_BITS  # smooth activations


class Spec(NamedTuple):
    """Everything static about one activation call (hashable)."""
    act: str
    bits: int
    slope: float
    lo: float
    hi: float
    boundaries: tuple
    levels: tuple
    custom_codebook: bool
    impl: str


# ---- codebooks ------------------------------------------------------------------------

@functools.cache
def builtin_codebook(act: str, bits: int) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """(boundaries, levels, rms_error) of a built-in table: from libunswag
    when it loads, else from the shipped copy (_codebooks.py)."""
    if _native.available():
        cb = _native.builtin_codebook(act, bits)
        m = 1 << bits
        return (tuple(float(cb.boundaries[i]) for i in range(m - 1)),
                tuple(float(cb.levels[i]) for i in range(m)), float(cb.rms_error))
    from ._codebooks import TABLES
    return TABLES[(act, bits)]


def _f32_tuple(values, what):
    a = np.asarray(values, dtype=np.float64).ravel()
    f = a.astype(np.float32)
    if not np.all(np.isfinite(f)):
        raise ValueError(f"codebook {what} must be finite")
    return tuple(float(v) for v in f)


def _custom_codebook(codebook, bits):
    """Accepts an _native.Codebook, an object with .boundaries/.levels, a dict,
    or a pair (boundaries, levels)."""
    if isinstance(codebook, _native.Codebook):
        m = 1 << codebook.bits
        b, lv = list(codebook.boundaries)[:m - 1], list(codebook.levels)[:m]
        cb_bits = codebook.bits
    elif isinstance(codebook, dict):
        b, lv, cb_bits = codebook["boundaries"], codebook["levels"], None
    elif hasattr(codebook, "boundaries") and hasattr(codebook, "levels"):
        b, lv, cb_bits = codebook.boundaries, codebook.levels, getattr(codebook, "bits", None)
    else:
        b, lv = codebook
        cb_bits = None
    b, lv = _f32_tuple(b, "boundaries"), _f32_tuple(lv, "levels")
    if cb_bits is not None and cb_bits != bits:
        raise ValueError(f"codebook has {cb_bits} bits but bits={bits}")
    m = 1 << bits
    if len(b) != m - 1 or len(lv) != m:
        raise ValueError(f"a {bits}-bit codebook needs {m - 1} boundaries and {m} levels; "
                         f"got {len(b)} and {len(lv)}")
    if any(not b[i] < b[i + 1] for i in range(len(b) - 1)):
        raise ValueError("codebook boundaries must be strictly increasing")
    return b, lv


def make_spec(act: str, bits: int | None = None, *, slope: float = 0.01, lo: float = -1.0,
              hi: float = 1.0, codebook: Any = None, impl: str = "auto",
              codes: str = "deterministic") -> Spec:
    """Validates the static arguments; raises ValueError with what is wrong.
    codes: only "deterministic" for now (stochastic codes exist in C and torch only)."""
    if codes != "deterministic":
        raise ValueError(f"codes={codes!r}: the JAX bindings have only deterministic codes; "
                         "stochastic codes are in the C library and unswag.torch so far")
    if act not in _native.ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of "
                         f"{sorted(_native.ACTIVATIONS)}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    if act in EXACT:
        bits = 1 if bits is None else bits
        if bits != 1:
            raise ValueError(f"{act} is exact with a 1-bit code; bits must be 1, got {bits!r}")
        if codebook is not None:
            raise ValueError(f"{act} takes no codebook (its 1-bit gradient is exact)")
    else:
        bits = DEFAULT_BITS if bits is None else bits
        if isinstance(bits, bool) or bits not in (1, 2, 4, 8):
            raise ValueError(f"{act} takes bits in (1, 2, 4, 8); got {bits!r}")
    slope, lo, hi = float(np.float32(slope)), float(np.float32(lo)), float(np.float32(hi))
    if act == "leaky_relu" and not np.isfinite(slope):
        raise ValueError("leaky_relu negative_slope must be finite")
    if act == "hardtanh" and not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"hardtanh needs finite min_val < max_val; got [{lo}, {hi}]")
    if act in SMOOTH:
        if codebook is None:
            b, lv, _ = builtin_codebook(act, bits)
            custom = False
        else:
            b, lv = _custom_codebook(codebook, bits)
            custom = True
    else:
        b, lv, custom = (), (), False
    return Spec(act, int(bits), slope, lo, hi, b, lv, custom, impl)


# ---- implementation choice ---------------------------------------------------------------

def _check_dtype(spec, x):
    if jnp.dtype(x.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(f"unswag.jax.{spec.act}: x has dtype {jnp.dtype(x.dtype).name}; "
                        "supported dtypes are float32, float16 and bfloat16")


def _ffi_state(spec):
    st = _ffi.ensure_registered()
    if spec.impl == "ffi" and not st["cpu"]:
        raise _native.UnswagError(f"impl='ffi' requested but the FFI handlers are not "
                                  f"available: {st['error']}")
    return st


def _auto_uses_ffi(spec, backend, dtype, registered):
    """auto on one backend: the measured table's choice (_auto.py), else the FFI handler
    wherever it is registered."""
    if not registered:
        return False
    return _auto.choose(backend, dtype, spec.act, spec.bits) != "pure"


def _dispatch(spec, ffi_fn, pure_fn, *args):
    if spec.impl == "pure":
        return pure_fn(spec, *args)
    st = _ffi_state(spec)
    if spec.impl == "ffi":
        return ffi_fn(spec, *args)
    # auto: per backend, the path the table measured faster for this dtype, activation and
    # bits; without an entry the native handlers where they are registered, pure JAX
    # elsewhere (TPU, ROCm, CUDA without the CUDA build).  Chosen when XLA lowers.
    dtype = jnp.dtype(args[0].dtype).name
    branches = {b: functools.partial(ffi_fn, spec)
                for b in _auto.BACKENDS
                if _auto_uses_ffi(spec, b, dtype, st[b] and st["cpu"])}
    if not branches:
        return pure_fn(spec, *args)
    return jax.lax.platform_dependent(*args, default=functools.partial(pure_fn, spec),
                                      **branches)


def forward_flat(spec, x):
    """x: (n,) -> (y, codes).  The op without autodiff."""
    return _dispatch(spec, _ffi.forward, _pure.forward, x)


def backward_flat(spec, dy, codes):
    return _dispatch(spec, _ffi.backward, _pure.backward, dy, codes)


# ---- custom_vjp ------------------------------------------------------------------------------

def _fwd_impl(spec, x):
    y, codes = forward_flat(spec, x.reshape(-1))
    return y.reshape(x.shape), codes


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _apply(spec, x):
    return _fwd_impl(spec, x)[0]


def _apply_fwd(spec, x):
    y, codes = _fwd_impl(spec, x)
    return y, codes  # the only residual: ceil(n*bits/8) bytes


def _apply_bwd(spec, codes, g):
    dx = backward_flat(spec, g.reshape(-1), codes)
    return (dx.reshape(g.shape),)


_apply.defvjp(_apply_fwd, _apply_bwd)


def apply(x: jax.Array, spec: Spec) -> jax.Array:
    x = jnp.asarray(x)
    _check_dtype(spec, x)
    return _apply(spec, x)


# ---- public functions ---------------------------------------------------------------------

def activation(x: jax.Array, act: str, bits: int | None = None, *, slope: float = 0.01,
               lo: float = -1.0, hi: float = 1.0, codebook: Any = None,
               impl: str = "auto") -> jax.Array:
    """Any supported activation by name; see relu/silu/gelu for the arguments."""
    return apply(x, make_spec(act, bits, slope=slope, lo=lo, hi=hi, codebook=codebook,
                              impl=impl))


def relu(x: jax.Array, bits: int = 1, *, impl: str = "auto") -> jax.Array:
    """relu(x) = max(x, 0); the backward keeps 1 bit an element and is exact."""
    return apply(x, make_spec("relu", bits, impl=impl))


def leaky_relu(x: jax.Array, negative_slope: float = 0.01, bits: int = 1, *,
               impl: str = "auto") -> jax.Array:
    """x if x > 0 else negative_slope * x (fp32 product); exact 1-bit backward."""
    return apply(x, make_spec("leaky_relu", bits, slope=negative_slope, impl=impl))


def relu6(x: jax.Array, bits: int = 1, *, impl: str = "auto") -> jax.Array:
    return apply(x, make_spec("relu6", bits, impl=impl))


def hardtanh(x: jax.Array, min_val: float = -1.0, max_val: float = 1.0, bits: int = 1, *,
             impl: str = "auto") -> jax.Array:
    return apply(x, make_spec("hardtanh", bits, lo=min_val, hi=max_val, impl=impl))


def silu(x: jax.Array, bits: int = DEFAULT_BITS, *, codebook: Any = None,
         impl: str = "auto") -> jax.Array:
    """x * sigmoid(x), exact forward; backward dy * level[code] with a k-bit code."""
    return apply(x, make_spec("silu", bits, codebook=codebook, impl=impl))


def gelu(x: jax.Array, bits: int = DEFAULT_BITS, approximate: bool = False, *,
         codebook: Any = None, impl: str = "auto") -> jax.Array:
    """GELU (erf form, or tanh form with approximate=True), k-bit backward."""
    act = "gelu_tanh" if approximate else "gelu"
    return apply(x, make_spec(act, bits, codebook=codebook, impl=impl))


def forward(x: jax.Array, act: str, bits: int | None = None, *, slope: float = 0.01,
            lo: float = -1.0, hi: float = 1.0, codebook: Any = None,
            impl: str = "auto") -> tuple[jax.Array, jax.Array]:
    """(y, codes) for x (codes of the flattened x), without autodiff."""
    spec = make_spec(act, bits, slope=slope, lo=lo, hi=hi, codebook=codebook, impl=impl)
    x = jnp.asarray(x)
    _check_dtype(spec, x)
    return _fwd_impl(spec, x)


def backward(dy: jax.Array, codes: jax.Array, act: str, bits: int | None = None, *,
             slope: float = 0.01, lo: float = -1.0, hi: float = 1.0, codebook: Any = None,
             impl: str = "auto") -> jax.Array:
    """dx = dy * level[code] for codes from forward(); dy has x's shape."""
    spec = make_spec(act, bits, slope=slope, lo=lo, hi=hi, codebook=codebook, impl=impl)
    dy = jnp.asarray(dy)
    _check_dtype(spec, dy)
    codes = jnp.asarray(codes)
    nbytes = _pure.code_bytes(dy.size, spec.bits)
    if codes.dtype != jnp.uint8 or codes.shape != (nbytes,):
        raise ValueError(f"codes must be uint8 of shape ({nbytes},) for {dy.size} elements at "
                         f"{spec.bits} bit(s); got {codes.dtype} {codes.shape}")
    return backward_flat(spec, dy.reshape(-1), codes).reshape(dy.shape)


def code_bytes(n: int, bits: int) -> int:
    """ceil(n * bits / 8): bytes kept for n elements."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8; got {bits!r}")
    return _pure.code_bytes(int(n), bits)


def gradient_error_bound(act: str, bits: int = DEFAULT_BITS, codebook: Any = None,
                         lo: float = -30.0, hi: float = 30.0,
                         points_per_piece: int = 4001) -> float:
    """max over x of |f'(x) - level[code(x)]| (for |x| <= 30): the elementwise
    bound |dx - dx_exact| <= |dy| * bound.  Evaluated densely on each piece."""
    spec = make_spec(act, bits, codebook=codebook)
    b = np.asarray(spec.boundaries, np.float64)
    lv = np.asarray(spec.levels, np.float64)
    edges = np.concatenate([[lo], b, [hi]])
    worst = 0.0
    for j in range(len(lv)):
        xs = np.linspace(edges[j], edges[j + 1], points_per_piece)
        worst = max(worst, float(np.max(np.abs(exact_derivative(act, xs) - lv[j]))))
    return worst


def exact_derivative(act: str, x: np.ndarray) -> np.ndarray:
    """f'(x) in float64 numpy (for bounds and tests)."""
    from math import pi, sqrt
    x = np.asarray(x, np.float64)
    if act == "silu":
        s = 1.0 / (1.0 + np.exp(-x))
        return s * (1.0 + x * (1.0 - s))
    if act == "gelu":
        cdf = 0.5 * (1.0 + _erf(x / sqrt(2.0)))
        return cdf + x * np.exp(-0.5 * x * x) / sqrt(2.0 * pi)
    if act == "gelu_tanh":
        c = sqrt(2.0 / pi)
        u = c * (x + 0.044715 * x ** 3)
        t = np.tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)
    raise ValueError(f"no smooth derivative for {act!r}")


def _erf(x):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)
