"""Elementwise ops: opcheck, exactness, the k-bit bound, dtype/layout/device handling."""
import math

import pytest

torch = pytest.importorskip("torch")
import unswag.torch as ut
from unswag import _native as N

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EXACT = [  # (name, unswag fn, torch reference fn)
    ("relu", lambda x: ut.relu(x), torch.relu),
    ("leaky_relu", lambda x: ut.leaky_relu(x, 0.2),
     lambda x: torch.nn.functional.leaky_relu(x, 0.2)),
    ("relu6", lambda x: ut.relu6(x), torch.nn.functional.relu6),
    ("hardtanh", lambda x: ut.hardtanh(x, -0.5, 2.0),
     lambda x: torch.nn.functional.hardtanh(x, -0.5, 2.0)),
]
SMOOTH = [("silu", torch.nn.functional.silu),
          ("gelu", torch.nn.functional.gelu),
          ("gelu_tanh", lambda x: torch.nn.functional.gelu(x, approximate="tanh"))]


def _sample(dtype, n=4099):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g) * 3
    x[:8] = torch.tensor([0.0, -0.0, 6.0, -0.5, 2.0, float("inf"), -float("inf"), 1e-3])
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,bits", [("relu", 1), ("leaky_relu", 1), ("relu6", 1),
                                      ("hardtanh", 1), ("silu", 1), ("silu", 2), ("gelu", 4),
                                      ("gelu_tanh", 8)])
