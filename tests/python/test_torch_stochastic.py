"""Stochastic codes through torch: the C library's bytes, unbiased gradients, seeds from
torch's generator, argument errors, and the surgery report."""
import ctypes

import pytest

torch = pytest.importorskip("torch")
import unswag.torch as ut
from unswag import _native as N
from unswag import apply_unswag_surgery
from unswag.torch import functional as F

DTYPES = {torch.float32: N.F32, torch.float16: N.F16, torch.bfloat16: N.BF16}
DERIV = {"silu": torch.nn.functional.silu,
         "gelu": torch.nn.functional.gelu,
         "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}


def _c_forward(x, act, bits, seed):
    """The C library's stochastic forward on a contiguous CPU tensor."""
    y = torch.empty_like(x)
    codes = torch.empty(N.code_bytes(x.numel(), bits), dtype=torch.uint8)
    op = N.make_op(act, bits, codes="stochastic", seed=seed)
    N.check(N.lib().unswag_forward(ctypes.byref(op), DTYPES[x.dtype], x.data_ptr(), y.data_ptr(),
                                   codes.data_ptr(), x.numel()), "forward")
    return y, codes


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("act,bits", [("silu", 1), ("gelu", 2), ("gelu_tanh", 4), ("silu", 8)])
def test_op_equals_the_c_library(act, bits, dtype):
    x = (torch.randn(4099, generator=torch.Generator().manual_seed(1)) * 3).to(dtype)
    for seed in (0, 5, 2**62 - 1):
        y, codes = torch.ops.unswag.act_forward(x, act, bits, 0.0, -1.0, 1.0, None,
                                                "stochastic", torch.tensor(seed))
        cy, ccodes = _c_forward(x, act, bits, seed)
        assert torch.equal(codes, ccodes)
        assert torch.equal(y.view(torch.uint8), cy.view(torch.uint8))
        yd, _ = torch.ops.unswag.act_forward(x, act, bits, 0.0, -1.0, 1.0)
        assert torch.equal(y, yd)  # the forward value does not depend on the code kind


def test_opcheck_stochastic():
    x = torch.randn(37, 1).requires_grad_()
    torch.library.opcheck(torch.ops.unswag.act_forward,
                          (x, "gelu", 2, 0.0, -1.0, 1.0, None, "stochastic", torch.tensor(3)))
    codes = torch.ops.unswag.act_forward(x.detach(), "gelu", 2, 0.0, -1.0, 1.0, None,
                                         "stochastic", torch.tensor(3))[1]
    torch.library.opcheck(torch.ops.unswag.act_backward,
                          (torch.randn(37, 1), codes, "gelu", 2, 0.0, -1.0, 1.0, None,
                           "stochastic"))


@pytest.mark.parametrize("act", list(DERIV))
@pytest.mark.parametrize("bits", [1, 2])
def test_gradient_unbiased(act, bits):
    """Mean of the coded gradient over 8192 draws per x within 5 standard errors of f'(x)."""
    torch.manual_seed(0)
    xs = torch.linspace(-5, 5, 41)
    x = xs.repeat(8192, 1).requires_grad_()
    F.activation(x, act, bits, codes="stochastic").sum().backward()
    mean = x.grad.double().mean(0)
    xe = xs.clone().double().requires_grad_()
    DERIV[act](xe).sum().backward()
    exact = xe.grad
    levels = torch.tensor(N.stochastic_levels(act, bits), dtype=torch.float64)
    step = levels[1] - levels[0]
    p = ((exact - levels[0]) / step).frac()
    se = step * (p * (1 - p) / 8192).sqrt()
    assert ((mean - exact).abs() <= 5 * se + 1e-6).all(), (mean - exact).abs().max()
    assert x.grad.unique().numel() > 1  # really random, not a rounding


def test_seed_from_torch_generator():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2)) * 2

    def grad():
        xr = x.clone().requires_grad_()
        ut.silu(xr, bits=2, codes="stochastic").sum().backward()
        return xr.grad

    torch.manual_seed(7)
    a, b = grad(), grad()
    torch.manual_seed(7)
    c = grad()
    assert torch.equal(a, c)  # reproducible under torch.manual_seed
    assert not torch.equal(a, b)  # a fresh seed every call


