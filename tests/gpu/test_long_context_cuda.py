#!/usr/bin/env python3
"""GPU checks of the long-context mode (run on the lent GPU machine; prints
`N passed, N failed`).

1. Chunked flash attention (PyTorch's FA2 ops, lower-right causal, GQA, with and
   without the per-KV-head split of the backward) against an fp64 reference, next to
   the error of the same math in bf16 inputs.
2. A 4-layer Llama (and a 2-layer Qwen3) at 4096 tokens in bf16, several chunks: the
   loss and every parameter gradient against an fp32 reference of the same weights,
   next to plain bf16 Hugging Face's own error.  Passes when every gradient's error
   is within 1.25x of HF's (plus 1e-3 absolute slack for tiny-norm parameters) and the
   loss is within bf16 noise.

    bash tests/gpu/run_long_context.sh      # builds libunswag for this GPU, then runs this
"""
from __future__ import annotations

import copy
import sys

import torch
import transformers as T

from unswag import apply_unswag_surgery
from unswag.torch.long_context import LongContextConfig
from unswag.torch.long_context import attention as A

results = {"passed": 0, "failed": 0}


def check(name: str, ok: bool, detail: str = "") -> None:
    results["passed" if ok else "failed"] += 1
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _dense(pieces, like):
    dk = torch.zeros_like(like)
    dv = torch.zeros_like(like)
    for off, a, b in pieces:
        dk[:, off:off + a.shape[1]] += a
        dv[:, off:off + b.shape[1]] += b
    return dk, dv


def attention_checks():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    q0 = torch.zeros(1, 8, 4, 64, device=dev, dtype=torch.bfloat16)
    print("cuDNN path on this machine:", A.backend(q0), A._CUDNN_OK, flush=True)
    check("cuDNN path verified against math on first use", A.backend(q0) == "cudnn",
          f"{A._CUDNN_OK}")
    impls = {"flash": (A.flash_forward, A.flash_backward)}
    if A.backend(q0) == "cudnn":
        impls["cudnn"] = (A.cudnn_forward, A.cudnn_backward)
    for (B, L, hq, hk, D, chunks) in [(1, 3000, 32, 4, 64, [(0, 1024), (1024, 2048),
                                                           (2048, 3000)]),
                                      (2, 777, 8, 8, 128, [(0, 500), (500, 777)])]:
        q = torch.randn(B, L, hq, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(B, L, hk, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(B, L, hk, D, device=dev, dtype=torch.bfloat16)
        do = torch.randn(B, L, hq, D, device=dev, dtype=torch.bfloat16)
        scale = D ** -0.5
        for impl, (fwd, bwd) in impls.items():
            for split in ((False, True) if impl == "flash" else (False,)):
                saved = A._MAX_EXPANDED_BYTES
                A._MAX_EXPANDED_BYTES = 0 if split else saved
                try:
                    for s, e in reversed(chunks):
                        args = (q[:, s:e], k[:, :e], v[:, :e])
                        o, lse = fwd(*args, scale)
                        o64, lse64 = A.math_forward(*(t.double() for t in args), scale)
                        ob, _ = A.math_forward(*args, scale)  # bf16 inputs, fp32 math
                        tag = (f"{impl} B{B} L{L} hq{hq} hk{hk} D{D} chunk[{s},{e}) "
                               f"split={split}")
                        check(f"fwd {tag}", rel(o, o64) <= 2 * rel(ob, o64) + 1e-3,
                              f"{impl} {rel(o, o64):.2e} math-bf16 {rel(ob, o64):.2e}")
                        check(f"lse {tag}", rel(lse, lse64) <= 1e-4, f"{rel(lse, lse64):.2e}")
                        dq, pieces = bwd(do[:, s:e], *args, o, lse, scale)
                        g = (dq, *_dense(pieces, args[1]))
                        dq64, p64 = A.math_backward(do[:, s:e].double(),
                                                    *(t.double() for t in args), o64, lse64,
                                                    scale)
                        g64 = (dq64, *_dense(p64, args[1].double()))
                        dqb, pb = A.math_backward(do[:, s:e], *args, ob, lse, scale)
                        gb = (dqb, *_dense(pb, args[1]))
                        for nm, x, x64, xb in zip("qkv", g, g64, gb):
                            check(f"d{nm} {tag}", rel(x, x64) <= 2 * rel(xb, x64) + 1e-3,
                                  f"{impl} {rel(x, x64):.2e} math-bf16 {rel(xb, x64):.2e}")
                finally:
                    A._MAX_EXPANDED_BYTES = saved


def model_check(kind: str, layers: int, ctx: int, chunk: int, keep):
    dev = torch.device("cuda")
    common = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=layers,
                  num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                  max_position_embeddings=ctx, rms_norm_eps=1e-5)
    cfg = T.LlamaConfig(**common) if kind == "llama" else T.Qwen3Config(head_dim=64, **common)
    torch.manual_seed(0)
    with dev:
        ref = T.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa",
                                                 torch_dtype=torch.float32)
    ref.train()
    hf = copy.deepcopy(ref).to(torch.bfloat16)
    us = copy.deepcopy(ref).to(torch.bfloat16)
    apply_unswag_surgery(us, long_context=LongContextConfig(chunk_tokens=chunk,
                                                            keep_attention=keep))
    ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=dev)

    def run(m):
        m.zero_grad(set_to_none=True)
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.item(), {n: p.grad for n, p in m.named_parameters()}

    l_ref, g_ref = run(ref)
    l_hf, g_hf = run(hf)
    l_us, g_us = run(us)
    q0 = torch.zeros(1, 8, 4, 64, device=dev, dtype=torch.bfloat16)
    tag = (f"{kind} {layers} layers, {ctx} tokens, chunks of {chunk}, keep_attention={keep}, "
           f"attention {A.backend(q0)}")
    check(f"loss {tag}", abs(l_us - l_ref) <= 2 * abs(l_hf - l_ref) + 2e-3,
          f"ref {l_ref:.5f} hf-bf16 {l_hf:.5f} unswag {l_us:.5f}")
    worst, worst_name, bad = 0.0, "", []
    for n in g_ref:
        e_hf, e_us = rel(g_hf[n], g_ref[n]), rel(g_us[n], g_ref[n])
        ratio = e_us / max(e_hf, 1e-12)
        if ratio > worst:
            worst, worst_name = ratio, n
        if e_us > 1.25 * e_hf + 1e-3:
            bad.append(f"{n}: unswag {e_us:.2e} hf {e_hf:.2e}")
    check(f"every gradient within 1.25x of plain bf16's error, {tag}", not bad,
          f"worst ratio {worst:.3f} ({worst_name}); " + "; ".join(bad[:5]))


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        print("0 passed, 1 failed")
        return 1
    attention_checks()
    model_check("llama", 4, 4096, 1024, True)
    model_check("qwen3", 2, 4096, 1024, "auto")
    A._CUDNN_ALLOWED = False  # the FlashAttention-2 path alone
    A._CUDNN_OK.clear()
    model_check("llama", 2, 4096, 1536, False)
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 0 if results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
