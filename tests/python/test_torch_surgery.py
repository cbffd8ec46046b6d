"""apply_unswag_surgery on tiny random-weight models of every supported family.

Bounds used here (see docs/torch.md, "How the tests bound the k-bit gradient"):

- exact modes (relu family, gated fused/recompute): loss relative error <= 1e-5 and every
  parameter gradient relative error (Frobenius) <= 1e-4: only the order of fp32 sums and
  the attention kernel (eager -> sdpa) change.  The relu-family torchvision models are
  compared bitwise (same kernels, same order).
- k-bit modes: two checks.  (1) The patched gradient equals, within the fp32 tolerance
  above, the gradient of an emulation that replaces f'(x) by the codebook q(x) in pure
  torch: the model computes exactly the design's approximation.  (2) Against the exact
  model, every parameter gradient's relative error is <= 2 * sum_l E_l, where
  E_l = ||dy_l * (q - f')(x_l)|| / ||dy_l * f'(x_l)|| is the relative error injected at
  activation site l in that very step (measured in the emulation).  First order, the
  gradient error is the sum of the site errors carried back through the (shared)
  backward Jacobians; the factor 2 covers their growth over the few layers of these models.
"""
import functools
import re
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import conftest as C
import unswag
import unswag.torch as ut
from unswag import apply_unswag_surgery, remove_unswag_surgery
from unswag._native import DEFAULT_BITS
from unswag.torch import surgery as S

FP32_LOSS, FP32_GRAD = 1e-5, 1e-4


def _pair(name):
    build, batch, kind, _ = C.MODELS[name]
    return build(), build(), batch, kind


def _compare(l0, g0, l1, g1, tol=FP32_GRAD):
    assert abs(l0.item() - l1.item()) <= FP32_LOSS * abs(l0.item()) + 1e-7
    assert g0.keys() == g1.keys()
    floor = C.grad_floor(g0)
    for k in g0:
        assert C.rel_err(g1[k], g0[k], floor) <= tol, k


@pytest.mark.parametrize("mode", ["fused", "recompute"])
@pytest.mark.parametrize("name", C.model_params({"gated"}))
def test_gated_models_exact(name, mode):
    ref, m, batch, _ = _pair(name)
    rep = apply_unswag_surgery(m, gated=mode, tile_tokens=5)
    assert rep.counts() and all(p.startswith("gated") for p in rep.counts())
    if m._supports_sdpa:
        assert "-> sdpa" in rep.attention and m.config._attn_implementation == "sdpa"
    else:  # e.g. Gemma2 (logit softcapping): left as it was, and said so
        assert rep.attention.startswith("unchanged") and "sdpa" in rep.attention
    _compare(*C.run_step(ref, batch), *C.run_step(m, batch))


@pytest.mark.parametrize("name", C.model_params({"exact"}))
def test_relu_family_models_bitwise(name):
    ref, m, batch, _ = _pair(name)
    rep = apply_unswag_surgery(m)
    assert all("exact 1 bit" in p for _, p in rep.patched)
    relus = [p for p, mod in ref.named_modules() if type(mod) is torch.nn.ReLU]
    # relu: torch keeps its output, and so does the next conv: a code saves nothing
    assert sorted(p for p, why in rep.left_alone if "would save nothing" in why) == sorted(relus)
    assert bool(rep.patched) == (name != "resnet18")
    l0, g0 = C.run_step(ref, batch)
    l1, g1 = C.run_step(m, batch)
    assert torch.equal(l0, l1)
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k


# ---- k-bit: emulation in pure torch ---------------------------------------------------

