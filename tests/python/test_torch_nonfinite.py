"""Non-finite inputs: what the single ops' gradients are, exactly as README.md and
docs/torch.md state it.  The code of a NaN is 0 and of +-inf the end codes (the C code
format); the backward sees only the code, so it cannot reproduce torch's NaN gradients:

- relu / relu6 / hardtanh at NaN: 0 (torch passes dy through); leaky_relu at NaN:
  dy * slope, as torch;
- silu / gelu / gelu_tanh: NaN and -inf -> dy * level[0], +inf -> dy * level[last]
  (finite), where torch's gradient is NaN;
- the forward gives NaN for NaN, as torch; a NaN in dy gives NaN in dx wherever the
  code selects or scales dy, as torch.
"""
import math

import pytest

torch = pytest.importorskip("torch")
import unswag.torch as ut

NAN, INF = math.nan, math.inf
X = torch.tensor([NAN, INF, -INF, 1.0, -1.0])


def _grad(fn, x, dy):
    x = x.clone().requires_grad_()
    y = fn(x)
    (g,) = torch.autograd.grad(y, x, dy)
    return y.detach(), g


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_relu_family_at_nonfinite(dtype):
    x, dy = X.to(dtype), torch.full((5,), 3.0, dtype=dtype)
    for ours, theirs, nan_grad in ((ut.relu, torch.relu, 0.0),
                                   (ut.relu6, torch.nn.functional.relu6, 0.0),
                                   (ut.hardtanh, torch.nn.functional.hardtanh, 0.0),
                                   (lambda t: ut.leaky_relu(t, 0.25),
                                    lambda t: torch.nn.functional.leaky_relu(t, 0.25), 0.75)):
        y, g = _grad(ours, x, dy)
        y0, g0 = _grad(theirs, x, dy)
        assert torch.equal(y.isnan(), y0.isnan())
        assert torch.equal(y[1:], y0[1:])
        assert g[0].item() == nan_grad  # documented; torch: 3.0 except leaky (0.75)
        assert torch.equal(g[1:], g0[1:])  # infinities and finite values: as torch


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bits", [1, 2, 8])
def test_smooth_at_nonfinite(act, bits):
    fn = {"silu": lambda t: ut.silu(t, bits), "gelu": lambda t: ut.gelu(t, bits=bits),
          "gelu_tanh": lambda t: ut.gelu(t, "tanh", bits)}[act]
    ref = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
           "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}[act]
    _, levels, _ = ut.codebook(act, bits)
    dy = torch.full((5,), 2.0)
    y, g = _grad(fn, X, dy)
    y0, g0 = _grad(ref, X, dy)
    assert math.isnan(y[0]) and math.isnan(y0[0])  # forward: NaN stays NaN
    assert torch.isnan(g0[:3]).all()  # torch: NaN at NaN and at both infinities
    assert g[0] == 2.0 * levels[0] and g[2] == 2.0 * levels[0] and g[1] == 2.0 * levels[-1]
    assert torch.isfinite(g).all()


def test_nan_in_dy_propagates():
    x = torch.tensor([1.0, -1.0, 0.5])
    dy = torch.tensor([NAN, NAN, NAN])
    _, g = _grad(ut.relu, x, dy)
    _, g0 = _grad(torch.relu, x, dy)
    assert torch.equal(g.isnan(), g0.isnan())  # NaN where dy is selected, 0 elsewhere
    _, g = _grad(lambda t: ut.silu(t, 2), x, dy)
    assert torch.isnan(g).all()


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_fp32_forward_within_one_ulp_of_the_double_value(act):
    """README: the fp32 forward is within 1 ulp of the correctly rounded value (float-float
    for silu and gelu_tanh, double for gelu); torch's float formula may differ."""
    fn = {"silu": ut.silu, "gelu": ut.gelu, "gelu_tanh": lambda t: ut.gelu(t, "tanh")}[act]
    # double references without cancellation (torch's own double gelu underflows to -0
    # in the far negative tail, where 1 + erf cancels)
    ref = {"silu": lambda t: t * torch.sigmoid(t),
           "gelu": lambda t: 0.5 * t * torch.special.erfc(-t / math.sqrt(2.0)),
           "gelu_tanh": lambda t: t * torch.sigmoid(
               2 * math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3))}[act]
    x = torch.randn(1 << 14, generator=torch.Generator().manual_seed(0)) * 4
    y = fn(x)
    want = ref(x.double()).float()
    ulps = (y.view(torch.int32).long() - want.view(torch.int32).long()).abs()
    assert ulps.max().item() <= 1
