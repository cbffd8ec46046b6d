"""The torch layer on a CUDA device: the CUDA path of every op against the CPU path (bit
for bit, all 65,536 inputs of each 16-bit dtype), gradients against torch's own, the gated
MLP and a patched Llama against eager, opcheck, torch.compile, streams and bad input.

Skipped without a CUDA device (CI); run on the lent GPU by bench/gpu/run_torch_jax.sh.
"""
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

import conftest as C
import unswag.torch as ut
from unswag import _native as N

if not N.cuda_built():
    pytest.skip("libunswag built without CUDA", allow_module_level=True)

F = torch.nn.functional
CASES = [("relu", 1), ("leaky_relu", 1), ("relu6", 1), ("hardtanh", 1)] + [
    (a, b) for a in ("silu", "gelu", "gelu_tanh") for b in (1, 2, 4, 8)]
PARAMS = (0.2, -0.5, 2.0)  # slope, lo, hi


def _bits_of(t):
    return t.view({2: torch.int16, 4: torch.int32}[t.element_size()])


def _all16(dtype):
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)


def _fwd_bwd(x, dy, act, bits):
    y, c = torch.ops.unswag.act_forward(x, act, bits, *PARAMS)
    dx = torch.ops.unswag.act_backward(dy, c, act, bits, *PARAMS)
    return y, c, dx


@pytest.mark.parametrize("act,bits", CASES, ids=[f"{a}-{b}" for a, b in CASES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_cuda_bytes_equal_cpu(act, bits, dtype):
    """y, codes and dx of the CUDA kernels equal the CPU kernels' bytes: every 16-bit
    pattern for fp16/bf16, 2^20 random values plus specials for fp32."""
    if dtype == torch.float32:
        g = torch.Generator().manual_seed(3)
        x = torch.randn(1 << 20, generator=g) * 4
        x[:6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 6.0])
    else:
        x = _all16(dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    cpu = _fwd_bwd(x, dy, act, bits)
    gpu = _fwd_bwd(x.cuda(), dy.cuda(), act, bits)
    assert torch.equal(_bits_of(gpu[0].cpu()), _bits_of(cpu[0])), "forward"
    assert torch.equal(gpu[1].cpu(), cpu[1]), "codes"
    assert torch.equal(_bits_of(gpu[2].cpu()), _bits_of(cpu[2])), "backward"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["relu", "leaky_relu", "relu6", "hardtanh"])
def test_exact_family_grad_equals_torch_on_cuda(name, dtype):
    ours = {"relu": ut.relu, "leaky_relu": lambda t: ut.leaky_relu(t, 0.2), "relu6": ut.relu6,
            "hardtanh": lambda t: ut.hardtanh(t, -0.5, 2.0)}[name]
    ref = {"relu": torch.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.2), "relu6": F.relu6,
           "hardtanh": lambda t: F.hardtanh(t, -0.5, 2.0)}[name]
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(3, 1000, 257, device="cuda", generator=g) * 4).to(dtype)
    x.view(-1)[:5] = torch.tensor([0.0, -0.0, 6.0, -0.5, 2.0])  # kinks: torch's convention
    dy = torch.randn(x.shape, device="cuda", generator=g).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad)


@pytest.mark.parametrize("act,ref", [("silu", F.silu), ("gelu", F.gelu)])
def test_kbit_grad_within_codebook_bound_on_cuda(act, ref):
    """||dx - dy*f'(x)|| / ||dy|| on N(0,1) inputs is close to the codebook's RMS error."""
    x = torch.randn(1 << 20, device="cuda")
    dy = torch.randn_like(x)
    for bits in (1, 2, 4, 8):
        xa = x.clone().requires_grad_()
        xb = x.clone().requires_grad_()
        getattr(ut, act)(xa, bits=bits).backward(dy)
        ref(xb).backward(dy)
        err = ((xa.grad - xb.grad).norm() / dy.norm()).item()
        rms = ut.codebook(act, bits)[2]
        assert 0.8 * rms <= err <= 1.2 * rms, (bits, err, rms)


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gated_kernels_equal_cpu(act, dtype):
    g = torch.randn(4097, generator=torch.Generator().manual_seed(5)).to(dtype) * 3
    u = torch.randn(4097, generator=torch.Generator().manual_seed(6)).to(dtype)
    dh = torch.randn(4097, generator=torch.Generator().manual_seed(7)).to(dtype)
    h = torch.ops.unswag.gated_forward(g, u, act)
    dg, du = torch.ops.unswag.gated_backward(dh, g, u, act)
    hc = torch.ops.unswag.gated_forward(g.cuda(), u.cuda(), act)
    dgc, duc = torch.ops.unswag.gated_backward(dh.cuda(), g.cuda(), u.cuda(), act)
    for a, b in ((hc, h), (dgc, dg), (duc, du)):
        assert torch.equal(_bits_of(a.cpu()), _bits_of(b))


