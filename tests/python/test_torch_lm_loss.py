"""Chunked linear + cross-entropy (lm_loss="chunked"): eager's loss and gradients,
without a (tokens x vocab) tensor kept for backward."""
import pytest

torch = pytest.importorskip("torch")
import conftest as C
from unswag import apply_unswag_surgery, remove_unswag_surgery
from unswag.torch.lm_loss import causal_lm_loss, linear_cross_entropy

F = torch.nn.functional


def _data(N=37, H=24, V=101, dtype=torch.float32, bias=False):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, H, generator=g).to(dtype).requires_grad_()
    w = (torch.randn(V, H, generator=g) / H ** 0.5).to(dtype).requires_grad_()
    b = torch.randn(V, generator=g).to(dtype).requires_grad_() if bias else None
    t = torch.randint(0, V, (N,), generator=g)
    t[::5] = -100
    return h, w, b, t


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
@pytest.mark.parametrize("bias", [False, True])
def test_equals_eager_fp32(chunk, bias):
    h, w, b, t = _data(bias=bias)
    params = [h, w] + ([b] if bias else [])
    ref = F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=-100)
    g0 = torch.autograd.grad(ref, params)
    loss = linear_cross_entropy(h, w, t, b, chunk_tokens=chunk)
    g1 = torch.autograd.grad(loss * 3.0, params)  # a non-unit upstream gradient
    assert abs(loss.item() - ref.item()) <= 1e-6 * abs(ref.item())
    for a, r in zip(g1, g0):
        assert C.rel_err(a, 3.0 * r) <= 1e-6


def test_sum_over_denominator_and_all_ignored():
    h, w, _, t = _data()
    ref = F.cross_entropy(F.linear(h, w), t, ignore_index=-100, reduction="sum") / 50.0
    assert torch.allclose(linear_cross_entropy(h, w, t, denom=50.0, chunk_tokens=7), ref,
                          rtol=1e-6, atol=0)
    loss = linear_cross_entropy(h, w, torch.full_like(t, -100))
    assert torch.isnan(loss)  # 0 / 0, as F.cross_entropy gives


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_close_to_eager(dtype):
    h, w, _, t = _data(dtype=dtype)
    ref = F.cross_entropy(F.linear(h, w).float(), t)
    g0 = torch.autograd.grad(ref, [h, w])
    loss = linear_cross_entropy(h, w, t, chunk_tokens=8)
    g1 = torch.autograd.grad(loss, [h, w])
    eps = {torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
    assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item())  # same fp32 math
    assert g1[0].dtype == dtype and g1[1].dtype == dtype
    for a, r in zip(g1, g0):
        assert C.rel_err(a, r) <= 4 * eps


def test_no_grad_and_frozen_weight():
    h, w, _, t = _data()
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, t)
    assert not loss.requires_grad
    w.requires_grad_(False)
    loss = linear_cross_entropy(h, w, t, chunk_tokens=5)
    (gh,) = torch.autograd.grad(loss, [h])
    ref = torch.autograd.grad(F.cross_entropy(F.linear(h, w), t), [h])[0]
    assert C.rel_err(gh, ref) <= 1e-6


def test_keeps_no_logits():
    """Saved for backward: d hidden and d weight (and nothing of size tokens x vocab)."""
    N, H, V = 64, 16, 512
    h, w, _, t = _data(N, H, V)
    seen, _ = C.saved_bytes(lambda: linear_cross_entropy(h, w, t, chunk_tokens=16))
    kept = sum(seen.values())
    assert kept <= 4 * (N * H + V * H) + 4096, kept
    seen_ref, _ = C.saved_bytes(lambda: F.cross_entropy(F.linear(h, w), t))
    assert sum(seen_ref.values()) >= 4 * N * V


def test_causal_shift_matches_hf_loss():
    g = torch.Generator().manual_seed(1)
    hid = torch.randn(2, 9, 24, generator=g, requires_grad=True)
    w = torch.randn(50, 24, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (2, 9), generator=g)
    labels[0, :3] = -100
    logits = F.linear(hid, w).float()
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1))
    got = causal_lm_loss(hid, w, labels, chunk_tokens=4)
    assert torch.allclose(got, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", [p for p in C.model_params({"gated"}) if p.id != "gemma2"]
                         + [p for p in C.model_params() if p.id == "gpt2"])
def test_models_equal_unpatched(name):
    build, batch, _, _ = C.MODELS[name]
    ref, m = build(), build()
    rep = apply_unswag_surgery(m, lm_loss="chunked", tile_tokens=5, gated=None,
                               activations=False, attention=None)
    assert any("lm loss chunked" in proto for _, proto in rep.patched), str(rep)
    l0, g0 = C.run_step(ref, batch)
    l1, g1 = C.run_step(m, batch)
    assert abs(l1.item() - l0.item()) <= 1e-5 * abs(l0.item())
    floor = C.grad_floor(g0)
    assert g0.keys() == g1.keys()
    for k in g0:
        assert C.rel_err(g1[k], g0[k], floor) <= 1e-4, k
    ids = torch.arange(C.SEQ)[None] % C.VOCAB
    out = m(input_ids=ids, labels=ids)
    assert out.logits is None and out.loss is not None
    with torch.no_grad():  # without labels: the logits, as before
        assert torch.equal(m(input_ids=ids).logits, ref(input_ids=ids).logits)
        assert torch.equal(m(ids).logits, ref(ids).logits)
    assert remove_unswag_surgery(m)
    assert m(input_ids=ids, labels=ids).logits is not None


def test_softcapped_model_left_alone_and_default_off():
    build, _batch, _, _ = C.MODELS["gemma2"]
    m = build()
    rep = apply_unswag_surgery(m, lm_loss="chunked")
    assert any("softcapping" in why for _, why in rep.left_alone), str(rep)
    m2 = C.MODELS["llama"][0]()
    rep2 = apply_unswag_surgery(m2)
    assert not any("lm loss" in proto for _, proto in rep2.patched)
    with pytest.raises(ValueError, match="lm_loss"):
        apply_unswag_surgery(C.MODELS["llama"][0](), lm_loss="fused")


def test_with_gated_recompute_and_checkpointing():
    build, batch, _, _ = C.MODELS["llama"]
    ref, m = build(), build()
    apply_unswag_surgery(m, lm_loss="chunked", gated="recompute", tile_tokens=7)
    C.checkpointing_enable(m, {"use_reentrant": False})
    l0, g0 = C.run_step(ref, batch)
    l1, g1 = C.run_step(m, batch)
    assert abs(l1.item() - l0.item()) <= 1e-5 * abs(l0.item())
    floor = C.grad_floor(g0)
    for k in g0:
        assert C.rel_err(g1[k], g0[k], floor) <= 1e-4, k
