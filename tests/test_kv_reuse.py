"""KV-cache reuse across an agent's turns: the same tokens and log-probabilities as prefilling every
turn from scratch, with less prefill, and bounded memory (entries freed per episode, LRU cap)."""
from __future__ import annotations

import asyncio
import copy

import pytest
import torch

from agents import LongThoughtAgent, ShortThoughtAgent
from envs.base import StepResult
from envs.long_short import LongShortEnv
from longshort.data import Problem
from longshort.engines import HFEngine, SamplingParams
from longshort.engines.base import SessionEngine
from longshort.engines.kv_reuse import KVEntry, KVStore, PrefixCache, shared_openings
from longshort.rollout import RolloutRunner
from scripted import varied_tiny_model

SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tiny():
    return varied_tiny_model()


class ForcedTurnsEnv(LongShortEnv):
    """Long-Short that ignores format failures, so every episode runs ``max_turns`` turns."""

    def step(self, turn):
        self.turns.append(turn)
        if len(self.turns) >= self.max_turns or self.tokens_left() <= 0:
            return self._finish("turn_cap", turn, self.agents[turn.role].check_format(turn.text, turn.finish_reason))
        return StepResult("short" if turn.role == "long" else "long", False)


def _episodes(engine_budget: int, tiny, *, turns: int = 5, problems: int = 3, group: int = 2, seed: int = 3):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer, seed=seed, kv_cache_budget=engine_budget)
    agents = {"long": LongThoughtAgent("long", sampling=SAMPLED), "short": ShortThoughtAgent("short", sampling=SAMPLED)}
    runner = RolloutRunner(lambda: ForcedTurnsEnv(agents, max_turns=turns, max_total_tokens=4096), agents,
                           {"long": engine, "short": engine})
    tasks = [Problem(f"p{i}", f"What is {i} + {i * 3}?", str(4 * i)) for i in range(problems)]
    return runner.run(tasks, group), engine


def _flat(groups):
    return [turn for group in groups for episode in group for turn in episode.turns]


def test_rollout_with_reuse_matches_full_prefill(tiny):
    """Same seeds, same requests: the same tokens and log-probs with and without reuse, and every
    turn after an agent's first prefills only its new tokens."""
    reused, fast = _episodes(32768, tiny)
    plain, slow = _episodes(0, tiny)
    assert isinstance(fast, SessionEngine)
    fast_turns, slow_turns = _flat(reused), _flat(plain)
    assert len(fast_turns) == len(slow_turns) == 3 * 2 * 5
    assert [t.action_ids for t in fast_turns] == [t.action_ids for t in slow_turns]
    assert [t.prompt_ids for t in fast_turns] == [t.prompt_ids for t in slow_turns]
    for a, b in zip(fast_turns, slow_turns):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    assert slow.stats.reused_tokens == slow.stats.duplicate_tokens == 0
    assert slow.stats.prefill_tokens == slow.stats.prompt_tokens
    assert fast.stats.prompt_tokens == slow.stats.prompt_tokens
    # every prompt token was run in its row, taken from a cache or run in the row of a group mate asking for the
    # same prompt (each agent's first turn: 2 samples per problem); shared openings ran once each
    assert (fast.stats.prefill_tokens - fast.stats.openings_encoded + fast.stats.reused_tokens
            + fast.stats.duplicate_tokens == fast.stats.prompt_tokens)
    assert fast.stats.duplicate_tokens > 0
    assert fast.stats.opening_tokens > 0 and 0 < fast.stats.openings_encoded < fast.stats.opening_tokens
    # Each agent's first turn (6 episodes x 2 agents) prefills everything; later turns only the new part.
    first_turns = sum(len(t.prompt_ids) for g in reused for ep in g for t in ep.turns[:2])
    assert fast.stats.prefill_tokens < first_turns + 6 * 3 * (SAMPLED.max_new_tokens + 8)
    assert len(fast.kv) == 0 and fast.kv.tokens == 0  # finished episodes freed their entries


