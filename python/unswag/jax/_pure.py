"""Pure-JAX forward and backward with the codes of libunswag, byte for byte.

Used where the native library does not run (TPU, a missing build) or when
asked for with impl="pure".  Works on a 1-D array (the flattened input);
under jax.vmap each example gets its own code bytes, like the FFI path.

The code format (docs/design.md section 2): element i's k-bit code sits at bits
[(i mod 8/k)*k, +k) of byte floor(i*k/8); unused high bits are zero.
Exact family: code = the 1-bit predicate; smooth: code = number of
boundaries b_j with x > b_j compared in float32 (NaN -> 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def code_bytes(n: int, bits: int) -> int:
    return n // 8 * bits + (n % 8 * bits + 7) // 8


# ---- codes ------------------------------------------------------------------------------
#
# Compares are done on integer keys of the float32 bit patterns, not with
# float compares: XLA:CPU and TPUs flush subnormals (DAZ), so a float
# compare would give code 0 for a tiny positive x where libunswag (IEEE)
# gives 1.  key(x) orders like the float value, with -0 folded onto +0;
# NaN is masked to code 0 separately.

def _f32_bits(x):
    """float32 bit pattern (uint32) of x, exact for every dtype, no flushing."""
    dt = jnp.dtype(x.dtype)
    if dt == jnp.dtype(jnp.float32):
        return lax.bitcast_convert_type(x, jnp.uint32)
    if dt == jnp.dtype(jnp.bfloat16):
        return lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32) << 16
    # float16 -> float32 is exact and its subnormals are float32 normals
    return lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)


def _key_of_bits(u):
    """int32 key with key(a) < key(b) iff a < b for non-NaN floats."""
    s = lax.bitcast_convert_type(u, jnp.int32)
    s = jnp.where(u == np.uint32(0x80000000), np.int32(0), s)  # -0 -> +0
    return s ^ ((s >> 31) & np.int32(0x7FFFFFFF))


def _key_const(v):
    u = np.array([v], np.float32).view(np.uint32)[0]
    s = int(np.array([u], np.uint32).view(np.int32)[0])
    if u == 0x80000000:
        s = 0
    return np.int32(s ^ 0x7FFFFFFF) if s < 0 else np.int32(s)


def _key_and_nan(x):
    u = _f32_bits(x)
    is_nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return _key_of_bits(u), is_nan


def _smooth_code(k, boundaries, bits):
    """Count of boundaries below x (k = key(x))."""
    m = (1 << bits) - 1
    if bits <= 4:
        c = jnp.zeros(k.shape, jnp.uint8)
        for j in range(m):
            c = c + (k > _key_const(boundaries[j])).astype(jnp.uint8)
        return c
    # binary search over the sorted table (as the C kernels do for 8 bits)
    keys = np.array([_key_const(b) for b in boundaries], np.int32)
    table = jnp.asarray(keys)
    step = 1 << (bits - 1)
    # the first probe is the same for every element: a constant, no gather
    c = jnp.where(k > keys[step - 1], np.int32(step), np.int32(0))
    step >>= 1
    while step:
        t = jnp.take(table, c + (step - 1), mode="clip")
        c = c + jnp.where(k > t, step, 0).astype(jnp.int32)
        step >>= 1
    return c.astype(jnp.uint8)


def codes_unpacked(spec, x):
    """One uint8 code per element of x."""
    k, is_nan = _key_and_nan(x)
    act = spec.act
    if act in ("relu", "leaky_relu"):
        c = k > np.int32(0)
    elif act in ("relu6", "hardtanh"):
        lo, hi = (0.0, 6.0) if act == "relu6" else (spec.lo, spec.hi)
        c = (k > _key_const(lo)) & (k < _key_const(hi))
    else:
        c = _smooth_code(k, spec.boundaries, spec.bits)
    return jnp.where(is_nan, jnp.zeros((), jnp.uint8), c.astype(jnp.uint8))


def pack(c, bits):
    """(..., n) uint8 codes < 2^bits -> (..., ceil(n*bits/8)) bytes, little-endian."""
    if bits == 8:
        return c.astype(jnp.uint8)
    per = 8 // bits
    n = c.shape[-1]
    pad = (-n) % per
    if pad:
        c = jnp.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, pad)])
    c = c.reshape(c.shape[:-1] + (c.shape[-1] // per, per)).astype(jnp.uint32)
    shifts = (np.arange(per, dtype=np.uint32) * bits).astype(np.uint32)
    return jnp.sum(c << shifts, axis=-1, dtype=jnp.uint32).astype(jnp.uint8)


def unpack(codes, n, bits):
    """(..., nbytes) bytes -> (..., n) uint8 codes."""
    if bits == 8:
        return codes[..., :n]
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint32) * bits).astype(np.uint32)
    mask = np.uint32((1 << bits) - 1)
    c = (codes[..., :, None].astype(jnp.uint32) >> shifts) & mask
    c = c.reshape(c.shape[:-2] + (c.shape[-2] * per,))
    return c[..., :n].astype(jnp.uint8)


# ---- forward values ------------------------------------------------------------------------

def _value(spec, x, c):
    """y = f(x); c: the unpacked codes (the exact family selects on them)."""
    dt = x.dtype
    act = spec.act
    zero = jnp.zeros((), dt)
    if act == "relu":
        # x where x > 0 or NaN, else +0 (as the C kernels)
        _, is_nan = _key_and_nan(x)
        return jnp.where((c != 0) | is_nan, x, zero)
    xf = x.astype(jnp.float32)
    if act == "leaky_relu":
        return jnp.where(c != 0, x, (xf * np.float32(spec.slope)).astype(dt))
    if act in ("relu6", "hardtanh"):
        lo, hi = (0.0, 6.0) if act == "relu6" else (spec.lo, spec.hi)
        k, is_nan = _key_and_nan(x)
        lo_t = jnp.asarray(np.float32(lo)).astype(dt)
        hi_t = jnp.asarray(np.float32(hi)).astype(dt)
        y = jnp.where(k <= _key_const(lo), lo_t, jnp.where(k >= _key_const(hi), hi_t, x))
        return jnp.where(is_nan, x, y)  # NaN passes through
    # float32 arithmetic, one rounding to dt
    if act == "silu":
        y = xf * jax.nn.sigmoid(xf)
    elif act == "gelu":
        y = np.float32(0.5) * xf * lax.erfc(xf * np.float32(-0.7071067811865476))
    elif act == "gelu_tanh":
        # 0.5 x (1 + tanh(u)) = x sigmoid(2u): no cancellation in the negative tail
        u2 = np.float32(1.5957691216057308) * (xf + np.float32(0.044715) * xf * xf * xf)
        y = xf * jax.nn.sigmoid(u2)
    else:  # pragma: no cover - validated earlier
        raise ValueError(act)
    return y.astype(dt)


def forward(spec, x):
    """x: (..., n) -> (y, codes (..., ceil(n*bits/8)) uint8)."""
    c = codes_unpacked(spec, x)
    return _value(spec, x, c), pack(c, spec.bits)


def backward(spec, dy, codes):
    """dx = dy * level[code], fp32 product rounded once to dy's dtype."""
    n = dy.shape[-1]
    c = unpack(codes, n, spec.bits)
    dt = dy.dtype
    act = spec.act
    if act == "leaky_relu":
        gf = dy.astype(jnp.float32)
        return jnp.where(c != 0, dy, (gf * np.float32(spec.slope)).astype(dt))
    if act in ("relu", "relu6", "hardtanh"):
        return jnp.where(c != 0, dy, jnp.zeros((), dt))
    levels = np.asarray(spec.levels, np.float32)
    if spec.bits <= 2:
        lv = jnp.full(c.shape, levels[0], jnp.float32)
        for j in range(1, len(levels)):
            lv = jnp.where(c == j, levels[j], lv)
    else:
        lv = jnp.take(jnp.asarray(levels), c.astype(jnp.int32), mode="clip")
    return (dy.astype(jnp.float32) * lv).astype(dt)
