"""Gated MLP autograd function: exact against eager in both modes, every dtype, biases,
tiles that do not divide the token count, frozen weights, autocast."""
import pytest

torch = pytest.importorskip("torch")
import conftest as C
from unswag.torch.gated import gated_mlp, gated_mlp_weights

F = torch.nn.functional
ACTS = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}


def _mlp(bias, dtype=torch.float32, H=24, I=40):
    torch.manual_seed(0)
    lins = [torch.nn.Linear(H, I, bias=bias), torch.nn.Linear(H, I, bias=bias),
            torch.nn.Linear(I, H, bias=bias)]
    return [lin.to(dtype) for lin in lins]


def _eager(x, g, u, d, act):
    return d(ACTS[act](g(x)) * u(x))


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mode,tile", [("fused", 0), ("recompute", 7), ("recompute", 4096)])
def test_exact_fp32(act, bias, mode, tile):
    lins = _mlp(bias)
    x = torch.randn(3, 11, 24, requires_grad=True)
    params = [x] + [p for lin in lins for p in lin.parameters()]
    y0 = _eager(x, *lins, act)
    dy = torch.randn_like(y0)
    g0 = torch.autograd.grad(y0, params, dy)
    y1 = gated_mlp(x, *lins, act=act, mode=mode, tile_tokens=tile or 2048)
    g1 = torch.autograd.grad(y1, params, dy)
    assert C.rel_err(y1, y0) <= 1e-6
    for a, b in zip(g1, g0):
        assert C.rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_half_precision_close_to_fp32(dtype, mode):
    """Half precision: within the rounding of the dtype, as eager in that dtype is."""
    lins = _mlp(True)
    x = torch.randn(2, 9, 24)
    dy = torch.randn(2, 9, 24)
    ref = [l.double() for l in _mlp(True)]
    y_ref = _eager(x.double(), *ref, "silu")
    lh = _mlp(True, dtype)
    xh = x.to(dtype).requires_grad_()
    y = gated_mlp(xh, *lh, act="silu", mode=mode, tile_tokens=4)
    y.backward(dy.to(dtype))
    eps = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
    assert C.rel_err(y, y_ref) <= 8 * eps
    # eager in the same dtype for the gradient
    le = _mlp(True, dtype)
    xe = x.to(dtype).requires_grad_()
    _eager(xe, *le, "silu").backward(dy.to(dtype))
    assert C.rel_err(xh.grad, xe.grad) <= 8 * eps
    for a, b in zip(lh, le):
        assert C.rel_err(a.weight.grad, b.weight.grad) <= 8 * eps
    del lins


def test_frozen_weights_and_no_input_grad():
    lins = _mlp(True)
    for lin in lins[:2]:
        lin.weight.requires_grad_(False)
    x = torch.randn(4, 24)
    for mode in ("fused", "recompute"):
        y = gated_mlp(x, *lins, mode=mode, tile_tokens=3)
        y.sum().backward()
        assert lins[0].weight.grad is None and lins[2].weight.grad is not None
        lins[2].weight.grad = None


def test_weights_api_and_bad_mode():
    g, u, d = _mlp(False)
    x = torch.randn(5, 24)
    y = gated_mlp_weights(x, g.weight, None, u.weight, None, d.weight, None, "gelu")
    assert torch.allclose(y, _eager(x, g, u, d, "gelu"), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        gated_mlp(x, g, u, d, mode="lazy")


def test_recompute_keeps_only_input():
    lins = _mlp(False)
    x = torch.randn(2, 8, 24, requires_grad=True)
    b, _ = C.activation_bytes(torch.nn.ModuleList(lins),
                              lambda: gated_mlp(x, *lins, mode="recompute", tile_tokens=3))
    assert b == x.numel() * 4


@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_autocast_cpu_bf16(mode):
    lins = _mlp(True)
    x = torch.randn(2, 6, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gated_mlp(x, *lins, mode=mode, tile_tokens=5)
        y_ref = _eager(x, *_mlp(True), "silu")
    assert y.dtype == torch.bfloat16 == y_ref.dtype
    assert C.rel_err(y, y_ref) <= 2 ** -5
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for lin in lins for p in lin.parameters())