def _mlp(bias, dtype, H=64, I=176):
    torch.manual_seed(0)
    return [torch.nn.Linear(H, I, bias=bias).to("cuda", dtype),
            torch.nn.Linear(H, I, bias=bias).to("cuda", dtype),
            torch.nn.Linear(I, H, bias=bias).to("cuda", dtype)]


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("mode,tile", [("fused", 2048), ("recompute", 37)])
def test_gated_mlp_exact_on_cuda(act, mode, tile):
    ACT = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}
    lins = _mlp(True, torch.float32)
    x = torch.randn(2, 300, 64, device="cuda", requires_grad=True)
    params = [x] + [p for lin in lins for p in lin.parameters()]
    y0 = lins[2](ACT[act](lins[0](x)) * lins[1](x))
    dy = torch.randn_like(y0)
    g0 = torch.autograd.grad(y0, params, dy)
    y1 = ut.gated_mlp(x, *lins, act=act, mode=mode, tile_tokens=tile)
    g1 = torch.autograd.grad(y1, params, dy)
    assert C.rel_err(y1, y0) <= 1e-6
    for a, b in zip(g1, g0):
        assert C.rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_gated_mlp_bf16_autocast_on_cuda(mode):
    lins = _mlp(False, torch.float32)
    x = torch.randn(2, 100, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = ut.gated_mlp(x, *lins, mode=mode, tile_tokens=64)
        y_ref = lins[2](F.silu(lins[0](x)) * lins[1](x))
    assert y.dtype == torch.bfloat16
    assert C.rel_err(y.float(), y_ref.float()) <= 2 ** -6
    y.float().sum().backward()
    assert lins[0].weight.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_opcheck_on_cuda():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(37, 3, device="cuda").to(dtype).requires_grad_()
        for act, bits in (("relu", 1), ("silu", 2), ("gelu", 8)):
            torch.library.opcheck(torch.ops.unswag.act_forward, (x, act, bits, 0.1, -1.0, 1.0))
            codes = torch.ops.unswag.act_forward(x.detach(), act, bits, 0.1, -1.0, 1.0)[1]
            torch.library.opcheck(torch.ops.unswag.act_backward,
                                  (torch.randn_like(x.detach()), codes, act, bits, 0.1, -1.0,
                                   1.0))
        g = torch.randn(5, 7, device="cuda").to(dtype).requires_grad_()
        u = torch.randn(5, 7, device="cuda").to(dtype).requires_grad_()
        torch.library.opcheck(torch.ops.unswag.gated_forward, (g, u, "silu"))
        torch.library.opcheck(torch.ops.unswag.gated_backward,
                              (torch.randn_like(g.detach()), g.detach(), u.detach(), "silu"))


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Linear(16, 32)
        self.g, self.u, self.d = (torch.nn.Linear(32, 48), torch.nn.Linear(32, 48),
                                  torch.nn.Linear(48, 32))
        self.out = torch.nn.Linear(32, 4)
        self.act = ut.GELU(bits=2)

    def forward(self, x):
        h = self.act(self.inp(x))
        h = ut.relu(h) + ut.silu(h, bits=4)
        h = h + ut.gated_mlp(h, self.g, self.u, self.d, mode="recompute", tile_tokens=5)
        return self.out(h).square().mean()


def test_compile_inductor_matches_eager_on_cuda():
    x = torch.randn(3, 7, 16, device="cuda")
    eager, comp = _Small().cuda(), _Small().cuda()
    l0, g0 = C.run_step(eager, lambda m: m(x))
    l1, g1 = C.run_step(torch.compile(comp, backend="inductor", fullgraph=True), lambda m: m(x))
    assert torch.allclose(l0, l1, rtol=1e-5, atol=0)
    for k in g0:
        kk = k if k in g1 else f"_orig_mod.{k}"
        assert C.rel_err(g1[kk], g0[k]) <= 1e-5, k


def test_llama_surgery_on_cuda_exact_and_removable():
    pytest.importorskip("transformers")
    from unswag import apply_unswag_surgery, remove_unswag_surgery
    build, _batch, _, _ = C.MODELS["llama"]

    def lm_batch(m):
        g = torch.Generator(device="cuda").manual_seed(1)
        ids = torch.randint(0, C.VOCAB, (2, C.SEQ), generator=g, device="cuda")
        return m(input_ids=ids, labels=ids).loss

    ref = build().cuda()
    l0, g0 = C.run_step(ref, lm_batch)
    with torch.no_grad():
        out0 = ref(input_ids=torch.arange(C.SEQ, device="cuda")[None]).logits
    for mode in ("fused", "recompute"):
        m = build().cuda()
        apply_unswag_surgery(m, gated=mode, tile_tokens=5)
        l1, g1 = C.run_step(m, lm_batch)
        assert C.rel_err(l1, l0) <= 1e-5
        floor = C.grad_floor(g0)
        for k in g0:
            assert C.rel_err(g1[k], g0[k], floor) <= 1e-4, (mode, k)
        remove_unswag_surgery(m)
        with torch.no_grad():
            out1 = m(input_ids=torch.arange(C.SEQ, device="cuda")[None]).logits
        assert torch.equal(out1, out0)


def test_streams_devices_and_layouts():
    x = torch.randn(64, 33, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # the op runs on the current (side) stream
        y = ut.silu(x, bits=4)
    s.synchronize()
    # exact forward: within the library's 1-ulp contract of torch's own kernel
    torch.testing.assert_close(y, F.silu(x), rtol=1e-6, atol=1e-30)
    xt = x.t()  # non-contiguous: a correct result
    assert not xt.is_contiguous()
    xa = xt.clone().requires_grad_()
    xb = xt.clone().requires_grad_()
    ut.relu(xa).sum().backward()
    torch.relu(xb).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    _, codes = torch.ops.unswag.act_forward(x, "relu", 1, 0.0, -1.0, 1.0)
    with pytest.raises((ValueError, RuntimeError), match="device"):
        torch.ops.unswag.act_backward(x.cpu(), codes, "relu", 1, 0.0, -1.0, 1.0)
    with pytest.raises(TypeError, match="unsupported dtype"):
        ut.relu(x.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunked_lm_loss_on_cuda(dtype):
    from unswag.torch.lm_loss import linear_cross_entropy
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(3000, 256, device="cuda", generator=g).to(dtype).requires_grad_()
    w = (torch.randn(32000, 256, device="cuda", generator=g) / 16).to(dtype).requires_grad_()
    t = torch.randint(0, 32000, (3000,), device="cuda", generator=g)
    t[::7] = -100
    ref = F.cross_entropy(F.linear(h, w).float(), t)
    g0 = torch.autograd.grad(ref, [h, w])
    loss = linear_cross_entropy(h, w, t, chunk_tokens=1024)
    g1 = torch.autograd.grad(loss, [h, w])
    tol = 1e-5 if dtype == torch.float32 else 4 * 2 ** -7
    assert abs(loss.item() - ref.item()) <= (1e-6 if dtype == torch.float32 else 1e-4) * ref.item()
    for a, r in zip(g1, g0):
        assert a.dtype == dtype and C.rel_err(a, r) <= tol


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_calibrated_codebook_equals_cpu(dtype, bits):
    """A codebook calibrated on CUDA inputs is the one calibrated on the same inputs on the
    CPU (exact histogram, deterministic fit), and with it the CUDA kernels give the CPU's
    codes and dx bytes on every 16-bit input."""
    from unswag.torch import calibration as CAL
    g = torch.Generator().manual_seed(bits)
    sample = (torch.randn(1 << 20, generator=g) * 0.7 + 0.2).to(dtype)
    sample[:3] = torch.tensor([float("nan"), float("inf"), 40.0])
    h_cpu, h_gpu = CAL.histogram(sample), CAL.histogram(sample.cuda())
    assert torch.equal(h_gpu.cpu(), h_cpu)
    book = CAL.fit("gelu", bits, h_gpu.cpu())
    assert book == CAL.fit("gelu", bits, h_cpu)
    x = _all16(dtype)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    outs = []
    for dev in ("cpu", "cuda"):
        y, c = torch.ops.unswag.act_forward(x.to(dev), "gelu", bits, *PARAMS, book)
        dx = torch.ops.unswag.act_backward(dy.to(dev), c, "gelu", bits, *PARAMS, book)
        outs.append((y.cpu(), c.cpu(), dx.cpu()))
    assert torch.equal(_bits_of(outs[1][0]), _bits_of(outs[0][0])), "forward"
    assert torch.equal(outs[1][1], outs[0][1]), "codes"
    assert torch.equal(_bits_of(outs[1][2]), _bits_of(outs[0][2])), "backward"


def test_cuda_surgery_calibrates_under_deterministic_algorithms():
    """The automatic calibration runs on CUDA with torch.use_deterministic_algorithms(True)
    (bucketize/bincount only: no op torch flags as nondeterministic), as the convergence
    benchmark needs."""
    from unswag import apply_unswag_surgery
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.SiLU(),
                            torch.nn.Linear(64, 4)).cuda()
    rep = apply_unswag_surgery(m, bits=2, calibrate=2, recalibrate_every=4)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(3):
            m(torch.randn(32, 16, device="cuda")).sum().backward()
    finally:
        torch.use_deterministic_algorithms(prev)
    assert "codebook: calibrated silu, 2 bit" in str(rep)
