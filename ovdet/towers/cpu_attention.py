"""Attention for ViT towers that runs near the GEMM rate in bf16 on a CPU.

torch's CPU flash-attention kernel is no faster in bf16 than in fp32 (measured here: 8.5 ms per
B/32 layer at 768 px either way, ~120 GFLOP/s against a 760 GFLOP/s bf16 GEMM): in bf16 it took a
third of the whole forward pass. Two batched GEMMs with a softmax between them run twice as fast,
provided the score matrix of each chunk stays in cache; so (batch x head) rows are taken a few at
a time, and long sequences (OWLv2 at 960 px: 3601 tokens) a block of query rows at a time.
Measured (2 threads, AVX512-BF16 EPYC): B/32 768 px batch 8 28 ms vs 64 ms a layer, OWLv2 3601
tokens 102 ms vs 244 ms; one score buffer shared by all chunks and soft-maxed in place gained 3 %
more on the whole OWLv2 pass. Everything else (fp32, GPUs, masks, training) keeps transformers' SDPA
path unchanged, so fp32 answers are bit-identical.
"""

from __future__ import annotations

import torch

NAME = "ovdet_cpu"
SCORE_BUDGET = 1_500_000  # score-matrix elements per chunk (3 MB in bf16: about one core's L2)


def chunked_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention interface: query/key/value [B, H, T, d] -> ([B, T, H, d], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    fast = (query.device.type == "cpu" and query.dtype == torch.bfloat16 and attention_mask is None
            and not module.training and not getattr(module, "is_causal", False) and key.shape == query.shape)
    if not fast:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, h, t, d = query.shape
    scale = scaling if scaling is not None else d**-0.5
    q, k, v = (x.reshape(b * h, t, d) for x in (query, key, value))  # [BH, T, d]
    out = torch.empty_like(q)
    rows = max(1, SCORE_BUDGET // (t * t))  # (batch x head) rows per chunk
    block = t if rows > 1 else max(64, SCORE_BUDGET // t)  # long sequences: query rows per chunk instead
    # One score buffer for every chunk, scaled inside the GEMM and soft-maxed in place: a fresh 3 MB
    # tensor per chunk is a fresh mmap (page faults), and `q * scale` one more pass.
    buffer = torch.empty(min(rows, b * h) * min(block, t) * t, dtype=q.dtype)
    for start in range(0, b * h, rows):
        part = slice(start, start + rows)
        keys = k[part].transpose(1, 2).contiguous()  # [r, d, T], once: bmm would copy a strided one per block
        for first in range(0, t, block):
            rows_q = slice(first, first + block)
            queries = q[part, rows_q]  # [r, blk, d]
            scores = buffer[: queries.shape[0] * queries.shape[1] * t].view(queries.shape[0], queries.shape[1], t)
            torch.baddbmm(scores, queries, keys, beta=0, alpha=scale, out=scores)  # [r, blk, T]: every key
            # bf16 softmax: an fp32 one costs 1.6x here and moves outputs by less than one bf16 step
            torch.softmax(scores, -1, out=scores)
            torch.bmm(scores, v[part], out=out[part, rows_q])  # [r, blk, d]
    return out.view(b, h, t, d).transpose(1, 2), None  # [B, T, H, d]


def use_chunked_attention(model) -> None:
    """Point a transformers ViT (its config) at `chunked_attention`; registered on first use, not at import."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, chunked_attention)
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", NAME):
        model.config._attn_implementation = NAME
