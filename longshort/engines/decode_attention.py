"""Attention of a decode step on CPU, computed as two small matmuls instead of by SDPA's kernel.

At a decode step each row has one query; with grouped-query attention the query heads that share a
key/value head are one ``[group, head_dim] x [head_dim, past]`` product. PyTorch's CPU SDPA runs this
through its flash-attention kernel, which is blocked for long queries: in a torch-profiler trace of
SmolLM2-135M in bf16 decoding 32 left-padded rows at 200-400 tokens of context, that kernel took 55% of
the step. ``benchmarks/decode_step.py`` measures it against SDPA.

Only decode steps under no gradient take this path (one query per row, ``torch.is_grad_enabled()``
false); prefill, the cached prefill of a later turn and every training forward go to transformers'
SDPA function unchanged, so what is trained is computed exactly as before. The engine switches a
model to it (``use_for_decoding``) only on CPU and only from ``sdpa``; a model set to ``eager`` or
``flash_attention_2``, or on a GPU, keeps its attention. The masks are SDPA's (boolean, or None
when nothing is hidden).
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "longshort_decode"


def decode_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """``query [B, H, q, D]``, ``key``/``value [B, Hkv, past, D]`` -> ``[B, q, H, D]`` (transformers' layout)."""
    batch, heads, queries, dim = query.shape
    extras = any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "s_aux"))
    if queries != 1 or torch.is_grad_enabled() or extras:  # SDPA handles (or refuses) what this does not
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # the query heads of each key/value head
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:  # [B, 1, 1, past]: True where the row attends, or an additive float mask
        mask = attention_mask[..., -key.shape[2]:]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    return torch.matmul(weights, value).reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, decode_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def use_for_decoding(model) -> bool:
    """Switch a CPU model that uses SDPA to ``decode_attention``; True when it now does."""
    config = model.config
    current = getattr(config, "_attn_implementation", None)
    if current == NAME:
        return True
    if current != "sdpa" or next(model.parameters()).device.type != "cpu":
        return False
    model.set_attn_implementation(NAME)
    return True
