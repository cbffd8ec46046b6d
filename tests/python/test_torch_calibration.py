"""Custom and calibrated codebooks in the torch layer (issue 11): the ops with a codebook
against a pure-torch emulation (bit for bit), the histogram against a direct count, the fit
against the built-in tables, the modules' calibration windows, the surgery's options and
report, and calibrate_codebooks."""
import math

import pytest

torch = pytest.importorskip("torch")

import unswag.torch as ut
from unswag import _native as N
from unswag import apply_unswag_surgery, remove_unswag_surgery
from unswag.torch import calibration as C
from unswag.torch.modules import SmoothAct

PARAMS = (0.0, -1.0, 1.0)  # slope, lo, hi: unused by smooth activations


def _book(bits, seed=0):
    """A valid custom codebook unlike the built-in one: random sorted boundaries,
    random levels."""
    g = torch.Generator().manual_seed(seed)
    m = 1 << bits
    b = torch.sort(torch.randn(m - 1, generator=g) * 2)[0]
    b = torch.unique(b)  # strictly increasing
    assert b.numel() == m - 1
    lv = torch.rand(m, generator=g) * 1.5 - 0.2
    return b.tolist() + lv.tolist()


def _emulate(x, dy, bits, book):
    m = 1 << bits
    b = torch.tensor(book[: m - 1], dtype=torch.float32)
    lv = torch.tensor(book[m - 1:], dtype=torch.float32)
    xf = x.float()
    code = torch.bucketize(xf, b, right=False)  # number of boundaries strictly below x
    code = torch.where(torch.isnan(xf), torch.zeros_like(code), code)
    return (dy.float() * lv[code]).to(dy.dtype)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
def test_custom_codebook_backward_is_dy_times_level(act, dtype, bits):
    book = _book(bits, seed=bits)
    if dtype == torch.float32:
        x = torch.randn(1 << 14, generator=torch.Generator().manual_seed(1)) * 3
    else:  # every 16-bit input
        x = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    y, codes = torch.ops.unswag.act_forward(x, act, bits, *PARAMS, book)
    y0, codes0 = torch.ops.unswag.act_forward(x, act, bits, *PARAMS)
    assert torch.equal(y.view(torch.uint8), y0.view(torch.uint8)), "forward is the codebook's"
    assert not torch.equal(codes, codes0), "the custom boundaries were not used"
    dx = torch.ops.unswag.act_backward(dy, codes, act, bits, *PARAMS, book)
    ref = _emulate(x, dy, bits, book)
    assert torch.equal(dx.view(torch.uint8), ref.view(torch.uint8))


def test_codebook_through_autograd_and_module():
    book = _book(2, seed=5)
    x = (torch.randn(64, 33, generator=torch.Generator().manual_seed(3)) * 2).requires_grad_()
    dy = torch.randn(64, 33, generator=torch.Generator().manual_seed(4))
    ut.gelu(x, bits=2, codebook=book).backward(dy)
    assert torch.equal(x.grad, _emulate(x.detach(), dy, 2, book))
    m = ut.SiLU(bits=2, codebook=book)
    x2 = x.detach().clone().requires_grad_()
    m(x2).backward(dy)
    assert torch.equal(x2.grad, _emulate(x2.detach(), dy, 2, book))
    assert "codebook=custom" in repr(m)


def test_opcheck_with_codebook():
    book = _book(4, seed=7)
    x = torch.randn(5, 37, requires_grad=True)
    torch.library.opcheck(torch.ops.unswag.act_forward, (x, "silu", 4, *PARAMS, book))
    codes = torch.ops.unswag.act_forward(x.detach(), "silu", 4, *PARAMS, book)[1]
    torch.library.opcheck(torch.ops.unswag.act_backward,
                          (torch.randn(5, 37), codes, "silu", 4, *PARAMS, book))


def test_bad_codebooks_are_refused():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="3 boundaries and 4 levels"):
        torch.ops.unswag.act_forward(x, "silu", 2, *PARAMS, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="exact"):
        torch.ops.unswag.act_forward(x, "relu", 1, *PARAMS, [0.0, 0.0, 1.0])
    with pytest.raises(N.UnswagError, match="BAD_CODEBOOK"):  # boundaries not increasing
        torch.ops.unswag.act_forward(x, "silu", 2, *PARAMS, [1.0, 0.0, 2.0, 0, 0.5, 1, 1])
    with pytest.raises(N.UnswagError, match="BAD_CODEBOOK"):
        torch.ops.unswag.act_forward(x, "gelu", 1, *PARAMS, [0.0, float("nan"), 1.0])


