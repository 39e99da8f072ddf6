"""Rollout throughput: the embedded engine (and the rollout runner) against a bare ``model.generate``.

Issue requirement: for batch 32 on this CPU, print the runner's tokens/s and a bare
``model.generate`` call's on the same prompts, and their ratio; the runner must be within 1.5x of
the bare call. The runner plays single-turn episodes with the baseline agent whose system prompt
is the bare call's, so both decode exactly the same prompts; it adds everything a rollout does
(env, agent views, grading in the verifier's worker processes, reward terms). The bare call is the plain-transformers reference: one left-padded batch, the same
sampling settings and budget. It keeps decoding finished rows (as padding) until the
longest row ends, while the engine drops them, so the engine can be faster than the bare call.

    python benchmarks/rollout_throughput.py                 # SmolLM2-135M, batch 32, 128 new tokens
    python benchmarks/rollout_throughput.py --dtype bf16 --stop
    python benchmarks/rollout_throughput.py --tiny          # seconds: a tiny random model, for a smoke test

Only generated tokens count (each row up to and including its EOS or stop token); prompts are the
built-in synthetic word problems rendered with the model's chat template, so nothing is downloaded.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Awaitable, Callable

import torch

from agents import SingleAgent
from envs import SingleTurnEnv
from longshort.data import Problem
from longshort.engines import HFEngine, SamplingParams, model_thread
from longshort.models import load_model, tiny_model
from longshort.rollout import RolloutRunner
from longshort.data.synthetic import synthetic_problems

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
STOPS = ("</think>", "</answer>", "</rethink>")


def render_prompts(tokenizer, problems: list[Problem], system: str = SYSTEM) -> list[list[int]]:
    """Each problem as the chat-templated prompt a single agent with ``system`` as its prompt would see."""
    prompts = []
    for problem in problems:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": problem.prompt}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        prompts.append(list(rendered["input_ids"]))
    return prompts


def bare_generate(model, tokenizer, prompts: list[list[int]], sampling: SamplingParams) -> tuple[int, float]:
    """One ``model.generate`` call on the left-padded batch; returns (generated tokens, seconds)."""
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad)
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                      top_k=sampling.top_k)  # 0 disables; None would mean HF's default of 50
    else:
        kwargs.update(do_sample=False)
    if sampling.stop:
        kwargs.update(stop_strings=list(sampling.stop), tokenizer=tokenizer)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device), **kwargs)
    seconds = time.perf_counter() - start
    # Rows that ended early are padded with pad_token_id afterwards; count up to the first EOS or stop.
    eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
              else [model.generation_config.eos_token_id]) | {tokenizer.eos_token_id}
    tokens = 0
    for row in out[:, width:].tolist():
        for n, token in enumerate(row, 1):
            if token in eos or (sampling.stop and any(s in tokenizer.decode(row[:n]) for s in sampling.stop)):
                break
        tokens += n
    return tokens, seconds


def time_async(run: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    """Time one call of an async callable that returns how many tokens it generated.

    This is the plug-in point for the rollout runner: wrap one rollout of the same prompts, e.g.
    ``time_async(lambda: runner_tokens(runner, problems))``, and report it like the engine below.
    """
    start = time.perf_counter()
    tokens = model_thread.run(run())
    return tokens, time.perf_counter() - start


def engine_generate(engine: HFEngine, prompts: list[list[int]],
                    sampling: SamplingParams) -> Callable[[], Awaitable[int]]:
    """All prompts as concurrent requests, as a rollout's episodes issue them."""
    async def run() -> int:
        results = await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))
        return sum(len(r.token_ids) for r in results)

    return run


def runner_rollout(runner: RolloutRunner, problems: list[Problem]) -> Callable[[], Awaitable[int]]:
    """One rollout of every problem through the full runner: env, agent views, grading, rewards."""
    async def run() -> int:
        groups = await runner.arun(problems, group_size=1)
        return sum(episode.tokens() for group in groups for episode in group)

    return run


def single_turn_runner(engine: HFEngine, sampling: SamplingParams) -> RolloutRunner:
    """The runner with the single-turn baseline agent, prompted exactly like the bare call."""
    agent = SingleAgent("single", sampling=sampling, system_prompt=SYSTEM)
    agent.sampling = dataclasses.replace(agent.sampling, stop=sampling.stop)
    agents = {"single": agent}
    return RolloutRunner(lambda: SingleTurnEnv(agents, max_total_tokens=sampling.max_new_tokens), agents,
                         {"single": engine}, reward_weights={"single": {"correctness": 1.0, "format": 1.0,
                                                                        "length": 1.0}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory or Hub id")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model (smoke test)")
    parser.add_argument("--dtype", default="fp32", help="fp32, bf16 or auto")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--stop", action="store_true", help=f"stop strings {STOPS} in both runs")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved timed runs of each; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, tokenizer = tiny_model(seed=args.seed) if args.tiny else load_model(args.model, dtype=args.dtype,
                                                                                device="cpu")
    torch.manual_seed(args.seed)
    problems = synthetic_problems(args.batch, min_steps=1, max_steps=3, seed=args.seed)
    prompts = render_prompts(tokenizer, problems)
    sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                              stop=STOPS if args.stop else ())
    engine = HFEngine(model, tokenizer, max_batch_size=args.batch, seed=args.seed)
    runner = single_turn_runner(engine, sampling)
    print(f"model={'tiny' if args.tiny else args.model} dtype={next(model.parameters()).dtype} batch={args.batch} "
          f"max_new_tokens={args.max_new_tokens} T={args.temperature} stops={bool(args.stop)} "
          f"threads={torch.get_num_threads()} prompt tokens={min(map(len, prompts))}-{max(map(len, prompts))}")

    # Each entry times one generation of all prompts and returns (generated tokens, seconds).
    contenders: dict[str, Callable[[], tuple[int, float]]] = {
        "bare model.generate": lambda: bare_generate(model, tokenizer, prompts, sampling),
        f"HFEngine ({args.batch} concurrent)": lambda: time_async(engine_generate(engine, prompts, sampling)),
        "rollout runner": lambda: time_async(runner_rollout(runner, problems)),
    }
    warm = SamplingParams(temperature=args.temperature, max_new_tokens=4)
    bare_generate(model, tokenizer, prompts, warm)
    time_async(engine_generate(engine, prompts, warm))
    time_async(runner_rollout(single_turn_runner(engine, warm), problems))  # starts the verifier's workers
    engine.stats = type(engine.stats)()

    # Interleaved repeats, best rate kept: other processes on a shared CPU slow single runs a lot.
    runs: dict[str, list[tuple[int, float]]] = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, measure in contenders.items():
            runs[name].append(measure())
    bare_rate = None
    for name, results in runs.items():
        tokens, seconds = max(results, key=lambda r: r[0] / r[1])
        rate = tokens / seconds
        bare_rate = bare_rate or rate
        print(f"{name:<28} {tokens:6d} tokens in {seconds:6.2f} s = {rate:7.1f} tokens/s   "
              f"bare/this = {bare_rate / rate:.2f}x   (all runs: "
              f"{', '.join(f'{t / s:.0f}' for t, s in results)} tokens/s)")
    print(f"engine stats over {args.repeats} runs: {engine.stats}")


if __name__ == "__main__":
    main()