def test_waiting_turns_join_a_running_batch_with_their_cached_prefix(tiny):
    """Six conversations on an engine of three rows, turns of different lengths: the waiting turns join
    running batches, their sessions' keys and values merged into the batch cache, and every
    conversation equals the one run alone without any cache."""
    model, tokenizer = tiny
    prompts = [tokenizer(f"Question {i}: what is {i} times {i + 2}?" + " please" * i).input_ids for i in range(6)]

    async def conversation(engine, prompt, index, session):
        for turn in range(3):
            budget = SamplingParams(temperature=0.0, max_new_tokens=2 + (index + 2 * turn) % 5)
            generation = await engine.generate(prompt, budget, session=session)
            prompt = prompt + generation.token_ids + tokenizer(" ok" * (turn + 1)).input_ids
        return prompt

    async def together(engine):
        sessions = [i if i != 4 else None for i in range(6)]  # one conversation never reuses
        return await asyncio.gather(*(conversation(engine, p, i, s) for i, (p, s) in enumerate(zip(prompts, sessions))))

    engine = HFEngine(model, tokenizer, max_batch_size=3)
    batched = asyncio.run(together(engine))
    assert engine.stats.joined > 6 and engine.stats.largest_batch == 3
    assert engine.stats.reused_tokens - engine.stats.opening_tokens > 0  # later turns came from session caches
    alone = [asyncio.run(conversation(HFEngine(model, tokenizer, kv_cache_budget=0), p, i, None))
             for i, p in enumerate(prompts)]
    assert batched == alone


def test_lru_cap_evicts_and_changes_nothing(tiny):
    """A budget smaller than the rollout's live caches evicts (those rows prefill again): same samples."""
    plain, _ = _episodes(0, tiny)
    view = max(len(t.prompt_ids) for t in _flat(plain))
    capped, engine = _episodes(10 * view, tiny)  # room for fewer than the 12 live sessions (6 episodes x 2)
    assert engine.kv.evictions > 0 and 0 < engine.stats.reused_tokens
    assert [t.action_ids for t in _flat(capped)] == [t.action_ids for t in _flat(plain)]
    for a, b in zip(_flat(capped), _flat(plain)):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_engine_reuse_with_other_sessions_batched_alongside(tiny):
    """A batch mixing rows with long, short and no cached prefix: each row equals its unbatched, uncached result."""
    model, tokenizer = tiny
    greedy = SamplingParams(temperature=0.0, max_new_tokens=6)
    prompts = [tokenizer(text).input_ids for text in ("Hello there", "a", "Solve for x: 3x + 5 = 20 quickly")]

    async def conversation(engine, prompt, index, session):
        for turn in range(3):
            generation = await engine.generate(prompt, greedy, session=session)
            prompt = prompt + generation.token_ids + tokenizer(" ok" * (index + turn + 1)).input_ids
        return prompt

    async def together(engine):
        sessions = [("a", 0), ("b", 0), None]  # the third row never reuses
        return await asyncio.gather(*(conversation(engine, p, i, s) for i, (p, s) in enumerate(zip(prompts, sessions))))

    engine = HFEngine(model, tokenizer)
    batched = asyncio.run(together(engine))
    assert engine.stats.reused_tokens > 0
    alone = [asyncio.run(conversation(HFEngine(model, tokenizer, kv_cache_budget=0), p, i, None))
             for i, p in enumerate(prompts)]
    assert batched == alone


def test_store_takes_the_common_prefix_and_evicts_least_recently_stored():
    layers = [(torch.arange(8.0).view(1, 4, 2), torch.zeros(1, 4, 2))]
    store = KVStore(budget=10)
    store.put("a", KVEntry([1, 2, 3, 4], layers))
    assert store.take("a", [1, 2, 9, 9, 9]) [0] == 2  # diverges after two tokens: those are reused
    assert store.take("a", [1, 2, 3, 4, 5]) == (0, None)  # taken entries are gone
    store.put("a", KVEntry([1, 2, 3, 4], layers))
    n, entry = store.take("a", [1, 2, 3, 4])  # the last prompt token must still run through the model
    assert n == 3 and entry.prefix(n)[0][0].shape == (1, 3, 2)
    store.put("a", KVEntry([1, 2, 3, 4], layers))
    store.put("b", KVEntry([5, 6, 7, 8], layers))
    store.put("c", KVEntry([9, 9, 9], layers))  # 11 tokens > 10: "a" goes
    assert store.take("a", [1, 2, 3, 4, 5]) == (0, None) and store.evictions == 1 and store.tokens == 7
    store.drop("b")
    assert len(store) == 1 and store.tokens == 3
    store.put("d", KVEntry(list(range(11)), layers))  # alone over the budget: not kept
    assert len(store) == 1
    with pytest.raises(ValueError, match="kv_cache_budget"):
        KVStore(-1)


