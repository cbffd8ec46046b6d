"""The long-context mode against the unpatched model: loss and every parameter
gradient in fp32 on tiny random models of each supported family, several chunks per
sequence; chunked attention against full causal attention; the errors it promises."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from unswag import apply_unswag_surgery, remove_unswag_surgery
from unswag.torch.long_context import (
    LongContextConfig,
    UnsupportedModelError,
    host_store,
    make_forward,
)
from unswag.torch.long_context import attention as A

VOCAB = 101
COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256)
FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]


def tiny(kind, **over):
    kw = dict(COMMON, **over)
    cfg = {"llama": lambda: T.LlamaConfig(**kw),
           "mistral": lambda: T.MistralConfig(**dict(dict(sliding_window=None), **kw)),
           "qwen2": lambda: T.Qwen2Config(**kw),
           "qwen3": lambda: T.Qwen3Config(**dict(dict(head_dim=16), **kw))}[kind]()
    torch.manual_seed(0)
    m = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float()
    with torch.no_grad():
        for p in m.parameters():  # far from the init's symmetric values
            p.normal_(0, 0.2)
    return m.train()


def step(model, ids, labels, **kw):
    model.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels, **kw).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


def assert_same(ref, got, tol=1e-5):
    (l0, g0), (l1, g1) = ref, got
    assert abs(float(l0) - float(l1)) <= tol * abs(float(l0))
    assert g0.keys() == g1.keys()
    for n in g0:
        err = ((g1[n] - g0[n]).norm() / g0[n].norm()).item()
        assert err <= tol, f"{n}: relative gradient error {err:.2e}"


def batch(B=2, L=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (B, L), generator=g)
    labels = ids.clone()
    labels[0, 5] = -100  # an ignored target
    return ids, labels


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("keep", [True, False])
def test_matches_unpatched(kind, keep):
    m = tiny(kind)
    ref = step(copy.deepcopy(m), *batch())
    m.forward = make_forward(m, m.forward,
                             LongContextConfig(chunk_tokens=8, loss_chunk_tokens=5,
                                               keep_attention=keep))
    assert_same(ref, step(m, *batch()))


@pytest.mark.parametrize("kind", FAMILIES)
def test_unswag_rmsnorm_kernel_matches_unpatched(kind):
    m = tiny(kind)
    ref = step(copy.deepcopy(m), *batch())
    m.forward = make_forward(m, m.forward, LongContextConfig(chunk_tokens=8, norm="unswag"))
    from unswag.torch.long_context import inspect_model
    from unswag.torch.long_context.model import UnswagRMSNorm
    parts = inspect_model(m, "unswag")
    assert isinstance(parts.final_norm, UnswagRMSNorm)
    assert isinstance(parts.layers[0].norm1, UnswagRMSNorm)
    assert (parts.layers[0].q_norm is not None) == (kind == "qwen3")
    assert_same(ref, step(m, *batch()))


def test_through_surgery_and_back():
    m = tiny("llama")
    base = copy.deepcopy(m)
    ref = step(base, *batch())
    rep = apply_unswag_surgery(m, gated=None, long_context=LongContextConfig(chunk_tokens=16))
    assert any("long-context mode" in proto for _, proto in rep.patched)
    assert "long-context" in str(rep)
    out = m(input_ids=batch()[0], labels=batch()[1])
    assert out.logits is None
    assert_same(ref, step(m, *batch()))
    # inference (no labels) runs the original forward: logits as before
    with torch.no_grad():
        assert torch.equal(m(input_ids=batch()[0]).logits, base(input_ids=batch()[0]).logits)
    assert remove_unswag_surgery(m)
    assert "forward" not in m.__dict__


def test_tied_embeddings_padding_idx_and_single_chunk():
    m = tiny("qwen2", tie_word_embeddings=True, pad_token_id=3)
    assert m.lm_head.weight is m.model.embed_tokens.weight
    ids, labels = batch()
    ids[1, :4] = 3  # the padding id as an ordinary token: its embedding row gets no grad
    ref = step(copy.deepcopy(m), ids, labels)
    m.forward = make_forward(m, m.forward, LongContextConfig(chunk_tokens=4096))
    assert_same(ref, step(m, ids, labels))


def test_num_items_scaled_loss_and_optimizer_steps():
    m = tiny("llama")
    ref = copy.deepcopy(m)
    m.forward = make_forward(m, m.forward, LongContextConfig(chunk_tokens=8))
    opts = [torch.optim.AdamW(x.parameters(), lr=1e-3) for x in (ref, m)]
    ids, labels = batch()
    for _ in range(2):
        for x, opt in zip((ref, m), opts):
            opt.zero_grad()
            loss = x(input_ids=ids, labels=labels, num_items_in_batch=50).loss
            (3.0 * loss).backward()  # a scaled loss: gradients scale with it
            opt.step()
    for (n, p), (_, q) in zip(m.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-6), n


def test_eval_no_grad_and_position_ids():
    m = tiny("llama")
    ref = copy.deepcopy(m)
    m.forward = make_forward(m, m.forward, LongContextConfig(chunk_tokens=8))
    ids, labels = batch()
    pos = torch.arange(37).flip(0).unsqueeze(0).expand(2, -1)  # any positions: rope only
    m.eval()
    ref.eval()
    with torch.no_grad():
        a = m(input_ids=ids, labels=labels, position_ids=pos).loss
        b = ref(input_ids=ids, labels=labels, position_ids=pos).loss
    assert abs(float(a) - float(b)) <= 1e-5 * float(b)
    assert_same(step(ref, ids, labels, position_ids=pos), step(m, ids, labels, position_ids=pos))


def test_refuses_what_it_cannot_do_exactly():
    gpt2 = T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB))
    with pytest.raises(UnsupportedModelError, match="model_type 'gpt2'"):
        apply_unswag_surgery(gpt2, long_context=True)
    m = tiny("llama")
    m.forward = make_forward(m, m.forward, LongContextConfig())
    ids, labels = batch()
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with pytest.raises(NotImplementedError, match="padding"):
        m(input_ids=ids, labels=labels, attention_mask=mask)
    m(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids))  # all ones: fine
    with pytest.raises(NotImplementedError, match="input_ids"):
        m(inputs_embeds=torch.zeros(2, 37, 64), labels=labels)
    with pytest.raises(NotImplementedError, match="output_hidden_states"):
        m(input_ids=ids, labels=labels, output_hidden_states=True)
    w = tiny("mistral", sliding_window=16)
    w.forward = make_forward(w, w.forward, LongContextConfig())
    with pytest.raises(NotImplementedError, match="sliding window of 16"):
        w(input_ids=ids, labels=labels)
    for bad in (dict(chunk_tokens=0), dict(chunk_tokens=2.5), dict(loss_chunk_tokens=True),
                dict(keep_attention="yes"), dict(norm="fast")):
        with pytest.raises(ValueError):
            LongContextConfig(**bad)
    with pytest.raises(TypeError):
        apply_unswag_surgery(tiny("llama"), long_context="yes")
    with pytest.raises(TypeError, match="ProcessGroup"):  # not a group (a rank, a mesh...)
        LongContextConfig(sequence_parallel=2)


def test_host_memory_error_is_clear(monkeypatch):
    monkeypatch.setattr(host_store, "_mem_total_bytes", lambda: 1000)
    m = tiny("llama")
    m.forward = make_forward(m, m.forward, LongContextConfig(keep_attention=True))
    with pytest.raises(host_store.HostMemoryError, match=r"keeps .* GiB on the host"):
        m(input_ids=batch()[0], labels=batch()[1])


@pytest.mark.parametrize("hq,hk", [(4, 4), (4, 2), (6, 1)])
def test_chunk_attention_equals_full_causal(hq, hk):
    torch.manual_seed(0)
    B, L, D = 2, 23, 8
    q = torch.randn(B, L, hq, D, dtype=torch.float64, requires_grad=True)
    k = torch.randn(B, L, hk, D, dtype=torch.float64, requires_grad=True)
    v = torch.randn(B, L, hk, D, dtype=torch.float64, requires_grad=True)
    do = torch.randn(B, L, hq, D, dtype=torch.float64)
    scale = 0.3
    full = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(hq // hk, 1),
        v.transpose(1, 2).repeat_interleave(hq // hk, 1), is_causal=True,
        scale=scale).transpose(1, 2)
    gq, gk, gv = torch.autograd.grad(full, [q, k, v], do)
    dq = torch.empty_like(q)
    dk = torch.zeros_like(k)
    dv = torch.zeros_like(v)
    for s, e in [(16, 23), (8, 16), (0, 8)]:  # chunks, last first as the engine runs them
        o, lse = A.math_forward(q[:, s:e].detach(), k[:, :e].detach(), v[:, :e].detach(), scale)
        assert torch.allclose(o, full[:, s:e], atol=1e-12)
        a, [(off, b, c)] = A.math_backward(do[:, s:e], q[:, s:e].detach(), k[:, :e].detach(),
                                           v[:, :e].detach(), o, lse, scale)
        assert off == 0
        dq[:, s:e] = a
        dk[:, :e] += b
        dv[:, :e] += c
    for got, want in ((dq, gq), (dk, gk), (dv, gv)):
        assert torch.allclose(got, want, atol=1e-12)


def test_host_store_roundtrip_cpu():
    st = host_store.HostStore(torch.device("cpu"))
    used = st.plan([(("x", 0, 0), (2, 3), torch.bfloat16), (("lse", 0, 0), (5,), torch.float32)])
    assert used >= 2 * 3 * 2 + 5 * 4 and st.capacity >= used
    x = torch.randn(2, 3).bfloat16()
    st.save(("x", 0, 0), x)
    assert torch.equal(st.load(("x", 0, 0))(), x)
    with pytest.raises(RuntimeError, match="slot"):
        st.save(("x", 0, 0), torch.zeros(3, 2, dtype=torch.bfloat16))


def test_reserve_host_memory_before_the_first_step():
    from unswag.torch.long_context import host_bytes, reserve_host_memory
    m = tiny("llama")
    with pytest.raises(ValueError, match="not in the long-context mode"):
        reserve_host_memory(m, 64)
    apply_unswag_surgery(m, long_context=LongContextConfig(chunk_tokens=16, keep_attention=True))
    got = reserve_host_memory(m, 37, batch=2)
    # 2 layers x (x: 64 bf16-or-fp32 values + o: 4 heads x 16 + lse: 4 fp32) per token
    assert got >= 2 * 2 * 37 * (64 * 4 + 64 * 4 + 4 * 4)
    assert host_bytes(m) >= got
    before = host_bytes(m)
    step(m, *batch())
    assert host_bytes(m) == before  # the step reused the reserved arena
    from unswag.torch.long_context import last_step
    info = last_step(m)
    assert info["keep_attention"] is True and info["chunks"] == 3  # 37 tokens, chunks of 16
    assert info["host_bytes"] == got