# ---------------------------------------------------------------- histogram and fit

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_histogram_counts_every_input_in_its_bin(dtype):
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0)) * 6
    x[:9] = torch.tensor([float("nan"), float("inf"), -float("inf"), 100.0, -100.0, 16.0,
                          -1e-30, 1e-30, -15.999999])  # tiny negatives: the bin below 0
    x = x.to(dtype)
    h = C.histogram(x.view(100, 500))
    assert h.dtype == torch.int64 and h.shape == (C.HIST_BINS,) and int(h.sum()) == x.numel()
    # direct count, one element at a time, exact: v * 128 is exact in double
    per_unit = C.HIST_BINS / (2 * C.HIST_RANGE)
    ref = [0] * C.HIST_BINS
    for v in x.double().tolist():
        if v != v or v <= -C.HIST_RANGE:
            j = 0
        elif v >= C.HIST_RANGE:
            j = C.HIST_BINS - 1
        else:
            j = math.floor(v * per_unit) + C.HIST_BINS // 2
        ref[j] += 1
    ref = torch.tensor(ref)
    assert torch.equal(h, ref)


@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_fit_on_normal_samples_matches_the_builtin(act, bits):
    """A histogram of N(0,1) samples is (nearly) the built-in tables' weighting."""
    x = torch.randn(2_000_000, generator=torch.Generator().manual_seed(1))
    book = C.fit(act, bits, C.histogram(x))
    b0, l0, _ = ut.codebook(act, bits)
    m = 1 << bits
    assert len(book) == 2 * m - 1
    assert max(abs(a - b) for a, b in zip(book[: m - 1], b0.tolist())) < 0.03
    assert max(abs(a - b) for a, b in zip(book[m - 1:], l0.tolist())) < 0.01


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_calibrated_beats_builtin_on_narrow_inputs(act, bits):
    """Inputs like an initialised transformer's (std 0.3): the fit to them has a smaller
    error there than the built-in table, and the built-in keeps its N(0,1) optimality."""
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(2)) * 0.3
    h = C.histogram(x)
    book = C.fit(act, bits, h)
    mine, builtin = C.rms_under(act, bits, book, h), C.rms_under(act, bits, None, h)
    assert mine < 0.75 * builtin  # measured 0.40-0.71 over these cases
    hn = C.histogram(torch.randn(200_000, generator=torch.Generator().manual_seed(3)))
    assert C.rms_under(act, bits, None, hn) <= C.rms_under(act, bits, book, hn)


def test_fit_refuses_bad_input():
    with pytest.raises(N.UnswagError, match="BAD_PARAM"):
        N.fit_codebook_histogram("silu", 2, [0.0] * 16, -1, 1)
    with pytest.raises(N.UnswagError, match="BAD_PARAM"):
        N.fit_codebook_histogram("silu", 2, [1.0] * 16, 1, -1)
    with pytest.raises(ValueError, match="smooth"):
        N.fit_codebook_histogram("relu", 1, [1.0] * 16, -1, 1)


# ---------------------------------------------------------------- calibration windows

def _inputs(n, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 64, generator=g) * scale * (i + 1) for i in range(n)]


def test_module_fits_after_its_first_calls_only():
    xs = _inputs(4)
    m = ut.SiLU(bits=2)
    m.start_calibration(2, train_only=True)
    m(xs[0])
    assert m.codebook is None
    with torch.no_grad():  # not a training call: neither counted nor recorded
        m(xs[3])
    m.eval()
    m(xs[3])
    m.train()
    assert m.codebook is None
    m(xs[1])
    want = C.fit("silu", 2, C.histogram(xs[0]) + C.histogram(xs[1]))
    assert m.codebook == want
    m(xs[2])  # after the window: nothing changes
    assert m.codebook == want and m.calibration.finished()
    assert "calibrated silu, 2 bit" in m.codebook_text()
    assert "over 2 calls" in m.codebook_text()


