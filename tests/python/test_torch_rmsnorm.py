"""RMSNorm ops (unswag::rms_norm_forward / _backward), unswag.torch.rms_norm and RMSNorm:
the forward against Hugging Face's LlamaRMSNorm formula (built inline), gradients against
fp64 autograd of the same formula, opcheck, what is kept for backward, bad input, and
CUDA against the CPU (byte for byte) where a GPU is present."""
import math

import pytest

torch = pytest.importorskip("torch")
import conftest as C
import unswag.torch as ut
from unswag import _native as N

EPS = 1e-6
SHAPES = [(4, 7, 2048), (3, 100), (2, 3, 257), (1, 4096), (5, 1), (6, 13), (512, 2048)]
LOW = [torch.bfloat16, torch.float16]
ULPS_DTYPE = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def hf_rms_norm(x, weight, eps=EPS):
    """transformers' LlamaRMSNorm.forward, written out."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


class HFRMSNorm(torch.nn.Module):
    """The module shape of LlamaRMSNorm (parameter names), for state_dict checks."""

    def __init__(self, hidden_size, eps=EPS):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x):
        return hf_rms_norm(x, self.weight, self.variance_epsilon)


def _ulps(a, b):
    """Distance in ulps between same-dtype tensors (sign-magnitude order)."""
    ia = a.contiguous().view(ULPS_DTYPE[a.dtype]).long()
    ib = b.contiguous().view(ULPS_DTYPE[b.dtype]).long()
    bits = 16 if a.dtype != torch.float32 else 32
    sign = 1 << (bits - 1)
    ia = torch.where(ia < 0, -(ia & (sign - 1)), ia)
    ib = torch.where(ib < 0, -(ib & (sign - 1)), ib)
    return (ia - ib).abs()


def _data(shape, dtype, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(dtype).to(device)
    w = (torch.randn(shape[-1], generator=g) * 0.5 + 1).to(dtype).to(device)
    dy = torch.randn(shape, generator=g).to(dtype).to(device)
    return x, w, dy


# ---------------------------------------------------------------- forward vs HF

@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_hf(dtype, shape):
    """y is HF's bit for bit except where rstd (the fp32 row sum in our fixed order, not
    torch's) differs by an fp32 ulp or two and that moves n = round(x * rstd) by one ulp,
    which moves y by 1 or 2 ulps.  Measured (normal(0, 3) inputs, up to 4M elements):
    6e-6 .. 2e-5 of the elements differ, by at most 2 ulps; rstd differs from torch's in
    10-25% of the rows, by at most 2 fp32 ulps.  Asserted: <= 2 ulps, <= 0.1%."""
    x, w, _ = _data(shape, dtype)
    y = ut.rms_norm(x, w, EPS)
    ref = hf_rms_norm(x, w)
    d = _ulps(y, ref)
    frac = (d > 0).double().mean().item()
    print(f"{dtype} {shape}: {int((d > 0).sum())} of {d.numel()} differ, max {int(d.max())} ulp")
    assert int(d.max()) <= 2
    assert frac <= 1e-3
    # rstd against HF's fp32 rsqrt(mean + eps): a few fp32 ulps (summation order)
    _, rstd = torch.ops.unswag.rms_norm_forward(x, w, EPS)
    xf = x.float()
    ref_rstd = torch.rsqrt(xf.pow(2).mean(-1) + EPS)
    assert int(_ulps(rstd, ref_rstd).max()) <= 4


def test_forward_fp32_close_to_hf():
    x, w, _ = _data((8, 1000), torch.float32)
    y = ut.rms_norm(x, w, EPS)
    assert int(_ulps(y, hf_rms_norm(x, w)).max()) <= 3


# ---------------------------------------------------------------- gradients vs fp64

def _grads_fp64(x, w, dy):
    x64 = x.double().requires_grad_()
    w64 = w.double().requires_grad_()
    h = x64 * torch.rsqrt(x64.pow(2).mean(-1, keepdim=True) + EPS)
    y = w64 * h
    return torch.autograd.grad(y, (x64, w64), dy.double())


# normwise relative bounds: a few units of the dtype's rounding (2^-8 bf16, 2^-11 fp16)
GRAD_TOL = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 2e-6}


@pytest.mark.parametrize("dtype", LOW + [torch.float32])
@pytest.mark.parametrize("shape", [(4, 7, 256), (33, 1000), (2, 5)])
def test_gradients_vs_fp64(dtype, shape):
    x, w, dy = _data(shape, dtype, seed=1)
    x.requires_grad_()
    w.requires_grad_()
    y = ut.rms_norm(x, w, EPS)
    gx, gw = torch.autograd.grad(y, (x, w), dy)
    rx, rw = _grads_fp64(x.detach(), w.detach(), dy)
    assert gx.dtype == dtype and gw.dtype == dtype
    assert C.rel_err(gx, rx) <= GRAD_TOL[dtype]
    assert C.rel_err(gw, rw) <= GRAD_TOL[dtype]


def test_gradients_match_torch_autograd_fp32():
    """fp32: our backward vs autograd of HF's formula in fp32 (both fp32 math)."""
    x, w, dy = _data((16, 512), torch.float32, seed=2)
    a = x.clone().requires_grad_()
    b = w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(ut.rms_norm(a, b, EPS), (a, b), dy)
    a2 = x.clone().requires_grad_()
    b2 = w.clone().requires_grad_()
    hx, hw = torch.autograd.grad(hf_rms_norm(a2, b2), (a2, b2), dy)
    assert C.rel_err(gx, hx) <= 1e-6
    assert C.rel_err(gw, hw) <= 1e-6


