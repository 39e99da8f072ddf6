"""A decode step for Llama-shaped models on CPU without transformers' module layer, q/k/v and gate/up fused.

A CPU decode step of SmolLM2-135M at 32 rows spends ~22% of its time outside the matrix products and
attention (``benchmarks/decode_step.py --breakdown``): norms, rotary embeddings, cache writes, and the
module calls, masks and output records around them. ``LlamaDecodeStep`` runs the same operations in the
same order on the model's own tensors, calling its rotary-embedding module and ``decode_attention``
itself, and multiplies each layer's input once by q/k/v stacked and once by gate/up stacked (4 matrix
products a layer instead of 7). Each output column of a stacked product is the same dot product, so
the logits equal the model's own forward's (bit for bit in bf16 here; ``tests/test_llama_decode.py``
holds sampled tokens and log-probabilities equal), and ``benchmarks/decode_step.py`` measures it.

It applies only where that equality is certain: a ``LlamaForCausalLM`` without biases, tensor-parallel
slicing or another activation, whose attention is ``decode_attention`` (CPU, SDPA) over a cache of
``GrowingLayer`` s; everything else (prefill, GPUs, other architectures) goes through the model. The
stacked weights are a copy (for SmolLM2 in bf16, 139 MB), rebuilt when the engine's count of in-place
writes to the weights (``weights``) changes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache

from longshort.engines.decode_attention import NAME as DECODE_ATTENTION, decode_attention
from longshort.engines.decode_cache import GrowingLayer


class LlamaDecodeStep:
    """One decode step of ``model`` (see the module docstring); build it with ``for_model``."""

    def __init__(self, model):
        self.model = model
        self._version: int | None = None
        self._qkv: list[torch.Tensor] = []
        self._gate_up: list[torch.Tensor] = []

    @classmethod
    def for_model(cls, model) -> "LlamaDecodeStep | None":
        """The step for ``model``, or None when it is not a plain Llama on ``decode_attention``."""
        from transformers import LlamaForCausalLM

        config = model.config
        plain = (type(model) is LlamaForCausalLM and not config.attention_bias and not config.mlp_bias
                 and config.hidden_act == "silu" and getattr(config, "pretraining_tp", 1) == 1
                 and getattr(config, "_attn_implementation", None) == DECODE_ATTENTION)
        return cls(model) if plain else None

    @staticmethod
    def applies(cache: Cache | None) -> bool:
        """Whether this step can extend ``cache``: every layer a filled ``GrowingLayer``."""
        return cache is not None and bool(cache.layers) and all(
            type(layer) is GrowingLayer and layer.is_initialized for layer in cache.layers)

    def _stack(self, version: int) -> None:
        """Stack each layer's q/k/v and gate/up weights again if the model's weights changed."""
        if version == self._version:
            return
        layers = self.model.model.layers
        self._qkv = [torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                layer.self_attn.v_proj.weight]) for layer in layers]
        self._gate_up = [torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]) for layer in layers]
        self._version = version

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Cache,
                 weights: int) -> torch.Tensor:
        """Logits ``[rows, vocab]`` (model dtype) of one new token per row; ``cache`` takes its keys and values.
        ``mask [rows, past + 1]`` is the 2-D attention mask, ``positions [rows, 1]`` the tokens' positions,
        ``weights`` the weights' version (``hf._weights_version``): the stacked copies are rebuilt when it changes."""
        self._stack(weights)
        model, config = self.model, self.model.config
        rows = input_ids.shape[0]
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        q_size, kv_size = heads * head_dim, kv_heads * head_dim
        capacity = cache.layers[0].get_mask_sizes(1)[0]  # the key length the layers' update will return
        keys_mask = mask.new_zeros((rows, capacity), dtype=torch.bool)
        keys_mask[:, : mask.shape[1]] = mask.bool()
        keys_mask = keys_mask[:, None, None, :]
        hidden = model.model.embed_tokens(input_ids)
        cos, sin = model.model.rotary_emb(hidden, positions)
        cos, sin = cos[:, None], sin[:, None]  # [rows, 1 (heads), 1, head_dim]
        intermediate = config.intermediate_size
        for index, layer in enumerate(model.model.layers):
            attention, norm = layer.self_attn, layer.input_layernorm
            qkv = F.linear(_rms_norm(hidden, norm.weight, norm.variance_epsilon), self._qkv[index])
            query = qkv[..., :q_size].view(rows, 1, heads, head_dim).transpose(1, 2)
            key = qkv[..., q_size: q_size + kv_size].view(rows, 1, kv_heads, head_dim).transpose(1, 2)
            value = qkv[..., q_size + kv_size:].view(rows, 1, kv_heads, head_dim).transpose(1, 2)
            query, key = _rotary(query, cos, sin), _rotary(key, cos, sin)
            keys, values = cache.layers[index].update(key, value)
            out, _ = decode_attention(attention, query, keys, values, keys_mask, scaling=attention.scaling)
            hidden = hidden + attention.o_proj(out.reshape(rows, 1, q_size))
            norm = layer.post_attention_layernorm
            gate_up = F.linear(_rms_norm(hidden, norm.weight, norm.variance_epsilon), self._gate_up[index])
            hidden = hidden + layer.mlp.down_proj(F.silu(gate_up[..., :intermediate]) * gate_up[..., intermediate:])
        norm = model.model.norm
        return model.lm_head(_rms_norm(hidden, norm.weight, norm.variance_epsilon))[:, -1]


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm`` as transformers computes it (fp32 statistics, weight applied in the input dtype)."""
    states = hidden.to(torch.float32)
    states = states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + eps)
    return weight * states.to(hidden.dtype)


def _rotary(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``apply_rotary_pos_emb`` for one tensor: ``states * cos + rotate_half(states) * sin``."""
    half = states.shape[-1] // 2
    return states * cos + torch.cat((-states[..., half:], states[..., :half]), dim=-1) * sin
