#!/usr/bin/env python3
"""Where a long-context step's time goes: attention kernels side by side, and a profile
of one long-context step.  A diagnostic for the lent GPU; prints a table.

1. Full causal attention at T tokens (TinyLlama heads: 32 query, 4 KV, dim 64, bf16),
   forward + backward: F.scaled_dot_product_attention as Hugging Face calls it (which
   backend it picks is printed), PyTorch's flash op, the cuDNN op; and the chunked flash
   attention of the long-context mode (chunks of C queries over their prefix).
2. The cuDNN op with fewer queries than keys: is its causal mask aligned lower-right?
3. torch.profiler of one long-context training step at T tokens: top kernels.

    python bench/gpu/probe_attention.py --tokens 32768 --chunk 8192
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--profile-step", type=int, default=32768)
    a = ap.parse_args()
    from unswag.torch.long_context import attention as A
    dev = torch.device("cuda")
    T, C, hq, hk, D = a.tokens, a.chunk, 32, 4, 64
    scale = D ** -0.5
    q = torch.randn(1, T, hq, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, T, hk, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, T, hk, D, device=dev, dtype=torch.bfloat16)
    do = torch.randn_like(q)
    flops_fwd = 4 * T * T / 2 * hq * D

    def sdpa_fb():
        qq = q.transpose(1, 2).requires_grad_()
        kk = k.transpose(1, 2).requires_grad_()
        vv = v.transpose(1, 2).requires_grad_()
        o = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, scale=scale,
                                           enable_gqa=True)
        o.backward(do.transpose(1, 2))

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        sdpa_fb()
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    kinds = ("flash", "cudnn", "fmha", "efficient", "attention", "sdpa")
    picked = [n for n in names if any(s in n.lower() for s in kinds)]
    print("SDPA (enable_gqa=True) ran:", "; ".join(sorted(picked))[:600])

    rows = []
    t_sdpa = timed(sdpa_fb)
    rows.append(("F.sdpa causal fwd+bwd (HF's call)", t_sdpa))

    def flash_fb():
        o, lse = A.flash_forward(q, k, v, scale)
        A.flash_backward(do, q, k, v, o, lse, scale)
    rows.append(("flash op fwd+bwd, one call", timed(flash_fb)))

    def flash_f():
        A.flash_forward(q, k, v, scale)
    rows.append(("flash op fwd, one call", timed(flash_f)))

    def cudnn_fb():
        kx = k.repeat_interleave(hq // hk, 2)
        vx = v.repeat_interleave(hq // hk, 2)
        r = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q.transpose(1, 2), kx.transpose(1, 2), vx.transpose(1, 2), None, True, 0.0, True,
            False, scale=scale)
        torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            do.transpose(1, 2), q.transpose(1, 2), kx.transpose(1, 2), vx.transpose(1, 2),
            r[0], r[1], r[6], r[7], None, r[2], r[3], r[4], r[5], 0.0, True, scale=scale)
    try:
        rows.append(("cudnn op fwd+bwd (K/V expanded)", timed(cudnn_fb)))
    except Exception as e:  # report and go on
        rows.append((f"cudnn op failed: {str(e)[:120]}", float("nan")))

    chunks = [(s, min(s + C, T)) for s in range(0, T, C)]

    def chunk_f():
        for s, e in chunks:
            A.flash_forward(q[:, s:e], k[:, :e], v[:, :e], scale)

    def chunk_fb():
        outs = [A.flash_forward(q[:, s:e], k[:, :e], v[:, :e], scale) for s, e in chunks]
        for (s, e), (o, lse) in zip(reversed(chunks), reversed(outs)):
            A.flash_backward(do[:, s:e], q[:, s:e], k[:, :e], v[:, :e], o, lse, scale)
    rows.append((f"chunked flash fwd, chunks of {C}", timed(chunk_f)))
    rows.append((f"chunked flash fwd+bwd, chunks of {C}", timed(chunk_fb)))
    print("cuDNN chunk path:", A.backend(q), A._CUDNN_OK)
    if A.backend(q) == "cudnn":
        def cchunk_f():
            for s, e in chunks:
                A.cudnn_forward(q[:, s:e], k[:, :e], v[:, :e], scale)

        def cchunk_fb():
            outs = [A.cudnn_forward(q[:, s:e], k[:, :e], v[:, :e], scale) for s, e in chunks]
            for (s, e), (o, lse) in zip(reversed(chunks), reversed(outs)):
                A.cudnn_backward(do[:, s:e], q[:, s:e], k[:, :e], v[:, :e], o, lse, scale)
        rows.append((f"chunked cudnn fwd, chunks of {C}", timed(cchunk_f)))
        rows.append((f"chunked cudnn fwd+bwd, chunks of {C}", timed(cchunk_fb)))
    saved = A._MAX_EXPANDED_BYTES
    A._MAX_EXPANDED_BYTES = 1 << 62
    rows.append(("chunked flash fwd+bwd, no per-KV-head split", timed(chunk_fb)))
    A._MAX_EXPANDED_BYTES = saved

    print(f"\n# attention at {T} tokens, 32 q heads / 4 KV heads / dim 64, bf16, "
          f"{torch.cuda.get_device_name(0)}")
    for name, t in rows:
        tf = flops_fwd * (3.5 if "bwd" in name else 1) / t / 1e12 if t == t else float("nan")
        print(f"  {name:<48} {t * 1e3:9.1f} ms  ~{tf:5.0f} TFLOP/s (fwd=1, bwd=2.5)")

    # 2. cuDNN with fewer queries than keys: which diagonal?
    try:
        s0 = 300
        qs, kk, vv = (torch.randn(1, 4, n, 64, device=dev, dtype=torch.bfloat16)
                      for n in (200, 500, 500))
        r = torch.ops.aten._scaled_dot_product_cudnn_attention(qs, kk, vv, None, True, 0.0, True,
                                                               False, scale=0.125)
        ref, _ = A.math_forward(qs.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2), 0.125)
        top = F.scaled_dot_product_attention(qs.float(), kk.float(), vv.float(), is_causal=True,
                                             scale=0.125)
        e_lr = (r[0].transpose(1, 2).float() - ref.float()).abs().max().item()
        e_tl = (r[0].float() - top).abs().max().item()
        print(f"cudnn Lq<Lk causal: max diff to lower-right {e_lr:.3g}, to upper-left {e_tl:.3g}"
              f" (s0={s0})")
    except Exception as e:  # report and go on
        print("cudnn Lq<Lk probe failed:", str(e)[:200])

    # 3. profile one long-context step
    import transformers as T_

    from unswag import apply_unswag_surgery
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from llama_shapes import TINYLLAMA  # found in this script's folder (no package)
    cfg = T_.LlamaConfig(**TINYLLAMA, max_position_embeddings=a.profile_step, rms_norm_eps=1e-5)
    with dev:
        model = T_.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                                 torch_dtype=torch.bfloat16)
    apply_unswag_surgery(model, long_context=True)
    ids = torch.randint(0, 32000, (1, a.profile_step), device=dev)

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
    t_step = timed(step, reps=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                            torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
        torch.cuda.synchronize()
    print(f"\n# long-context step at {a.profile_step} tokens: {t_step:.2f} s; top CUDA kernels")
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70))
            break
        except Exception as e:  # the sort key was renamed between versions
            print("sort key", key, "failed:", e)


if __name__ == "__main__":
    main()