def test_backward_op_dw_is_fp32_sum():
    x, w, dy = _data((10, 64), torch.bfloat16, seed=3)
    _y, rstd = torch.ops.unswag.rms_norm_forward(x, w, EPS)
    _dx, dw = torch.ops.unswag.rms_norm_backward(dy, x, w, rstd)
    assert dw.dtype == torch.float32 and dw.shape == w.shape
    n = (x.float() * rstd[:, None]).to(torch.bfloat16).float()
    ref = (dy.double() * n.double()).sum(0)
    assert C.rel_err(dw, ref) <= 1e-6


# ---------------------------------------------------------------- op machinery

@pytest.mark.parametrize("dtype", LOW + [torch.float32])
def test_opcheck(dtype):
    x, w, dy = _data((3, 5, 40), dtype, seed=4)
    x.requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.unswag.rms_norm_forward, (x, w, EPS))
    _, rstd = torch.ops.unswag.rms_norm_forward(x.detach(), w.detach(), EPS)
    torch.library.opcheck(torch.ops.unswag.rms_norm_backward,
                          (dy, x.detach(), w.detach(), rstd))


def test_saves_x_and_rstd_only():
    """Kept for backward: x (bf16) and one fp32 a row; no fp32 copy of the activations."""
    x, w, _ = _data((64, 512), torch.bfloat16)
    x.requires_grad_()
    w = torch.nn.Parameter(w)
    seen, _ = C.saved_bytes(lambda: ut.rms_norm(x, w, EPS))
    params = {w.untyped_storage().data_ptr()}
    kept = sum(n for p, n in seen.items() if p not in params)
    assert kept == x.numel() * 2 + 64 * 4


def test_non_contiguous_and_empty():
    x, w, _ = _data((6, 32), torch.bfloat16)
    xt = x.t().contiguous().t()  # same values, column-major storage
    assert torch.equal(ut.rms_norm(xt, w), ut.rms_norm(x, w))
    e = ut.rms_norm(torch.empty(0, 32, dtype=torch.bfloat16), w)
    assert e.shape == (0, 32)


def test_module_drop_in():
    hf = HFRMSNorm(48).to(torch.bfloat16)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(48))
    m = ut.RMSNorm(48, eps=EPS, dtype=torch.bfloat16)
    assert list(m.state_dict()) == list(hf.state_dict()) == ["weight"]
    m.load_state_dict(hf.state_dict())
    x, _, _ = _data((5, 48), torch.bfloat16, seed=5)
    assert int(_ulps(m(x), hf(x)).max()) <= 2
    assert m.variance_epsilon == hf.variance_epsilon


