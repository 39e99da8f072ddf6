"""Why the engines' forward passes run in the calling thread (``longshort/engines/model_thread.py``).

Two measurements in one process, SmolLM2-135M (bf16 where the CPU runs it natively):

1. A decode step (the engine's path: decode attention, in-place cache, laid-out weights; batch 32,
   context 128) timed three ways, alternating: in the main thread with no other thread having run
   torch work; in a worker thread (its own OpenMP team, as when the engine decoded in
   ``asyncio.to_thread``); and in the main thread again while that worker thread is alive.
2. A rollout of ``grpo_vs_trl.py``'s configuration (8 prompts x 4 samples, 64 new tokens, one agent)
   under ``asyncio.run`` (the engine decodes in a worker thread) and under ``model_thread.run`` (in the
   calling thread), alternating; the same seeds, so the same tokens both ways (checked).

    python benchmarks/model_thread.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import threading
import time

import torch

from agents import SingleAgent
from envs import SingleTurnEnv
from longshort.data import synthetic_problems
from longshort.engines import HFEngine, SamplingParams
from longshort.engines.decode_attention import NAME
from longshort.models import load_model
from longshort.rollout import RolloutRunner

from decode_step import decode, laid_out  # benchmarks/, beside this script


class Worker:
    """A thread that runs the jobs it is given; alive (with its OpenMP team) until ``close``."""

    def __init__(self):
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            self.results.put(job())

    def __call__(self, job):
        self.jobs.put(job)
        return self.results.get()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join()


def decode_steps(model, tokenizer, repeats: int) -> None:
    model.config._attn_implementation = NAME
    texts = [p.prompt * 4 for p in synthetic_problems(32, min_steps=1, max_steps=2, seed=0)]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", truncation=True, max_length=128)

    def step_ms() -> float:
        return 1000 * decode(model, batch.input_ids, batch.attention_mask, 32, True,
                             around=lambda: laid_out(model, True))[0]

    ways: dict[str, list[float]] = {"main thread alone": [], "worker thread": [], "main, worker alive": []}
    for _ in range(repeats):
        ways["main thread alone"].append(step_ms())
        worker = Worker()
        ways["worker thread"].append(worker(step_ms))
        ways["main, worker alive"].append(step_ms())
        worker.close()
    base = statistics.median(ways["main thread alone"])
    print(f"decode step, batch 32, context 128 (median of {repeats}, ms):")
    for name, times in ways.items():
        print(f"  {name:20s} {statistics.median(times):6.1f}  ({base / statistics.median(times):.2f}x of main alone)")


def rollouts(model, tokenizer, repeats: int) -> None:
    agent = SingleAgent("single", sampling=SamplingParams(temperature=1.0, max_new_tokens=64))
    problems = synthetic_problems(8, min_steps=1, max_steps=2, seed=0)

    def runner() -> RolloutRunner:
        engine = HFEngine(model, tokenizer, seed=0)
        return RolloutRunner(lambda: SingleTurnEnv({"single": agent}, max_total_tokens=64), {"single": agent},
                             {"single": engine})

    ways = {"asyncio.run (worker thread)": lambda r: asyncio.run(r.arun(problems, 4)),
            "model_thread.run": lambda r: r.run(problems, 4)}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    tokens: dict[str, list] = {}
    for _ in range(repeats):
        for name, way in ways.items():
            began = time.perf_counter()
            groups = way(runner())
            seconds[name].append(time.perf_counter() - began)
            tokens[name] = [t.action_ids for g in groups for e in g for t in e.turns]
    assert tokens["model_thread.run"] == tokens["asyncio.run (worker thread)"], "the two ways sampled different tokens"
    count = sum(map(len, tokens["model_thread.run"]))
    base = statistics.median(seconds["asyncio.run (worker thread)"])
    print(f"rollout, 8 prompts x 4 samples, {count} tokens, the same both ways (median of {repeats}, s):")
    for name, times in seconds.items():
        print(f"  {name:28s} {statistics.median(times):6.2f}  ({base / statistics.median(times):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m", dtype="auto", device="cpu")
    print(f"SmolLM2-135M {next(model.parameters()).dtype}, threads={torch.get_num_threads()}")
    rollouts(model, tokenizer, args.repeats)
    decode_steps(model, tokenizer, args.repeats)


if __name__ == "__main__":
    main()
