"""The HF engine's Llama decode step (``engines.llama_decode``) samples what the model's own forward does."""
from __future__ import annotations

import asyncio

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from longshort.engines import HFEngine, SamplingParams
from longshort.engines.llama_decode import LlamaDecodeStep
from longshort.models import tiny_tokenizer

TEXTS = ["Hello there", "What is 2+2? Let me think about this carefully, step by step.", "a",
         "The quick brown fox jumps over", "Solve for x: 3x + 5 = 20"]


def grouped_llama(**overrides) -> LlamaForCausalLM:
    """A random Llama with grouped-query attention (4 query heads per key/value head) and weights
    large enough that its samples depend on every part of the step."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512,
                         attn_implementation="sdpa", **overrides)
    model = LlamaForCausalLM._from_config(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2 + (parameter.dim() == 1))
    return model.eval()


def sample(engine: HFEngine, prompts: list[list[int]], sessions: bool = False):
    """Two turns per prompt (the second continues the first's session when ``sessions``), concurrently."""
    params = [SamplingParams(temperature=1.0, max_new_tokens=n) for n in (12, 3, 20, 7, 16)]

    async def episode(index: int, prompt: list[int]):
        first = await engine.generate(prompt, params[index], session=index if sessions else None)
        second = await engine.generate(prompt + first.token_ids + [5, 6], params[index],
                                       session=index if sessions else None)
        return first, second

    async def main():
        return await asyncio.gather(*(episode(i, p) for i, p in enumerate(prompts)))

    return [turn for pair in asyncio.run(main()) for turn in pair]


def test_decode_step_samples_what_the_model_forward_does():
    """Same seed, same tokens and log-probabilities with the step and with the model's forward: rows of
    different lengths (left padding), rows leaving, waiting requests joining, turns reusing their session's
    keys and values, the cache growing past its headroom."""
    model, tokenizer = grouped_llama(), tiny_tokenizer()
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    for sessions in (False, True):
        fast = HFEngine(model, tokenizer, seed=3, max_batch_size=4)
        slow = HFEngine(model, tokenizer, seed=3, max_batch_size=4)
        slow._decode_step = None
        calls = []
        step = fast._decode_step
        fast._decode_step = lambda *args: calls.append(1) or step(*args)
        expected, results = sample(slow, prompts, sessions), sample(fast, prompts, sessions)
        assert calls and fast.stats.joined > 0 and (fast.stats.reused_tokens > 0) == sessions
        assert [r.token_ids for r in results] == [r.token_ids for r in expected]
        for result, reference in zip(results, expected):
            assert torch.allclose(torch.tensor(result.logprobs), torch.tensor(reference.logprobs), atol=1e-5)


def test_decode_step_follows_the_weights():
    """After an in-place update of the weights (as an optimiser step does) the step uses the new ones."""
    model, tokenizer = grouped_llama(), tiny_tokenizer()
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    engine = HFEngine(model, tokenizer, seed=1)
    sample(engine, prompts)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.mul_(1.5)
            layer.mlp.up_proj.weight.mul_(-1.0)
    slow = HFEngine(model, tokenizer, seed=1)
    slow._decode_step = None
    again = HFEngine(model, tokenizer, seed=1)
    again._decode_step = engine._decode_step  # the step that stacked the old weights
    assert [r.token_ids for r in sample(again, prompts)] == [r.token_ids for r in sample(slow, prompts)]


def test_decode_step_only_where_it_is_exact():
    """Biases, another activation or another attention: the engine keeps the model's forward."""
    assert LlamaDecodeStep.for_model(HFEngine(grouped_llama(), tiny_tokenizer()).model) is not None
    for overrides in ({"attention_bias": True}, {"mlp_bias": True}, {"hidden_act": "gelu"}):
        assert HFEngine(grouped_llama(**overrides), tiny_tokenizer())._decode_step is None
    eager = grouped_llama()
    eager.set_attn_implementation("eager")
    assert HFEngine(eager, tiny_tokenizer())._decode_step is None
