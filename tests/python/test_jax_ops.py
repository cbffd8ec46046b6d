"""unswag.jax: codes, values and gradients of the pure-JAX and FFI paths,
against libunswag's CPU kernels (called through ctypes) and jax.nn.

Runs on whatever JAX's default backend is: CPU in CI; on a GPU machine the
FFI path is the CUDA handler and is still compared with the C CPU kernel.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp
import ml_dtypes

import unswag.jax as uj
from unswag import _native

BACKEND = jax.default_backend()
HAVE_LIB = _native.available()
_ST = uj.ffi_status()
HAVE_FFI = _ST["cpu"] if BACKEND == "cpu" else (_ST["cuda"] if BACKEND == "gpu" else False)
IMPLS = ["pure"] + (["ffi"] if HAVE_FFI else [])

need_lib = pytest.mark.skipif(not HAVE_LIB, reason="libunswag not built")
need_ffi = pytest.mark.skipif(not HAVE_FFI, reason=f"FFI handlers not available on {BACKEND}: "
                                                   f"{_ST['error']}")

NP_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
UNSWAG_DT = {"float32": _native.F32, "float16": _native.F16, "bfloat16": _native.BF16}

# (activation, bits, extra kwargs)
CONFIGS = ([("relu", 1, {}), ("leaky_relu", 1, {"slope": 0.1}), ("relu6", 1, {}),
            ("hardtanh", 1, {"lo": -0.5, "hi": 0.75})]
           + [(a, b, {}) for a in ("silu", "gelu", "gelu_tanh") for b in (1, 2, 4, 8)])
CONFIG_IDS = [f"{a}-{b}" for a, b, _ in CONFIGS]


# ---- the C library, through ctypes --------------------------------------------------------

def c_forward(x: np.ndarray, act, bits, slope=0.01, lo=-1.0, hi=1.0):
    """libunswag's CPU kernel on the flattened x: (y, codes)."""
    x = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(x)
    codes = np.empty(uj.code_bytes(x.size, bits), np.uint8)
    op = _native.make_op(act, bits, slope=slope, lo=lo, hi=hi)
    _native.check(_native.lib().unswag_forward(
        ctypes.byref(op), UNSWAG_DT[x.dtype.name], x.ctypes.data_as(ctypes.c_void_p),
        y.ctypes.data_as(ctypes.c_void_p), codes.ctypes.data_as(ctypes.c_void_p), x.size))
    return y, codes


def c_backward(dy: np.ndarray, codes: np.ndarray, act, bits, slope=0.01, lo=-1.0, hi=1.0):
    dy = np.ascontiguousarray(dy).reshape(-1)
    codes = np.ascontiguousarray(codes)
    dx = np.empty_like(dy)
    op = _native.make_op(act, bits, slope=slope, lo=lo, hi=hi)
    _native.check(_native.lib().unswag_backward(
        ctypes.byref(op), UNSWAG_DT[dy.dtype.name], dy.ctypes.data_as(ctypes.c_void_p),
        codes.ctypes.data_as(ctypes.c_void_p), dx.ctypes.data_as(ctypes.c_void_p), dy.size))
    return dx


