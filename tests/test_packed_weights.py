"""The HF engine's laid-out weights (engines/packed_weights.py) change no number: same products bit for
bit, same sampled tokens and log-probabilities, new weights followed, layers restored for training."""
from __future__ import annotations

import asyncio

import pytest
import torch

from longshort.engines import HFEngine, SamplingParams
from longshort.engines.packed_weights import PackedWeights, applies
from scripted import varied_tiny_model

pytestmark = pytest.mark.skipif(not applies(torch.nn.Linear(1, 1).to(torch.bfloat16)),
                                reason="not an x86-64 CPU whose oneDNN runs bf16 natively: the engine does not pack")
SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=20)
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=20)
TEXTS = ["Hello there", "What is 2+2? Let me think about this carefully, step by step.", "a",
         "The quick brown fox jumps over", "Solve for x: 3x + 5 = 20"]


@pytest.fixture
def bf16_tiny():
    model, tokenizer = varied_tiny_model()
    return model.to(torch.bfloat16), tokenizer


def generate(engine, prompts, sampling=SAMPLED):
    async def main():
        return await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))
    return asyncio.run(main())


def test_packed_layers_give_the_same_products_bit_for_bit():
    torch.manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.Linear(160, 96, bias=False)).to(torch.bfloat16)
    inputs = [torch.randn(1, 96), torch.randn(5, 96), torch.randn(3, 7, 96), torch.randn(300, 96),
              torch.randn(96, 12).t()]  # one row, a few, a batch of sequences, a prefill, a transposed view
    with torch.inference_mode():
        plain = [layers(x.to(torch.bfloat16)) for x in inputs]
        with PackedWeights(layers).installed(version=0):
            packed = [layers(x.to(torch.bfloat16)) for x in inputs]
    assert all(torch.equal(a, b) for a, b in zip(plain, packed))


def test_the_engine_samples_the_same_tokens_and_logprobs_with_packed_weights(bf16_tiny):
    model, tokenizer = bf16_tiny
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    packed_engine = HFEngine(model, tokenizer, seed=3, max_batch_size=4)  # a fifth request joins as rows leave
    assert packed_engine._packed is not None
    packed = generate(packed_engine, prompts)
    plain_engine = HFEngine(model, tokenizer, seed=3, max_batch_size=4, pack_weights=False)
    assert plain_engine._packed is None
    plain = generate(plain_engine, prompts)
    assert [g.token_ids for g in packed] == [g.token_ids for g in plain]
    assert [g.logprobs for g in packed] == [g.logprobs for g in plain]


def test_layers_are_restored_for_training_and_new_weights_are_laid_out_again(bf16_tiny):
    model, tokenizer = bf16_tiny
    prompts = [tokenizer(text).input_ids for text in TEXTS]
    engine = HFEngine(model, tokenizer, seed=0)
    generate(engine, prompts)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all("forward" not in vars(m) for m in linears)
    loss = model(input_ids=torch.tensor([prompts[1]]), labels=torch.tensor([prompts[1]])).loss  # a training step
    loss.backward()
    with torch.no_grad():
        for m in linears:
            m.weight -= m.weight.grad.sign() * 0.05  # in place, as the trainer writes new weights
    after = generate(engine, prompts, GREEDY)
    fresh = generate(HFEngine(model, tokenizer, pack_weights=False), prompts, GREEDY)
    assert [g.token_ids for g in after] == [g.token_ids for g in fresh]
    engine.drop_packed_weights()  # what the trainer does before an update: the copies are freed ...
    assert not engine._packed._layers
    again = generate(engine, prompts, GREEDY)  # ... and made again
    assert [g.token_ids for g in again] == [g.token_ids for g in fresh]


def test_a_layer_whose_forward_is_already_replaced_keeps_it():
    layers = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).to(torch.bfloat16)
    hooked = layers[0].forward = lambda x: x + 1  # as accelerate's device hooks replace a layer's forward
    with torch.inference_mode():
        with PackedWeights(layers).installed(version=0):
            assert layers[0].forward is hooked and "forward" in vars(layers[1])  # the other one is packed
        assert layers[0].forward is hooked and "forward" not in vars(layers[1])


def test_only_bf16_cpu_models_are_packed(bf16_tiny):
    model, _ = bf16_tiny
    assert applies(model)
    assert not applies(model.float())