def test_torch_compile():
    x, w, _dy = _data((4, 64), torch.bfloat16, seed=6)
    x.requires_grad_()
    f = torch.compile(lambda a, b: ut.rms_norm(a, b, EPS), backend="aot_eager", fullgraph=True)
    y = f(x, w)
    assert torch.equal(y, ut.rms_norm(x, w, EPS))


# ---------------------------------------------------------------- bad input

def test_bad_input():
    x, w, _ = _data((4, 16), torch.bfloat16)
    with pytest.raises(TypeError, match="unsupported dtype"):
        ut.rms_norm(x.double(), w.double())
    with pytest.raises(TypeError, match="cast the weight"):
        ut.rms_norm(x, w.float())
    with pytest.raises(ValueError, match="does not match"):
        ut.rms_norm(x, w[:8])
    with pytest.raises(ValueError, match="does not match"):
        ut.rms_norm(x, w.view(4, 4))
    with pytest.raises(ValueError, match="eps"):
        ut.rms_norm(x, w, -1.0)
    with pytest.raises(ValueError, match="eps"):
        ut.rms_norm(x, w, math.nan)
    with pytest.raises(N.UnswagError, match="cols = 0"):
        ut.rms_norm(torch.empty(3, 0, dtype=torch.bfloat16), torch.empty(0, dtype=torch.bfloat16))
    _, rstd = torch.ops.unswag.rms_norm_forward(x, w, EPS)
    with pytest.raises(ValueError, match="rstd"):
        torch.ops.unswag.rms_norm_backward(x, x, w, rstd.double())
    with pytest.raises(ValueError, match="rstd"):
        torch.ops.unswag.rms_norm_backward(x, x, w, rstd[:2])
    with pytest.raises(ValueError, match="differs"):
        torch.ops.unswag.rms_norm_backward(x[:2], x, w, rstd)


# ---------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available() or not (N.available() and N.cuda_built()),
                          reason="needs a CUDA device and a CUDA build of libunswag")


@cuda
@pytest.mark.parametrize("dtype", LOW + [torch.float32])
@pytest.mark.parametrize("shape", [(4, 7, 2048), (3, 100), (2, 3, 257), (300, 64), (5000, 128)])
def test_cuda_matches_cpu_bytes(dtype, shape):
    x, w, dy = _data(shape, dtype, seed=7)
    y, rstd = torch.ops.unswag.rms_norm_forward(x, w, EPS)
    dx, dw = torch.ops.unswag.rms_norm_backward(dy, x, w, rstd)
    xc, wc, dyc = x.cuda(), w.cuda(), dy.cuda()
    yc, rstdc = torch.ops.unswag.rms_norm_forward(xc, wc, EPS)
    dxc, dwc = torch.ops.unswag.rms_norm_backward(dyc, xc, wc, rstdc)
    for a, b in [(y, yc), (rstd, rstdc), (dx, dxc), (dw, dwc)]:
        assert torch.equal(a.view(ULPS_DTYPE[a.dtype]), b.cpu().view(ULPS_DTYPE[b.dtype]))


@cuda
def test_cuda_autograd_and_opcheck():
    x, w, dy = _data((3, 5, 40), torch.bfloat16, seed=8, device="cuda")
    x.requires_grad_()
    w.requires_grad_()
    torch.library.opcheck(torch.ops.unswag.rms_norm_forward, (x, w, EPS))
    gx, gw = torch.autograd.grad(ut.rms_norm(x, w, EPS), (x, w), dy)
    rx, rw = _grads_fp64(x.detach(), w.detach(), dy)
    assert C.rel_err(gx, rx) <= GRAD_TOL[torch.bfloat16]
    assert C.rel_err(gw, rw) <= GRAD_TOL[torch.bfloat16]


@cuda
def test_cuda_bad_input():
    x, w, _ = _data((4, 16), torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        ut.rms_norm(x, w.cpu())