def bits_of(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view({4: np.uint32, 2: np.uint16}[a.dtype.itemsize])


def all_16bit(dtype_name):
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(NP_DTYPES[dtype_name])


def fp32_inputs(kw, act, bits, n=20000, seed=0):
    """Random normals at several scales, specials, and every boundary +-1 ulp."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal(n).astype(np.float32) * s for s in (0.1, 1.0, 4.0, 100.0)]
    parts.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 6.0,
                           -1.0, 1.0, 3.4e38, -3.4e38], np.float32))
    edges = []
    if act in uj._ops.SMOOTH:
        edges = list(uj.builtin_codebook(act, bits)[0])
    edges += [kw.get("lo", -1.0), kw.get("hi", 1.0)]
    e = np.asarray(edges, np.float32)
    parts += [e, np.nextafter(e, np.float32(np.inf)), np.nextafter(e, np.float32(-np.inf))]
    return np.concatenate(parts)


def j(x, dtype_name):
    return jnp.asarray(x, dtype=jnp.dtype(dtype_name))


def uj_kwargs(act, kw):
    return {k: v for k, v in kw.items() if k in ("slope", "lo", "hi")}


def same_bits_or_both_nan(a, b):
    a, b = np.asarray(a), np.asarray(b)
    an, bn = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
    return np.array_equal(an, bn) and np.array_equal(bits_of(a)[~an], bits_of(b)[~bn])


def tiny(dtype):
    return float(np.finfo(np.dtype(dtype)).tiny) if np.dtype(dtype) != np.dtype(
        ml_dtypes.bfloat16) else float(ml_dtypes.finfo(ml_dtypes.bfloat16).tiny)


# Below this, XLA:CPU's float32 math may flush (denormals off, and its
# sigmoid/erfc lose the last normal binades); no training signal lives there.
FLUSH_LIMIT = 1e-30


def same_bits_up_to_flush(a, ref):
    """Bit-equal, except where XLA flushed a subnormal result of arithmetic to
    zero (XLA:CPU and TPUs run with denormals flushed; libunswag is IEEE)."""
    a, ref = np.asarray(a), np.asarray(ref)
    af, rf = a.astype(np.float32), ref.astype(np.float32)
    flushed = (af == 0) & (np.abs(rf) < FLUSH_LIMIT)
    both_nan = np.isnan(af) & np.isnan(rf)
    same = bits_of(a) == bits_of(ref)
    return bool(np.all(same | flushed | both_nan))


def assert_pure_value_close(y, y_c, ulps=1):
    """Smooth activations on the pure path: jax's float32 math, within `ulps`
    of the output dtype (or both below the smallest normal)."""
    y, y_c = np.asarray(y), np.asarray(y_c)
    yf, ycf = y.astype(np.float64), y_c.astype(np.float64)
    ok = np.isfinite(ycf)
    assert np.array_equal(np.isnan(yf), np.isnan(ycf))
    assert np.array_equal(yf[np.isinf(ycf)], ycf[np.isinf(ycf)])
    spacing = np.abs(np.spacing(y_c[ok])).astype(np.float64)
    err = np.abs(yf[ok] - ycf[ok])
    lim = max(tiny(y.dtype), FLUSH_LIMIT)
    bad = (err > ulps * spacing) & ~((np.abs(ycf[ok]) < lim) & (np.abs(yf[ok]) < lim))
    assert not bad.any(), (ycf[ok][bad][:5], yf[ok][bad][:5])


def test_ffi_present_where_required():
    """The FFI tests skip where the handlers are missing; runs that must exercise them (CI,
    the GPU run) set UNSWAG_REQUIRE_JAX_FFI=1 so a missing build fails instead."""
    if os.environ.get("UNSWAG_REQUIRE_JAX_FFI") != "1":
        pytest.skip("UNSWAG_REQUIRE_JAX_FFI not set")
    assert HAVE_FFI, f"FFI handlers not available on {BACKEND}: {_ST['error']}"


# ---- codes byte-identical to the C kernel -------------------------------------------------

@need_lib
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("act,bits,kw", CONFIGS, ids=CONFIG_IDS)
def test_codes_all_16bit_inputs_match_c(act, bits, kw, dtype, impl):
    x = all_16bit(dtype)
    y_c, codes_c = c_forward(x, act, bits, **kw)
    y, codes = uj.forward(j(x, dtype), act, bits, impl=impl, **uj_kwargs(act, kw))
    codes = np.asarray(codes)
    assert codes.dtype == np.uint8 and codes.shape == codes_c.shape
    np.testing.assert_array_equal(codes, codes_c)
    y = np.asarray(y)
    if impl == "ffi":  # the same kernel: the same bytes
        assert same_bits_or_both_nan(y, y_c)
    elif act in uj._ops.EXACT:  # selects: the same bytes (up to flushed products)
        assert same_bits_up_to_flush(y, y_c)
    else:  # smooth, pure JAX: float32 math, within one 16-bit ulp
        assert_pure_value_close(y, y_c)
    # backward: same bytes as the C kernel for the same dy and codes
    dy = np.random.default_rng(1).standard_normal(x.size).astype(NP_DTYPES[dtype])
    dx = uj.backward(j(dy, dtype), jnp.asarray(codes_c), act, bits, impl=impl,
                     **uj_kwargs(act, kw))
    dx_c = c_backward(dy, codes_c, act, bits, **kw)
    if impl == "ffi":
        assert same_bits_or_both_nan(np.asarray(dx), dx_c)
    else:
        assert same_bits_up_to_flush(np.asarray(dx), dx_c)


@need_ffi
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("act,bits", [("relu", 1), ("silu", 4), ("gelu", 2)])
def test_large_arrays_match_c(act, bits, dtype):
    """2^19 elements, past the library's threading threshold (2^18): the handler's call
    runs on several threads (on the CPU backend), whose floating-point environment must be
    IEEE like the caller's (XLA flushes subnormals on its own threads).  Every 16-bit
    pattern 8 times over (subnormals, NaN, infinities) for bf16, and their fp32 values."""
    x = np.tile(all_16bit("bfloat16"), 8)
    if dtype == "float32":
        x = x.astype(np.float32)
    y_c, codes_c = c_forward(x, act, bits)
    y, codes = jax.jit(lambda t: uj.forward(t, act, bits, impl="ffi"))(j(x, dtype))
    np.testing.assert_array_equal(np.asarray(codes), codes_c)
    assert same_bits_or_both_nan(np.asarray(y), y_c)
    dy = np.random.default_rng(4).standard_normal(x.size).astype(NP_DTYPES[dtype])
    dx = jax.jit(lambda g, c: uj.backward(g, c, act, bits, impl="ffi"))(j(dy, dtype), codes)
    assert same_bits_or_both_nan(np.asarray(dx), c_backward(dy, codes_c, act, bits))


@need_lib
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("act,bits,kw", CONFIGS, ids=CONFIG_IDS)
def test_codes_fp32_match_c(act, bits, kw, impl):
    x = fp32_inputs(kw, act, bits)
    y_c, codes_c = c_forward(x, act, bits, **kw)
    y, codes = uj.forward(j(x, "float32"), act, bits, impl=impl, **uj_kwargs(act, kw))
    np.testing.assert_array_equal(np.asarray(codes), codes_c)
    if impl == "ffi":
        assert same_bits_or_both_nan(np.asarray(y), y_c)
    elif act in uj._ops.EXACT:
        assert same_bits_up_to_flush(y, y_c)
    else:  # C computes fp32 in float-float; jax in float32
        assert_pure_value_close(y, y_c, ulps=256)  # XLA float32 erfc/logistic tails: ~1e-5
    dy = np.random.default_rng(2).standard_normal(x.size).astype(np.float32)
    dx = uj.backward(j(dy, "float32"), jnp.asarray(codes_c), act, bits, impl=impl,
                     **uj_kwargs(act, kw))
    dx_c = c_backward(dy, codes_c, act, bits, **kw)
    if impl == "ffi":
        assert same_bits_or_both_nan(np.asarray(dx), dx_c)
    else:
        assert same_bits_up_to_flush(np.asarray(dx), dx_c)


@need_lib
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 15, 17, 511, 513, 1029])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_tail_lengths(n, bits, impl):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    _, codes_c = c_forward(x, "silu", bits)
    _, codes = uj.forward(j(x, "float32"), "silu", bits, impl=impl)
    np.testing.assert_array_equal(np.asarray(codes), codes_c)


# ---- pure == FFI: bytes and gradients ------------------------------------------------------

@need_ffi
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("act,bits,kw", CONFIGS, ids=CONFIG_IDS)
def test_pure_equals_ffi(act, bits, kw, dtype):
    rng = np.random.default_rng(3)
    x = j(rng.standard_normal((4, 33, 7)).astype(np.float32) * 2, dtype)
    kwa = uj_kwargs(act, kw)
    _, c_pure = jax.jit(lambda x: uj.forward(x, act, bits, impl="pure", **kwa))(x)
    _, c_ffi = jax.jit(lambda x: uj.forward(x, act, bits, impl="ffi", **kwa))(x)
    np.testing.assert_array_equal(np.asarray(c_pure), np.asarray(c_ffi))

    def loss(x, impl):
        y = uj.activation(x, act, bits, impl=impl, **kwa)
        return (y.astype(jnp.float32) * jnp.cos(jnp.arange(y.size).reshape(y.shape))).sum()

    g_pure = jax.jit(jax.grad(lambda x: loss(x, "pure")))(x)
    g_ffi = jax.jit(jax.grad(lambda x: loss(x, "ffi")))(x)
    assert same_bits_or_both_nan(np.asarray(g_pure), np.asarray(g_ffi))


# ---- exact family: gradients equal jax.nn's bit for bit -----------------------------------

def _mlp_params(key, sizes, dtype):
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, k1, k2 = jax.random.split(key, 3)
        params.append((jax.random.normal(k1, (a, b), dtype) / np.sqrt(a),
                       jax.random.normal(k2, (b,), dtype) * 0.1))
    return params


def _mlp_loss(params, x, t, act):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = act(h)
    return jnp.mean((h - t) ** 2)


@pytest.mark.parametrize("impl", ["auto"] + IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mlp_relu_gradients_exact(impl, dtype):
    from unswag import unswag_relu
    key = jax.random.PRNGKey(0)
    params = _mlp_params(key, [16, 64, 64, 4], jnp.dtype(dtype))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 16), jnp.dtype(dtype))
    t = jax.random.normal(jax.random.PRNGKey(2), (32, 4), jnp.dtype(dtype))
    ref_l, ref_g = jax.jit(jax.value_and_grad(
        lambda p: _mlp_loss(p, x, t, jax.nn.relu)))(params)
    l, g = jax.jit(jax.value_and_grad(
        lambda p: _mlp_loss(p, x, t, lambda h: unswag_relu(h, impl=impl))))(params)
    assert np.asarray(l) == np.asarray(ref_l)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref_g)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("impl", IMPLS)
def test_leaky_relu_gradient_exact(impl):
    x = jax.random.normal(jax.random.PRNGKey(3), (1000,))
    x = jnp.where(x == 0, 1.0, x)  # jax.nn.leaky_relu has slope 1 at exactly 0
    g = jax.grad(lambda x: (uj.leaky_relu(x, 0.2, impl=impl) * jnp.sin(x)).sum())(x)
    ref = jax.grad(lambda x: (jax.nn.leaky_relu(x, 0.2) * jnp.sin(x)).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(ref))


# ---- k-bit gradients within the codebook's bound ---------------------------------------------

def exact_value(act, x):
    import math
    if act == "silu":
        return x / (1.0 + np.exp(-x))
    if act == "gelu":
        return 0.5 * x * np.vectorize(math.erfc)(-x / math.sqrt(2.0))
    u2 = 2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    return x / (1.0 + np.exp(-u2))


JAX_NN = {"silu": jax.nn.silu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
          "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True)}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_kbit_gradient_within_codebook_bound(act, bits, impl):
    """|dx - dx_exact| = |dy| |level[code(x)] - f'(x)| <= |dy| max_pieces sup|f' - level|."""
    bound = uj.gradient_error_bound(act, bits)
    x = np.concatenate([np.random.default_rng(4).standard_normal(20000) * 3,
                        np.asarray(uj.builtin_codebook(act, bits)[0])]).astype(np.float32)
    dy = np.random.default_rng(5).standard_normal(x.size).astype(np.float32)
    _, vjp = jax.vjp(lambda x: uj.activation(x, act, bits, impl=impl), jnp.asarray(x))
    dx = np.asarray(vjp(jnp.asarray(dy))[0], np.float64)
    exact = dy.astype(np.float64) * uj.exact_derivative(act, x.astype(np.float64))
    err = np.abs(dx - exact)
    slack = 1e-6 * np.abs(dy) + 1e-30
    assert np.all(err <= np.abs(dy) * bound + slack), (act, bits, err.max(), bound)
    # and the bound is tight enough to mean something: it shrinks with bits
    if bits > 1:
        assert bound < uj.gradient_error_bound(act, bits // 2)
    # forward is exact (float32 rounding of f(x))
    y = np.asarray(uj.activation(jnp.asarray(x), act, bits, impl=impl), np.float64)
    np.testing.assert_allclose(y, exact_value(act, x.astype(np.float64)), rtol=1e-5,
                               atol=1e-30)
    np.testing.assert_allclose(y, np.asarray(JAX_NN[act](jnp.asarray(x))), rtol=1e-5,
                               atol=1e-6)


def test_bound_is_attained_on_the_grid():
    """The bound is the max over pieces of |f' - level| (endpoint check by hand)."""
    act, bits = "silu", 1
    _, lv, _ = uj.builtin_codebook(act, bits)
    # f' of silu tends to 0 at -inf... and exceeds 1 near 1.28; on [0, 30] the worst
    # difference from level[1] is at x = 0 (f'=0.5) or the max of f' (~1.0998)
    fmax = max(uj.exact_derivative(act, np.linspace(0, 30, 100001)))
    expect = max(abs(0.5 - lv[1]), abs(fmax - lv[1]), abs(0.5 - lv[0]),
                 abs(min(uj.exact_derivative(act, np.linspace(-30, 0, 100001))) - lv[0]))
    assert abs(uj.gradient_error_bound(act, bits) - expect) < 1e-6


# ---- residuals: only the packed code -----------------------------------------------------------

@pytest.mark.parametrize("impl", ["auto"] + IMPLS)
@pytest.mark.parametrize("act,bits", [("relu", 1), ("leaky_relu", 1), ("silu", 4),
                                      ("gelu", 2), ("gelu_tanh", 8), ("silu", 1)])
@pytest.mark.parametrize("shape", [(1000,), (3, 7, 11)])
def test_residual_is_packed_code(act, bits, impl, shape):
    n = int(np.prod(shape))
    x = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.bfloat16)
    f = lambda x: uj.activation(x, act, bits, impl=impl)
    _, vjp = jax.vjp(f, x)
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(vjp)
              if hasattr(v, "dtype") and hasattr(v, "shape")]
    assert len(leaves) == 1, [(v.dtype, v.shape) for v in leaves]
    (res,) = leaves
    assert res.dtype == np.uint8 and res.shape == (-(-n * bits // 8),)
    assert not any(v.size == n and v.dtype != np.uint8 for v in leaves)
    # the same under jit: jax.linearize's residuals
    _, lin = jax.linearize(f, x)
    lin_leaves = [v for v in jax.tree_util.tree_leaves(lin) if hasattr(v, "dtype")]
    assert not any(np.size(v) == n and v.dtype != np.uint8 for v in lin_leaves)


def test_print_saved_residuals_reports_uint8():
    import contextlib
    import io

    from jax.ad_checkpoint import print_saved_residuals
    x = jnp.ones((4096,), jnp.float32)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(lambda x: uj.silu(x, 4).sum(), x)
    text = buf.getvalue()
    assert "u8[2048]" in text and "f32[4096]" not in text, text


# ---- jit / grad / vmap / shapes -----------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_matches_per_example(impl):
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((5, 3, 13)).astype(np.float32))  # 39*4 bits: not bytes
    f = lambda x: uj.silu(x, 4, impl=impl)
    y_v = jax.vmap(f)(x)
    np.testing.assert_array_equal(np.asarray(y_v), np.asarray(f(x)))
    g_v = jax.vmap(jax.grad(lambda x: (f(x) ** 2).sum()))(x)
    g = jax.grad(lambda x: (f(x) ** 2).sum())(x)
    np.testing.assert_array_equal(np.asarray(g_v), np.asarray(g))
    # per-example codes: vmap of forward == forward of each example
    _, c_v = jax.vmap(lambda x: uj.forward(x, "silu", 2, impl=impl))(x)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(np.asarray(c_v[i]),
                                      np.asarray(uj.forward(x[i], "silu", 2, impl=impl)[1]))
    # nested vmap and in_axes other than 0
    y_vv = jax.vmap(jax.vmap(f, in_axes=1), in_axes=0)(x)
    np.testing.assert_array_equal(np.asarray(y_vv), np.asarray(jnp.swapaxes(f(x), 1, 2)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (2, 3, 4, 5), (7, 0, 3)])
def test_shapes(shape, impl):
    x = jnp.asarray(np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    y = jax.jit(lambda x: uj.gelu(x, 4, impl=impl))(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    g = jax.grad(lambda x: uj.gelu(x, 4, impl=impl).sum())(x)
    assert g.shape == x.shape
    gr = jax.grad(lambda x: uj.relu(x, impl=impl).sum())(x)
    np.testing.assert_array_equal(np.asarray(gr), np.asarray(
        jax.grad(lambda x: jax.nn.relu(x).sum())(x)))


def test_package_level_unswag_relu():
    """`from unswag import unswag_relu`: the package-level name of unswag.jax.relu."""
    from unswag import unswag_relu
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 128))
    y = unswag_relu(x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jax.nn.relu(x)))
    g = jax.grad(lambda x: unswag_relu(x).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), np.asarray((x > 0).astype(x.dtype)))


