"""Per-GPU memory of an OpenRLHF run, estimated from the model's config before any GPU is rented.

The estimate is arithmetic on the model's shape (``ModelShape``), the ZeRO stage and the tokens a
GPU holds at once. It is an approximation that errs high on purpose; what it must catch is the
order-of-magnitude mistake (a micro-batch of 16 episodes of 17k tokens needs ~170 GB of logits on
one GPU), not a few GiB. The terms, per GPU, in bytes (P parameters, N training GPUs, T tokens):

- weights bf16 ``2P`` (``/N`` under ZeRO-3); gradients bf16 ``2P`` (``/N`` from ZeRO-2); optimiser
  state fp32 master + Adam m, v ``12P/N`` (ZeRO >= 1);
- activations: with gradient checkpointing each layer keeps its input (``2h`` a token) and one layer
  is recomputed at a time (``34h`` a token, Korthikanti et al. 2022 without the attention-score term,
  which flash attention does not store); without, ``34h`` a token for every layer;
- logits: OpenRLHF's actor casts the full-vocabulary logits to fp32 (``models/actor.py``); in
  training the fp32 logits and their fp32 gradient are alive together, ``8 V`` bytes a token; when
  only log-probabilities are computed (reference, old policy), bf16 and fp32 copies, ``6 V``;
- a fixed ``OVERHEAD_GIB`` for the CUDA context, NCCL buffers and allocator fragmentation;
- a vLLM engine holds ``gpu_memory_utilization`` of its GPU: weights ``2P/tp``, the rest is KV cache
  of ``4 L kv_heads head_dim`` bytes a token, which must hold at least one longest sequence.

The model's shape comes from a local folder's ``config.json``, else the Hub, else the published
values of the recipes' models kept below (``PUBLISHED``), and the estimate says which.
"""
from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

GIB = 1024 ** 3
OVERHEAD_GIB = 4.0
VLLM_RESERVE_GIB = 2.0  # vLLM's activations and CUDA graphs, outside weights and KV cache
HUB_TIMEOUT = 5.0


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a decoder-only transformer's config."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    qkv_bias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def parameters(self) -> int:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        attention = 2 * h * h + 2 * h * kv + ((h + 2 * kv) if self.qkv_bias else 0)
        layer = attention + 3 * h * self.intermediate + 2 * h
        return self.vocab * h * (1 if self.tied else 2) + self.layers * layer + h

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, bf16

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                   layers=config["num_hidden_layers"], heads=config["num_attention_heads"],
                   kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                   vocab=config["vocab_size"], tied=bool(config.get("tie_word_embeddings", False)),
                   qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")))


# The published config.json values of the recipes' models, for machines without Hub access.
_QWEN2_7B = ModelShape(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, qkv_bias=True)
_LLAMA31_8B = ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256)
PUBLISHED: dict[str, ModelShape] = {
    "Qwen/Qwen2.5-7B-Instruct": _QWEN2_7B,
    "Qwen/Qwen2.5-7B": _QWEN2_7B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _QWEN2_7B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "meta-llama/Llama-3.1-8B": _LLAMA31_8B,
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": _LLAMA31_8B,
}


def model_shape(name_or_path: str, *, hub: bool = True) -> tuple[ModelShape | None, str]:
    """(shape, where it came from); (None, why) when no source knows the model."""
    local = Path(name_or_path).expanduser() / "config.json"
    if local.is_file():
        return ModelShape.from_config(json.loads(local.read_text())), f"{local}"
    if hub and "/" in name_or_path and not os.environ.get("HF_HUB_OFFLINE"):
        request = urllib.request.Request(f"https://huggingface.co/{name_or_path}/resolve/main/config.json")
        if os.environ.get("HF_TOKEN"):
            request.add_header("Authorization", f"Bearer {os.environ['HF_TOKEN']}")
        try:
            with urllib.request.urlopen(request, timeout=HUB_TIMEOUT) as response:
                return ModelShape.from_config(json.loads(response.read())), f"the Hub's {name_or_path}/config.json"
        except (OSError, ValueError, KeyError):
            pass
    if name_or_path in PUBLISHED:
        return PUBLISHED[name_or_path], "published config values kept in longshort (no Hub access)"
    return None, f"no local config.json, no Hub access and no published values for {name_or_path}"