def test_shared_openings_split_where_prompts_diverge():
    system_a, system_b = list(range(100, 120)), list(range(100, 104)) + list(range(200, 216))
    prompts = {0: system_a + [1, 2], 1: system_a + [3], 2: system_b + [4, 5], 3: system_b + [6], 4: [9] * 30,
               5: system_a + [7, 8]}
    # rows 0, 1, 5 share agent a's 20-token system prompt, rows 2, 3 agent b's; row 4 shares nothing
    assert sorted(shared_openings(prompts)) == [([0, 1, 5], 20), ([2, 3], 20)]
    assert shared_openings({0: system_a + [1], 1: system_a + [1]}) == [([0, 1], 20)]  # never the last token
    assert shared_openings({0: system_a[:10] + [1], 1: system_a[:10] + [2]}) == []  # too short to pay


def test_prefix_cache_serves_the_longest_stored_opening():
    layers = [(torch.zeros(1, 30, 2), torch.zeros(1, 30, 2))]
    cache = PrefixCache(entries=2, min_tokens=4)
    system, longer = KVEntry(list(range(20)), layers), KVEntry(list(range(20)) + [50] * 5, layers)
    cache.put(system)
    cache.put(longer)
    assert cache.take(list(range(20)) + [50, 50, 7]) == (22, longer)  # up to where they differ
    assert cache.take(list(range(30)))[0] == 20
    assert cache.take(list(range(10)))[0] == 9  # never a prompt's last token
    assert cache.take([1, 2, 3, 4, 5]) == (0, None)
    cache.put(KVEntry([7] * 8, layers))  # a third opening evicts the least recently used
    assert len(cache) == 2 and cache.take([7] * 9)[0] == 8


def test_an_update_in_place_invalidates_the_cached_keys(tiny):
    """After the weights change, a repeated request equals an uncached engine's answer on the new weights."""
    model, tokenizer = tiny
    model = copy.deepcopy(model)
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    prompts = [tokenizer("You are a careful solver of problems. " * 3 + q).input_ids for q in ("2+2?", "3+5?", "7*6?")]

    async def answer(engine):
        return [g.token_ids for g in await asyncio.gather(*(engine.generate(p, greedy) for p in prompts))]

    engine = HFEngine(model, tokenizer)
    asyncio.run(answer(engine))
    assert engine.stats.opening_tokens > 0 and len(engine.openings) == 1
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    again = asyncio.run(answer(engine))
    assert again == asyncio.run(answer(HFEngine(model, tokenizer, kv_cache_budget=0)))


def test_a_policy_step_invalidates_the_engines_cached_keys(tiny):
    """The trainer's optimiser step (torch's fused AdamW writes without counting in-place versions) still
    makes the engine drop keys and values computed with the old weights."""
    from longshort.algos import ppo_clip_loss
    from longshort.config import TrainerConfig
    from longshort.episode import TrainingSample
    from longshort.trainers.policy import MicroBatch, Policy

    model, tokenizer = tiny
    model = copy.deepcopy(model)
    policy = Policy("long", model, tokenizer, TrainerConfig(lr=0.05), temperature=1.0, optimizer_steps=1)
    assert policy.optimizer.defaults["fused"]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=8)
    prompts = [tokenizer("You are a careful solver of problems. " * 3 + q).input_ids for q in ("2+2?", "3+5?")]

    async def answer(engine):
        return [g.token_ids for g in await asyncio.gather(*(engine.generate(p, greedy) for p in prompts))]

    engine = HFEngine(model, tokenizer)
    first = asyncio.run(answer(engine))
    assert len(engine.openings) == 1
    ids = prompts[0] + first[0]
    sample = TrainingSample("long", ids, [0] * len(prompts[0]) + [1] * len(first[0]), [-1.0] * len(ids), advantage=1.0)
    batch = MicroBatch.collate([sample], policy.pad_id, policy.device)
    policy.train_mode()
    logprobs, _ = policy.logprobs(batch)
    ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, batch.action_mask, clip_eps=0.2,
                  normalizer=float(batch.action_mask.sum())).loss.backward()
    policy.step()
    policy.eval_mode()
    assert asyncio.run(answer(engine)) == asyncio.run(answer(HFEngine(model, tokenizer, kv_cache_budget=0)))