@pytest.mark.parametrize("call,msg", [
    (lambda x: F.activation(x, "relu", 1, codes="stochastic"), "exact"),
    (lambda x: F.silu(x, 2, codebook=[0.0] * 3 + [0.5] * 4, codes="stochastic"), "codebook"),
    (lambda x: F.silu(x, 2, codes="random"), "codes"),
    (lambda x: ut.GELU(bits=2, codes="sometimes"), "codes"),
    (lambda x: ut.SiLU(bits=2, codes="stochastic").start_calibration(4), "calibrate"),
])
def test_bad_arguments(call, msg):
    with pytest.raises(ValueError, match=msg):
        call(torch.randn(8))


def test_surgery_report_and_training_step():
    n = torch.nn
    torch.manual_seed(0)
    model = n.Sequential(n.Linear(8, 16), n.GELU(), n.Linear(16, 16), n.SiLU(), n.Linear(16, 4))
    rep = apply_unswag_surgery(model, bits=2, codes="stochastic")
    text = str(rep)
    assert "codebook: stochastic gelu, 2 bit (4 levels" in text
    assert "codebook: stochastic silu, 2 bit (4 levels" in text
    assert rep.options["codes"] == "stochastic"
    assert model[1].codes == "stochastic" and "codes='stochastic'" in repr(model[1])
    model(torch.randn(5, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="calibrate"):
        apply_unswag_surgery(n.Sequential(n.Linear(2, 2), n.SiLU()), codes="stochastic",
                             calibrate=4)
    with pytest.raises(ValueError, match="codes"):
        apply_unswag_surgery(n.Sequential(n.Linear(2, 2), n.SiLU()), codes="dithered")
    default = apply_unswag_surgery(n.Sequential(n.Linear(2, 2), n.SiLU()))
    assert "codebook: built-in silu" in str(default)


def test_compiles_without_graph_break():
    """The seed is a tensor drawn inside the graph: fullgraph compiles, every call draws
    a fresh seed (different codes), and the gradient stays the op's."""
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), ut.SiLU(bits=2, codes="stochastic"))
    x = torch.randn(64, 16)
    cm = torch.compile(m, fullgraph=True, backend="aot_eager")

    def grad(mod):
        mod.zero_grad()
        mod(x).sum().backward()
        return m[0].weight.grad.clone()

    grad(cm)  # compile
    torch.manual_seed(5)
    a, b = grad(cm), grad(cm)
    assert not torch.equal(a, b)  # a fresh seed per call, inside the compiled graph
    torch.manual_seed(5)
    assert torch.equal(a, grad(m))  # the same draw from the same generator as eager


def test_seed_must_be_an_int64_tensor():
    x = torch.randn(8)
    for bad in (torch.tensor(1.5), torch.tensor([1, 2])):
        with pytest.raises(TypeError, match="seed"):
            torch.ops.unswag.act_forward(x, "silu", 2, 0.0, -1.0, 1.0, None, "stochastic", bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
def test_cuda_codes_equal_cpu(dtype):
    """On a GPU (tests/gpu/run_python.sh): the CUDA op writes the CPU's code bytes."""
    x = (torch.randn(100003, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    for act, bits in (("silu", 2), ("gelu", 1), ("gelu_tanh", 8)):
        args = (act, bits, 0.0, -1.0, 1.0, None, "stochastic", torch.tensor(12345))
        _, codes = torch.ops.unswag.act_forward(x, *args)
        _, ccodes = torch.ops.unswag.act_forward(x.cuda(), *args)
        assert torch.equal(ccodes.cpu(), codes)