@dataclass(frozen=True)
class Estimate:
    """One row of the memory table: a model's part on one GPU, its terms in GiB and what it must fit in."""

    part: str
    tokens: int
    terms: dict[str, float]
    limit_gib: float

    @property
    def total_gib(self) -> float:
        return sum(self.terms.values())

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.limit_gib


def _gib(nbytes: float) -> float:
    return nbytes / GIB


def activations(shape: ModelShape, tokens: int, checkpointing: bool) -> float:
    per_layer = 34 * shape.hidden * tokens
    if checkpointing:
        return 2 * shape.hidden * tokens * shape.layers + per_layer
    return per_layer * shape.layers


def training(part: str, shape: ModelShape, *, gpus: int, zero_stage: int, train_tokens: int, infer_tokens: int,
             checkpointing: bool, limit_gib: float, reference: bool = False) -> Estimate:
    """A DeepSpeed-trained model on one of its ``gpus`` GPUs (with a colocated frozen reference when
    ``reference``): static state, plus the larger of the training and the log-probability working sets."""
    p = shape.parameters
    weights = 2 * p / (gpus if zero_stage >= 3 else 1)
    terms = {"weights": _gib(weights), "grads": _gib(2 * p / (gpus if zero_stage >= 2 else 1)),
             "optimizer": _gib(12 * p / (gpus if zero_stage >= 1 else 1))}
    if reference:
        terms["reference"] = _gib(weights)
    train = activations(shape, train_tokens, checkpointing) + 8 * shape.vocab * train_tokens
    infer = 34 * shape.hidden * infer_tokens + 6 * shape.vocab * infer_tokens
    if train >= infer:
        terms["activations"] = _gib(activations(shape, train_tokens, checkpointing))
        terms["logits"] = _gib(8 * shape.vocab * train_tokens)
    else:
        terms["activations"] = _gib(34 * shape.hidden * infer_tokens)
        terms["logits"] = _gib(6 * shape.vocab * infer_tokens)
    terms["overhead"] = OVERHEAD_GIB
    return Estimate(part, max(train_tokens, infer_tokens), terms, limit_gib)


def vllm_engine(part: str, shape: ModelShape, *, gpu_gib: float, utilization: float, tensor_parallel: int,
                max_len: int) -> Estimate:
    """A vLLM engine's share of each of its GPUs; it fits when its KV cache holds one longest sequence."""
    terms = {"weights": _gib(2 * shape.parameters / tensor_parallel),
             "kv (1 sequence)": _gib(shape.kv_bytes_per_token * max_len / tensor_parallel),
             "reserve": VLLM_RESERVE_GIB}
    return Estimate(part, max_len, terms, gpu_gib * utilization)


def kv_sequences(estimate: Estimate, shape: ModelShape, tensor_parallel: int = 1) -> float:
    """How many longest sequences the engine's KV cache holds at once (its batch at the longest length)."""
    room = estimate.limit_gib - estimate.terms["weights"] - estimate.terms["reserve"]
    return room * GIB * tensor_parallel / (shape.kv_bytes_per_token * estimate.tokens)


def format_table(rows: list[Estimate]) -> str:
    """The estimate as a text table, one row per part, largest terms named."""
    lines = [f"{'part':<34} {'tokens':>7} {'GiB':>7} {'limit':>7}  terms (GiB)"]
    for row in rows:
        terms = ", ".join(f"{k} {v:.1f}" for k, v in row.terms.items())
        flag = "" if row.fits else "  <-- DOES NOT FIT"
        lines.append(f"{row.part:<34} {row.tokens:>7} {row.total_gib:>7.1f} {row.limit_gib:>7.1f}  {terms}{flag}")
    return "\n".join(lines)