def test_second_call_different_params_not_confused():
    x = jnp.linspace(-2, 2, 9)
    a = uj.leaky_relu(x, 0.1)
    b = uj.leaky_relu(x, 0.3)
    np.testing.assert_allclose(np.asarray(a)[:4], np.asarray(x)[:4] * 0.1, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(b)[:4], np.asarray(x)[:4] * 0.3, rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_custom_codebook(impl):
    b = (-1.0, 0.0, 1.0)
    lv = (0.0, 0.25, 0.75, 1.0)
    x = jnp.asarray([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, jnp.nan])
    _, codes = uj.forward(x, "silu", 2, codebook=(b, lv), impl=impl)
    # x > b counts: 0,0,1,1,2,2,3 and NaN -> 0
    np.testing.assert_array_equal(np.asarray(codes), _ref_pack([0, 0, 1, 1, 2, 2, 3, 0], 2))
    g = jax.grad(lambda x: uj.silu(x, 2, codebook=(b, lv), impl=impl).sum())(x)
    np.testing.assert_array_equal(np.asarray(g), np.array([0, 0, .25, .25, .75, .75, 1, 0],
                                                          np.float32))


def _ref_pack(codes, bits):
    per = 8 // bits
    out = np.zeros(-(-len(codes) * bits // 8), np.uint8)
    for i, c in enumerate(codes):
        out[i * bits // 8] |= c << ((i % per) * bits)
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_packing_layout_by_hand(impl):
    x = jnp.asarray([1.0, -1.0, 2.0, 3.0, -4.0, 5.0, 6.0, -7.0, 8.0, 9.0], jnp.float32)
    _, codes = uj.forward(x, "relu", 1, impl=impl)
    # bits 0..7 = 1,0,1,1,0,1,1,0 -> 0b01101101 = 0x6D; then 1,1 -> 0x03
    np.testing.assert_array_equal(np.asarray(codes), np.array([0x6D, 0x03], np.uint8))


# ---- errors ------------------------------------------------------------------------------------

def test_unsupported_dtype():
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        uj.relu(jnp.arange(4, dtype=jnp.int32))
    with pytest.raises(TypeError, match="dtype"):
        uj.silu(jnp.ones(4, jnp.int8))


def test_unsupported_float64():
    import jax.experimental
    ctx = (jax.experimental.enable_x64() if hasattr(jax.experimental, "enable_x64")
           else jax.enable_x64(True))
    with ctx:
        with pytest.raises(TypeError, match="float64"):
            uj.gelu(jnp.ones(4, jnp.float64))


@pytest.mark.parametrize("bad", [0, 3, 5, 16, -1, True])
def test_bad_bits(bad):
    with pytest.raises(ValueError, match="bits"):
        uj.silu(jnp.ones(4), bits=bad)


def test_bad_bits_exact():
    with pytest.raises(ValueError, match="exact with a 1-bit code"):
        uj.relu(jnp.ones(4), bits=4)


def test_bad_args():
    with pytest.raises(ValueError, match="impl"):
        uj.relu(jnp.ones(4), impl="cuda")
    with pytest.raises(ValueError, match="hardtanh"):
        uj.hardtanh(jnp.ones(4), 1.0, -1.0)
    with pytest.raises(ValueError, match="unknown activation"):
        uj.activation(jnp.ones(4), "tanh")
    with pytest.raises(ValueError, match="boundaries"):
        uj.silu(jnp.ones(4), 2, codebook=((0.0, 1.0), (0.0, 0.5, 1.0, 1.0)))
    with pytest.raises(ValueError, match="increasing"):
        uj.silu(jnp.ones(4), 2, codebook=((0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 1.0)))


@need_ffi
def test_ffi_handler_typed_errors():
    """The handler itself validates what reaches it and returns typed errors."""
    from unswag.jax import _ffi
    ffi = _ffi._jffi
    f32 = jax.ShapeDtypeStruct((8,), jnp.float32)

    def call(x, codes_bytes, **attrs):
        out = (jax.ShapeDtypeStruct(x.shape, x.dtype),
               jax.ShapeDtypeStruct((codes_bytes,), jnp.uint8))
        return jax.block_until_ready(ffi.ffi_call(_ffi.FORWARD, out)(x, **attrs))

    ok = call(jnp.ones(8), 1, act=np.int32(0), bits=np.int32(1))
    assert np.asarray(ok[1]).tolist() == [255]
    with pytest.raises(Exception, match=r"INVALID_ARGUMENT.*codes has 3 bytes"):
        call(jnp.ones(8), 3, act=np.int32(0), bits=np.int32(1))
    with pytest.raises(Exception, match=r"INVALID_ARGUMENT.*int32"):
        call(jnp.ones(8, jnp.int32), 1, act=np.int32(0), bits=np.int32(1))
    with pytest.raises(Exception, match="UNSWAG_ERR_BAD_BITS"):
        call(jnp.ones(8), 3, act=np.int32(4), bits=np.int32(3))
    with pytest.raises(Exception, match="UNSWAG_ERR_BAD_ACTIVATION"):
        call(jnp.ones(8), 1, act=np.int32(42), bits=np.int32(1))
    with pytest.raises(Exception, match="unknown attribute"):
        call(jnp.ones(8), 1, act=np.int32(0), bits=np.int32(1), color=np.int32(1))
    with pytest.raises(Exception, match="attribute act is required"):
        call(jnp.ones(8), 1, bits=np.int32(1))
    del f32


def test_impl_ffi_without_handlers_explains(monkeypatch):
    from unswag.jax import _ffi
    monkeypatch.setitem(_ffi._state, "cpu", False)
    monkeypatch.setitem(_ffi._state, "error", "not built here")
    with pytest.raises(_native.UnswagError, match="not built here"):
        uj.relu(jnp.ones(4), impl="ffi")
    # auto falls back to pure JAX
    np.testing.assert_array_equal(np.asarray(uj.relu(jnp.asarray([-1.0, 2.0]))), [0.0, 2.0])
