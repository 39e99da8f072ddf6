"""``model_thread.run``: the engines' forward passes happen in the calling thread (one OpenMP team on a
CPU), with the same results as decoding in a worker thread; two engines still interleave step by step;
errors and Ctrl-C reach the caller and leave no thread behind."""
from __future__ import annotations

import asyncio
import threading

import pytest

from agents import LongThoughtAgent, ShortThoughtAgent
from envs.long_short import LongShortEnv
from longshort.data import Problem
from longshort.engines import HFEngine, SamplingParams, model_thread
from longshort.models import tiny_model
from longshort.rollout import RolloutRunner
from scripted import varied_tiny_model

SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=10)


@pytest.fixture(scope="module")
def tiny():
    return varied_tiny_model()


def threads_of_forwards(model) -> tuple[list[int], object]:
    """The thread ids of ``model``'s forward passes, and the hook's handle (``.remove()`` when done)."""
    seen: list[int] = []
    return seen, model.register_forward_pre_hook(lambda module, args: seen.append(threading.get_ident()))


def long_short_runner(tiny, seed: int) -> RolloutRunner:
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer, seed=seed)
    agents = {"long": LongThoughtAgent("long", sampling=SAMPLED), "short": ShortThoughtAgent("short", sampling=SAMPLED)}
    return RolloutRunner(lambda: LongShortEnv(agents, max_turns=4, max_total_tokens=256), agents,
                         {"long": engine, "short": engine})


PROBLEMS = [Problem(f"p{i}", f"What is {i} + {2 * i}?", str(3 * i)) for i in range(3)]


def test_a_rollout_runs_the_model_in_the_calling_thread_with_the_same_samples(tiny):
    seen, hook = threads_of_forwards(tiny[0])
    try:
        groups = long_short_runner(tiny, seed=5).run(PROBLEMS, 2)  # model_thread.run
        in_run = set(seen)
        seen.clear()
        plain = asyncio.run(long_short_runner(tiny, seed=5).arun(PROBLEMS, 2))  # a worker thread decodes
    finally:
        hook.remove()
    assert in_run == {threading.get_ident()}
    assert threading.get_ident() not in set(seen)
    turns = [[(t.role, t.action_ids, t.logprobs) for t in e.turns] for g in groups for e in g]
    assert turns == [[(t.role, t.action_ids, t.logprobs) for t in e.turns] for g in plain for e in g]
    assert not [t for t in threading.enumerate() if t.name == "longshort-episodes"]


def test_two_engines_interleave_their_steps_in_the_one_thread(tiny):
    """Two agents' models in one run: their decode steps alternate (neither waits for the other's whole
    batch), and each engine's results equal its results alone."""
    other = tiny_model(seed=1)
    prompts = [tiny[1](text).input_ids for text in ("Hello there", "Solve for x: 3x + 5 = 20", "a")]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda module, args, name=name: order.append(name))
             for name, m in (("first", tiny[0]), ("second", other[0]))]

    async def both(first, second):
        return await asyncio.gather(asyncio.gather(*(first.generate(p, greedy) for p in prompts)),
                                    asyncio.gather(*(second.generate(p, greedy) for p in prompts)))

    try:
        together = model_thread.run(both(HFEngine(*tiny), HFEngine(*other)))
    finally:
        for hook in hooks:
            hook.remove()
    assert order.count("first") == order.count("second") == 24  # a prefill and 23 decode steps each
    # an engine's first step prefills and decodes; from the second engine's next step on, until the first
    # engine is done, they alternate (the second may start a few steps late: its requests reach the thread later)
    both = order[order.index("second") + 2: len(order) - order[::-1].index("first")]
    assert len(both) >= 20 and all(a != b for a, b in zip(both, both[1:]))

    async def alone(engine):
        return await asyncio.gather(*(engine.generate(p, greedy) for p in prompts))

    assert [[r.token_ids for r in rs] for rs in together] == [
        [r.token_ids for r in model_thread.run(alone(HFEngine(*model)))] for model in (tiny, other)]


def test_the_result_and_errors_of_the_coroutine_reach_the_caller():
    async def answer():
        await asyncio.sleep(0)
        return 42

    async def fails():
        raise ValueError("from the episodes")

    assert model_thread.run(answer()) == 42
    with pytest.raises(ValueError, match="from the episodes"):
        model_thread.run(fails())


def test_an_error_in_a_forward_pass_fails_the_rollout(tiny):
    def broken(module, args):
        if broken.calls == 3:  # a decode step, not the prefill: raised from the calling thread's step
            raise RuntimeError("out of memory (simulated)")
        broken.calls += 1

    broken.calls = 0
    hook = tiny[0].register_forward_pre_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            long_short_runner(tiny, seed=0).run(PROBLEMS, 2)
    finally:
        hook.remove()
    assert not [t for t in threading.enumerate() if t.name == "longshort-episodes"]


def test_ctrl_c_during_a_decode_step_stops_the_run_and_its_thread(tiny):
    """KeyboardInterrupt arrives in the calling thread (here: inside a forward pass it runs): the run
    raises it, the episodes are cancelled and their thread ends, and the engine serves the next run."""
    def interrupted(module, args):
        interrupted.calls += 1
        if interrupted.calls == 4:
            raise KeyboardInterrupt

    interrupted.calls = 0
    runner = long_short_runner(tiny, seed=0)
    hook = tiny[0].register_forward_pre_hook(interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(PROBLEMS, 2)
    finally:
        hook.remove()
    assert not [t for t in threading.enumerate() if t.name == "longshort-episodes"]
    assert len(runner.run(PROBLEMS[:1], 2)[0]) == 2