def test_opcheck_act(act, bits, dtype):
    x = _sample(dtype, 37).nan_to_num(posinf=7.0, neginf=-7.0).reshape(37, 1).requires_grad_()
    torch.library.opcheck(torch.ops.unswag.act_forward, (x, act, bits, 0.1, -1.0, 1.0))
    codes = torch.ops.unswag.act_forward(x.detach(), act, bits, 0.1, -1.0, 1.0)[1]
    torch.library.opcheck(torch.ops.unswag.act_backward,
                          (torch.randn(37, 1).to(dtype), codes, act, bits, 0.1, -1.0, 1.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_opcheck_gated(act, dtype):
    g = torch.randn(5, 7).to(dtype).requires_grad_()
    u = torch.randn(5, 7).to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.unswag.gated_forward, (g, u, act))
    torch.library.opcheck(torch.ops.unswag.gated_backward,
                          (torch.randn(5, 7).to(dtype), g.detach(), u.detach(), act))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,fn,ref", EXACT, ids=[e[0] for e in EXACT])
def test_exact_family_bitwise(name, fn, ref, dtype):
    x = _sample(dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    ya, yb = fn(xa), ref(xb)
    assert torch.equal(ya, yb)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(xa.grad, xb.grad), name


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("act,ref", SMOOTH, ids=[s[0] for s in SMOOTH])
def test_smooth_forward_exact_backward_codebook(act, ref, bits, dtype):
    """Forward within one rounding of the fp32/fp64 value; backward is exactly
    dy * level[code(x)] and obeys |dx - dy f'(x)| <= |dy| |q(x) - f'(x)| (+ one rounding)."""
    x = _sample(dtype)
    x = x[torch.isfinite(x)]
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    xr = x.clone().requires_grad_()
    y = ut.activation(xr, act, bits)
    ydbl = ref(x.double())
    ulp = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[dtype]
    assert ((y.double() - ydbl).abs() <= ulp * ydbl.abs() + 1e-30 + 2.0 ** -24).all()
    y.backward(dy)
    bnd, lev, _rms = ut.codebook(act, bits)
    code = torch.bucketize(x.float(), bnd, right=False)  # number of b_j < x
    expect = (dy.float() * lev[code]).to(dtype)
    assert torch.equal(xr.grad, expect)
    # derived bound against the exact derivative (computed in float64)
    xd = x.double().requires_grad_()
    ref(xd).backward(torch.ones_like(xd))
    fprime = xd.grad
    err = (xr.grad.double() - dy.double() * fprime).abs()
    bound = dy.double().abs() * (lev.double()[code] - fprime).abs() \
        + ulp * (dy.double() * lev.double()[code]).abs() + 2.0 ** -24  # fp16 subnormal step
    assert (err <= bound).all()


def test_codebook_rms_reported():
    for act in ("silu", "gelu", "gelu_tanh"):
        errs = [ut.codebook(act, b)[2] for b in (1, 2, 4, 8)]
        assert all(e > 0 and math.isfinite(e) for e in errs)
        assert errs == sorted(errs, reverse=True)


def test_code_bytes_and_shape():
    x = torch.randn(3, 5, 7)
    for bits in (1, 2, 4, 8):
        y, codes = torch.ops.unswag.act_forward(x, "silu", bits, 0.0, -1.0, 1.0)
        assert y.shape == x.shape and codes.dtype == torch.uint8
        assert codes.numel() == N.code_bytes(x.numel(), bits) == (x.numel() * bits + 7) // 8


def test_noncontiguous_input_is_correct():
    x = torch.randn(16, 12).t()  # non-contiguous view
    assert not x.is_contiguous()
    xa = x.clone().requires_grad_()  # clone keeps the strides
    xb = x.clone().requires_grad_()
    ya = ut.relu(xa)
    yb = torch.relu(xb)
    assert torch.equal(ya, yb)
    dy = torch.randn(16, 12).t()
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(xa.grad, xb.grad)
    h = ut.gated_act(x, x.clone(), "silu")
    assert torch.allclose(h, torch.nn.functional.silu(x) * x, rtol=1e-6, atol=1e-6)


def test_empty_and_scalar():
    assert ut.relu(torch.empty(0)).shape == (0,)
    x = torch.tensor(-2.0, requires_grad=True)
    ut.silu(x).backward()
    assert x.grad.shape == ()


@pytest.mark.parametrize("dtype", [torch.float64, torch.int32])
def test_unsupported_dtype_raises(dtype):
    with pytest.raises(TypeError, match="unsupported dtype"):
        ut.relu(torch.ones(4, dtype=dtype))


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        ut.silu(torch.ones(4), bits=3)
    with pytest.raises(ValueError):
        ut.relu(torch.ones(4), bits=2)
    with pytest.raises(ValueError):
        ut.activation(torch.ones(4), "swish")
    with pytest.raises(N.UnswagError, match="BAD_PARAM"):
        ut.hardtanh(torch.ones(4), 1.0, -1.0)
    with pytest.raises(TypeError, match="mixed dtypes"):
        ut.gated_act(torch.ones(4), torch.ones(4, dtype=torch.float16))
    with pytest.raises(ValueError, match="shape"):
        ut.gated_act(torch.ones(4), torch.ones(5))


def test_meta_tensors_trace_shapes():
    x = torch.empty(8, 9, device="meta")
    y, codes = torch.ops.unswag.act_forward(x, "gelu", 2, 0.0, -1.0, 1.0)
    assert y.device.type == "meta" and codes.shape == (18,)


def test_modules():
    x = torch.randn(6, 5)
    assert torch.equal(ut.ReLU()(x), torch.relu(x))
    assert torch.equal(ut.LeakyReLU(0.3)(x), torch.nn.functional.leaky_relu(x, 0.3))
    assert torch.equal(ut.ReLU6()(x * 4), torch.nn.functional.relu6(x * 4))
    assert torch.equal(ut.Hardtanh(-0.2, 0.2)(x), torch.nn.functional.hardtanh(x, -0.2, 0.2))
    assert torch.allclose(ut.SiLU(bits=4)(x), torch.nn.functional.silu(x), atol=1e-6)
    assert torch.allclose(ut.GELU("tanh")(x), torch.nn.functional.gelu(x, approximate="tanh"),
                          atol=1e-6)
    assert f"bits={N.DEFAULT_BITS}" in repr(ut.GELU())
    assert list(ut.GELU().state_dict()) == []


def test_autocast_cpu():
    lin1, lin2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin1(x)
        y = lin2(ut.gelu(h, bits=2))
        z = ut.relu(h)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16 and z.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lin1.weight.grad.dtype == torch.float32 and torch.isfinite(lin1.weight.grad).all()


def test_cuda_missing_part_says_what_to_do():
    """A CUDA entry point of a CPU-only build returns a status whose message says how to fix it."""
    if N.cuda_built():
        pytest.skip("library built with CUDA")
    import ctypes
    op = N.make_op("relu", 1)
    st = N.lib().unswag_forward_cuda(ctypes.byref(op), N.F32, None, None, None, 0, None)
    with pytest.raises(N.UnswagError, match="nvcc"):
        N.check(st, "forward_cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu(dtype):
    if not N.cuda_built():
        with pytest.raises(N.UnswagError, match="nvcc"):
            ut.relu(torch.ones(4, device="cuda"))
        return
    x = _sample(dtype)
    for act, bits in [("relu", 1), ("silu", 2), ("gelu", 4)]:
        yc, cc = torch.ops.unswag.act_forward(x.cuda(), act, bits, 0.01, -1.0, 1.0)
        y, c = torch.ops.unswag.act_forward(x, act, bits, 0.01, -1.0, 1.0)
        # bytes equal, NaN included (silu(-inf) is NaN, as in torch)
        torch.testing.assert_close(yc.cpu(), y, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(cc.cpu(), c)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y2 = ut.relu(x.cuda())
    s.synchronize()
    assert torch.equal(y2.cpu(), torch.relu(x))