class _Emu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, orig, act, bits, sites):
        ctx.save_for_backward(x)
        ctx.cfg = (act, bits, sites)
        with torch.no_grad():
            return orig(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        act, bits, sites = ctx.cfg
        bnd, lev, _ = ut.codebook(act, bits)
        with torch.enable_grad():
            xd = x.detach().double().requires_grad_()
            ref = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
                   "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}[act]
            (fprime,) = torch.autograd.grad(ref(xd).sum(), xd)
        q = lev[torch.bucketize(x.float(), bnd)]
        dx = (dy.float() * q).to(dy.dtype)
        exact = dy.double() * fprime
        sites.append(((dx.double() - exact).norm() / exact.norm().clamp_min(1e-30)).item())
        return dx, None, None, None, None


class _EmuModule(torch.nn.Module):
    def __init__(self, orig, act, bits, sites):
        super().__init__()
        self.orig, self.act, self.bits, self.sites = orig, act, bits, sites

    def forward(self, x):
        return _Emu.apply(x, self.orig, self.act, self.bits, self.sites)


def _emulate(model, bits):
    sites = []
    for _, parent in list(model.named_modules()):
        for cname, child in list(parent.named_children()):
            cls = S._classify_activation(child)
            if cls is not None and cls[0] in ("silu", "gelu", "gelu_tanh"):
                setattr(parent, cname, _EmuModule(child, cls[0], bits, sites))
    return sites


@pytest.mark.parametrize("bits", [2, 8])
@pytest.mark.parametrize("name", C.model_params({"kbit"}))
def test_kbit_models_bounded(name, bits):
    build, batch, _, _ = C.MODELS[name]
    exact, emu, m = build(), build(), build()
    sites = _emulate(emu, bits)
    rep = apply_unswag_surgery(m, bits=bits, attention=None)
    assert any(f"{bits} bit" in p for _, p in rep.patched)
    l0, g0 = C.run_step(exact, batch)
    le, ge = C.run_step(emu, batch)
    l1, g1 = C.run_step(m, batch)
    # (1) the patched model computes the design's approximation
    _compare(le, ge, l1, g1, tol=1e-3 if bits == 2 else FP32_GRAD)
    # forward is exact
    assert abs(l0.item() - l1.item()) <= FP32_LOSS * abs(l0.item())
    # (2) bounded against the exact gradient
    assert sites
    bound = 2 * sum(sites)
    floor = C.grad_floor(g0)
    worst = max(C.rel_err(g1[k], g0[k], floor) for k in g0)
    assert worst <= bound, (worst, bound, sites)


# ---- bytes kept for backward ---------------------------------------------------------------

def _act_numels(model, batch):
    """numel of every call of each supported activation module (unpatched model)."""
    calls = []
    hooks = []
    for _, mod in model.named_modules():
        cls = S._classify_activation(mod)
        if cls is not None:
            hooks.append(mod.register_forward_hook(
                lambda mod, inp, out, a=cls[0]: calls.append((a, inp[0].numel(),
                                                               inp[0].element_size()))))
    torch.manual_seed(0)
    batch(model)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize("name", C.model_params())
@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_saved_bytes_shrink_as_predicted(name, mode):
    build, batch, kind, _ = C.MODELS[name]
    if kind != "gated" and mode == "recompute":
        pytest.skip("mode applies to gated models only")
    ref, m = build(), build()
    torch.manual_seed(0)
    b0, _ = C.activation_bytes(ref, lambda: batch(ref))
    if kind == "gated":
        cfg = ref.config
        T = 2 * C.SEQ
        per = {"fused": 2, "recompute": 4}[mode]  # of HF eager's 4 intermediate tensors
        predicted = cfg.num_hidden_layers * per * T * cfg.intermediate_size * 4
    else:
        predicted = 0
        for act, n, esz in _act_numels(build(), batch):
            if act == "relu":  # left alone: the next layer keeps its output anyway
                pass
            elif act in ("leaky_relu", "relu6", "hardtanh"):
                predicted += n * esz - (n + 7) // 8
            else:
                predicted += n * esz - (n * DEFAULT_BITS + 7) // 8
    apply_unswag_surgery(m, gated=mode, attention=None)
    torch.manual_seed(0)
    b1, _ = C.activation_bytes(m, lambda: batch(m))
    assert b0 - b1 >= predicted, (b0, b1, predicted)


def test_gated_mlp_level_bytes_exact():
    """One Llama MLP: eager keeps x, g, act(g), u, h; fused keeps x, g, u; recompute x."""
    build = C.MODELS["llama"][0]
    mlp = build().model.layers[0].mlp
    x = torch.randn(2, C.SEQ, 64, requires_grad=True)
    T, I, H = 2 * C.SEQ, 128, 64
    b0, _ = C.activation_bytes(mlp, lambda: mlp(x))
    assert b0 == (H + 4 * I) * T * 4
    for mode, n in (("fused", H + 2 * I), ("recompute", H)):
        apply_unswag_surgery(mlp, gated=mode)
        b1, _ = C.activation_bytes(mlp, lambda: mlp(x))
        assert b1 == n * T * 4, mode
        remove_unswag_surgery(mlp)


# ---- removal, idempotence, state ------------------------------------------------------------

@pytest.mark.parametrize("name", C.model_params())
def test_removal_restores_bitwise(name):
    build, batch, _, _ = C.MODELS[name]
    m = build()
    before_repr = repr(m)
    attn0 = getattr(getattr(m, "config", None), "_attn_implementation", None)
    l0, g0 = C.run_step(m, batch)
    sd0 = {k: (v.data_ptr(), v.clone()) for k, v in m.state_dict().items()}
    rep = apply_unswag_surgery(m)
    assert rep.patched or name == "resnet18"  # its relus save nothing: all left alone
    sd1 = m.state_dict()
    assert sd1.keys() == sd0.keys()
    for k, v in sd1.items():  # weights untouched: same storage, same values
        assert v.data_ptr() == sd0[k][0] and torch.equal(v, sd0[k][1]), k
    C.run_step(m, batch)
    assert remove_unswag_surgery(m) is True
    assert remove_unswag_surgery(m) is False
    assert repr(m) == before_repr
    assert getattr(getattr(m, "config", None), "_attn_implementation", None) == attn0
    l1, g1 = C.run_step(m, batch)
    assert torch.equal(l0, l1)
    for k in g0:
        assert torch.equal(g0[k], g1[k]), k


def test_idempotent_and_reapply_with_other_options():
    build, _batch, _, _ = C.MODELS["llama"]
    m = build()
    r1 = apply_unswag_surgery(m)
    fwd = m.model.layers[0].mlp.forward
    r2 = apply_unswag_surgery(m)
    assert r1 is r2 and m.model.layers[0].mlp.forward is fwd
    r3 = apply_unswag_surgery(m, gated="recompute")
    assert r3.counts() == {"gated silu recompute (tile 2048)": 2}
    remove_unswag_surgery(m)
    assert "forward" not in m.model.layers[0].mlp.__dict__
    assert m.config._attn_implementation == "eager"


def test_report_is_readable():
    m = C.MODELS["bert"][0]()
    text = str(apply_unswag_surgery(m))
    assert f"gelu {DEFAULT_BITS} bit" in text and "attention: eager -> sdpa" in text


class _LoraLike(torch.nn.Linear):
    """Stands in for peft / bitsandbytes Linear subclasses."""

    def forward(self, x):
        return super().forward(x) * 1.0


def test_lora_like_linear_left_alone_and_still_trains():
    build, batch, _, _ = C.MODELS["llama"]
    ref, m = build(), build()
    for model in (ref, m):
        mlp = model.model.layers[0].mlp
        old = mlp.gate_proj
        new = _LoraLike(old.in_features, old.out_features, bias=False)
        new.weight = old.weight
        mlp.gate_proj = new
    rep = apply_unswag_surgery(m)
    assert any("not a plain nn.Linear" in why for _, why in rep.left_alone)
    assert rep.counts() == {"gated silu fused": 1}
    _compare(*C.run_step(ref, batch), *C.run_step(m, batch))


def test_accelerate_style_hook_kept():
    build, batch, _, _ = C.MODELS["llama"]
    ref, m = build(), build()
    calls = []
    mlp = m.model.layers[0].mlp

    def new_forward(module, *args, **kwargs):  # what accelerate's add_hook_to_module installs
        calls.append(1)
        return module._old_forward(*args, **kwargs)

    mlp._hf_hook = object()
    mlp._old_forward = mlp.forward
    mlp.forward = functools.partial(new_forward, mlp)
    orig_old = mlp._old_forward
    apply_unswag_surgery(m)
    assert getattr(mlp._old_forward, "__unswag__", False)
    _compare(*C.run_step(ref, batch), *C.run_step(m, batch))
    assert calls
    remove_unswag_surgery(m)
    assert mlp._old_forward == orig_old and isinstance(mlp.forward, functools.partial)


@pytest.mark.skipif(not C.HAVE_TRANSFORMERS, reason="transformers not installed")
def test_seed_usage_with_gradient_checkpointing():
    build, batch, _, _ = C.MODELS["llama"]
    ref, model = build(), build()
    from unswag import apply_unswag_surgery as seed_entry
    seed_entry(model)
    # the call the README shows, as it shows it: no deprecation warning under the
    # installed transformers
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    call = re.search(r"model\.(\w+_checkpointing_enable)\(\)", readme).group(1)
    if not hasattr(model, call):  # an older transformers: the name the README gives for it
        call = re.search(r"older releases call it (\w+_checkpointing_enable)", readme).group(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        getattr(model, call)()
        getattr(ref, call)()
    _compare(*C.run_step(ref, batch), *C.run_step(model, batch))


def test_import_is_lazy_entry():
    assert unswag.apply_unswag_surgery is S.apply_unswag_surgery