@pytest.mark.parametrize("attention", ["sdpa", "longshort_decode"])
def test_in_place_decode_cache_samples_as_transformers_cache_does(tiny, monkeypatch, attention):
    """Decode steps write into a buffer with free positions (``decode_cache``) instead of ``torch.cat``:
    with rows leaving the batch, session caches, shared openings and a buffer grown every 3 positions,
    the same tokens and log-probs as transformers' ``DynamicCache``, under either attention."""
    from longshort.engines import decode_cache, hf

    model = tiny[0]
    model.set_attn_implementation(attention)
    monkeypatch.setattr(hf, "use_for_decoding", lambda model: model.config._attn_implementation == attention)
    monkeypatch.setattr(decode_cache.GrowingLayer, "HEADROOM", 3)
    calls = {"update": 0, "_grown": 0}  # GrowingLayer methods, counted
    for name in calls:
        def counted(self, *args, _real=getattr(decode_cache.GrowingLayer, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(decode_cache.GrowingLayer, name, counted)
    grown, engine = _episodes(32768, tiny)
    with monkeypatch.context() as patch:
        patch.setattr(hf, "masks_free_positions", lambda model: False)
        plain, _ = _episodes(32768, tiny)
    assert engine.stats.reused_tokens > 0 and engine.stats.opening_tokens > 0
    growths = calls["_grown"] / 2  # a key and a value buffer per growth
    assert 0 < growths < calls["update"]  # buffers grew, and the other steps wrote in place
    assert [t.action_ids for t in _flat(grown)] == [t.action_ids for t in _flat(plain)]
    for a, b in zip(_flat(grown), _flat(plain)):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)


def test_in_place_decode_cache_only_for_attentions_that_apply_the_mask():
    from types import SimpleNamespace

    from longshort.engines.decode_cache import masks_free_positions

    def model(attention):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation=attention))

    assert all(masks_free_positions(model(name)) for name in ("sdpa", "eager", "longshort_decode"))
    assert not any(masks_free_positions(model(name)) for name in ("flash_attention_2", "flex_attention", None))


def test_growing_layer_reports_the_key_length_it_returns_and_keeps_the_valid_part():
    """The invariant the in-place cache rests on: the mask is built for exactly the keys attention gets,
    and ``keys`` / ``values`` equal what ``torch.cat`` would hold, across growth and rows leaving."""
    from transformers.cache_utils import DynamicLayer

    from longshort.engines.decode_cache import GrowingLayer

    class Small(GrowingLayer):
        HEADROOM = 2

    torch.manual_seed(0)
    ours, theirs, rows = Small(), DynamicLayer(), 4
    for step, new in enumerate([5, 1, 1, 1, 3, 1, 1]):
        keys, values = torch.randn(rows, 2, new, 8), torch.randn(rows, 2, new, 8)
        length, offset = ours.get_mask_sizes(new)
        full_keys, full_values = ours.update(keys, values)
        theirs.update(keys, values)
        assert offset == 0 and full_keys.shape[-2] == full_values.shape[-2] == length
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
        free = full_keys[..., ours.get_seq_length():, :]
        assert not free.any()  # free positions are zeros: a masked 0 weight times garbage could still be NaN
        if step == 3:  # rows 0 and 2 leave the batch
            index = torch.tensor([1, 3])
            ours.batch_select_indices(index)
            theirs.batch_select_indices(index)
            rows = 2
            assert torch.equal(ours.keys, theirs.keys) and ours.get_mask_sizes(1)[0] > ours.get_seq_length()