def test_module_refits_every_k_calls():
    xs = _inputs(7, seed=1)
    m = ut.GELU(bits=1)
    m.start_calibration(2, every=3)
    for x in xs:
        m(x)
    # windows: calls 0-1, 3-4, 6-7 (the last one open after 7 calls)
    assert m.codebook == C.fit("gelu", 1, C.histogram(xs[3]) + C.histogram(xs[4]))
    assert m.calibration.fits == 2
    assert "refitted every 3 calls (2 fits so far)" in m.codebook_text()


def test_calibration_windows_are_checked_and_empty_inputs_ignored():
    m = ut.SiLU(bits=2)
    for calls, every in ((0, None), (2, 2), (None, 5), (True, None), (1.5, None)):
        with pytest.raises(ValueError):
            m.start_calibration(calls, every)
    m.start_calibration(1)
    m(torch.empty(0, 8))  # counted as a call, adds nothing: no fit on an empty histogram
    assert m.codebook is None and m.calibration.finished()


def test_gradient_uses_the_calibrated_codebook():
    xs = _inputs(2, seed=2)
    m = ut.SiLU(bits=2)
    m.start_calibration(1)
    m(xs[0])
    x = xs[1].clone().requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    m(x).backward(dy)
    assert torch.equal(x.grad, _emulate(x.detach(), dy, 2, m.codebook))


# ---------------------------------------------------------------- surgery and the report

def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                               torch.nn.SiLU(), torch.nn.Linear(64, 4))


def test_surgery_calibrate_option_and_report():
    model = _mlp()
    report = apply_unswag_surgery(model, bits=2, calibrate=2, recalibrate_every=5)
    before = str(report)
    assert before.count("codebook: built-in") == 2
    assert "calibrated per layer after its first 2 training calls" in before
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(x).sum().backward()
    after = str(report)
    for path, name in (("1", "gelu"), ("3", "silu")):
        line = next(ln for ln in after.splitlines() if ln.strip().startswith(f"{path}:"))
        assert f"codebook: calibrated {name}, 2 bit (4 levels" in line
        assert "refitted every 5 training calls (1 fits so far)" in line
    assert isinstance(model[1], SmoothAct) and model[1].codebook is not None
    assert remove_unswag_surgery(model)
    assert type(model[1]) is torch.nn.GELU and type(model[3]) is torch.nn.SiLU


def test_surgery_report_names_kind_and_bits_without_calibration():
    report = apply_unswag_surgery(_mlp(), bits=4)
    lines = [ln for ln in str(report).splitlines() if "codebook:" in ln]
    assert len(lines) == 2
    assert all("built-in" in ln and "4 bit (16 levels" in ln for ln in lines)


@pytest.mark.parametrize("kw,exc", [
    (dict(calibrate=0), ValueError), (dict(calibrate=True), TypeError),
    (dict(calibrate=2.0), TypeError), (dict(recalibrate_every=10), ValueError),
    (dict(calibrate=10, recalibrate_every=10), ValueError),
])
def test_surgery_calibration_arguments_are_checked(kw, exc):
    with pytest.raises(exc):
        apply_unswag_surgery(_mlp(), **kw)


def test_calibrate_codebooks_fits_on_the_batches():
    model = _mlp()
    apply_unswag_surgery(model, bits=2)
    batches = [torch.randn(16, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    want = C.histogram(torch.nn.functional.linear(torch.cat(batches), model[0].weight,
                                                  model[0].bias))
    out = C.calibrate_codebooks(model, batches, forward=lambda m, b: m(b))
    assert set(out) == {"1", "3"}
    assert model[1].codebook == C.fit("gelu", 2, want)
    assert "over 2 calls" in out["1"]
    model(batches[0])  # closed: later calls change nothing
    assert model[1].codebook == C.fit("gelu", 2, want)
    with pytest.raises(ValueError, match="apply_unswag_surgery"):
        C.calibrate_codebooks(_mlp(), batches)


def test_compiled_module_with_calibrated_codebook_matches_eager():
    """After calibration the module compiles with fullgraph=True (the codebook is a
    constant list of floats) and gives eager's gradient bit for bit."""
    m = ut.GELU(bits=4)
    m.start_calibration(1)
    m(_inputs(1, seed=4)[0])
    assert m.codebook is not None and m.calibration.finished()
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(5))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    m(xa).square().sum().backward()
    torch.compile(m, backend="aot_eager", fullgraph=True)(xb).square().sum().backward()
    assert torch.equal(xa.grad, xb.grad)
