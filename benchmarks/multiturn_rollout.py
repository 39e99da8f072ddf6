"""Multi-turn rollout speed with and without KV-cache reuse across an agent's turns, in one process.

Issue requirement: 32 episodes of the Long-Short protocol forced to run 6 turns with growing
transcripts, with and without reuse; print the prefill tokens computed, tokens/s and the ratio
(target: at least 2x faster with reuse on the CPU), and how the gain grows with the number of turns.

Setup: SmolLM2-135M plays both agents through one shared HF engine (as evaluation does), 8 synthetic
problems x 4 samples, the paper's system prompts. The env ignores format failures, so every episode
runs exactly ``--turns`` turns whatever the untrained model writes, and each turn appends up to
``--max-new-tokens`` tokens to both agents' views. Without reuse every turn prefills the agent's whole
view; with reuse (``rollout.kv_cache_budget``, here ``--budget``: room for all 64 live sessions, 32
episodes x 2 agents) only what was added since its last turn. Both runs use
the same seed, so they sample the same tokens (``tests/test_kv_reuse.py`` checks that); the table
says so in its ``same tokens`` column.

How the gain grows with the number of turns comes from the same runs: the env records when the
last episode finished each turn, so the time of the first k turns is the time a k-turn rollout takes
(every turn is one batch of all 32 episodes). Runs alternate (without, with, without, ...) and the
best of ``--repeats`` counts for each, so both sides see the same load on a shared machine: read the
ratio, not the absolute rates. CPU seconds (``time.process_time``: the work this process did, whatever
else runs on the machine) give the steadier ratio on a shared CPU; with ``OMP_NUM_THREADS=1`` they
are the compute.

    python benchmarks/multiturn_rollout.py                    # 6 turns, gain after each
    python benchmarks/multiturn_rollout.py --turns 8 --max-new-tokens 128
    python benchmarks/multiturn_rollout.py --tiny             # seconds: a tiny random model, smoke test
"""
from __future__ import annotations

import argparse
import time

import torch

from agents import LongThoughtAgent, ShortThoughtAgent
from longshort.engines import HFEngine, SamplingParams
from longshort.models import load_model, tiny_model
from longshort.rollout import RolloutRunner
from longshort.data.synthetic import synthetic_problems

from forced_turns import ForcedTurnsEnv  # benchmarks/, beside this script

PROBLEMS, SAMPLES = 8, 4


def rollout(model, tokenizer, problems, turns: int, budget: int, args) -> dict:
    """One rollout of every problem x SAMPLES; its time, token counts and the sampled tokens."""
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    agents = {"long": LongThoughtAgent("long", sampling=sampling), "short": ShortThoughtAgent("short", sampling=sampling)}
    engine = HFEngine(model, tokenizer, max_batch_size=PROBLEMS * SAMPLES, seed=args.seed, kv_cache_budget=budget)
    runner = RolloutRunner(lambda: ForcedTurnsEnv(agents, max_turns=turns, max_total_tokens=100_000), agents,
                           {"long": engine, "short": engine})
    ForcedTurnsEnv.finished = []
    began, cpu_began = time.perf_counter(), time.process_time()
    groups = runner.run(problems, SAMPLES)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    episodes = [episode for group in groups for episode in group]
    return {"seconds": seconds, "cpu": cpu, "stats": engine.stats, "tokens": [t.action_ids for ep in episodes for t in ep.turns],
            "through": [t - began for t, _ in ForcedTurnsEnv.finished],  # seconds until turn k + 1 was done
            "cpu_through": [c - cpu_began for _, c in ForcedTurnsEnv.finished],
            "views": [sum(len(ep.turns[k].prompt_ids) for ep in episodes) / len(episodes) for k in range(turns)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory or Hub id")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native, as the tiny recipe), bf16 or fp32")
    parser.add_argument("--turns", type=int, default=6, help="turns per episode")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per turn at most")
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=1, help="alternating timed runs of each side; the best counts")
    parser.add_argument("--budget", type=int, default=1 << 18,
                        help="rollout.kv_cache_budget of the reuse side, in tokens: enough for all 64 live sessions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model, tokenizer = tiny_model(seed=args.seed) if args.tiny else load_model(args.model, dtype=args.dtype, device="cpu")
    problems = synthetic_problems(PROBLEMS, min_steps=1, max_steps=3, seed=args.seed)
    print(f"model={'tiny' if args.tiny else args.model} dtype={next(model.parameters()).dtype} "
          f"{PROBLEMS} problems x {SAMPLES} samples, <= {args.max_new_tokens} tokens a turn, "
          f"threads={torch.get_num_threads()}")
    rollout(model, tokenizer, problems[:2], 2, args.budget, args)  # warm-up (allocator, first-call costs)

    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for side, budget in (("full", 0), ("reuse", args.budget)):
            run = rollout(model, tokenizer, problems, args.turns, budget, args)
            print(f"  {side:5s} {run['seconds']:6.1f} s, {run['cpu']:6.1f} CPU s", flush=True)
            if side not in best or run["seconds"] < best[side]["seconds"]:
                best[side] = run
    full, reuse = best["full"], best["reuse"]
    same = sum(a == b for a, b in zip(full["tokens"], reuse["tokens"]))
    print(f"\nturns with the same tokens with and without reuse: {same} of {len(full['tokens'])} "
          "(bf16: keys and values computed while decoding and in a prefill differ by rounding, so a sample "
          "can flip and its episode diverge; fp32 matches exactly, tests/test_kv_reuse.py)")
    print(f"{'side':>6} {'prefill tok':>12} {'reused tok':>11} {'generated':>10} {'s':>8} {'gen tok/s':>10} "
          f"{'CPU s':>8} {'gen tok/CPU s':>14}")
    for side, run in best.items():
        stats = run["stats"]
        print(f"{side:>6} {stats.prefill_tokens:12d} {stats.reused_tokens:11d} {stats.generated_tokens:10d} "
              f"{run['seconds']:8.1f} {stats.generated_tokens / run['seconds']:10.1f} {run['cpu']:8.1f} "
              f"{stats.generated_tokens / run['cpu']:14.1f}")
    print(f"\nspeed-up with reuse over {args.turns} turns: {full['seconds'] / reuse['seconds']:.2f}x wall-clock, "
          f"{full['cpu'] / reuse['cpu']:.2f}x CPU time\n")
    print(f"{'turns':>5} {'mean view':>10} {'full s':>8} {'reuse s':>8} {'speed-up':>9} {'full CPU s':>11} "
          f"{'reuse CPU s':>12} {'CPU speed-up':>13}   (first k turns of the same runs)")
    for k in range(args.turns):
        print(f"{k + 1:5d} {full['views'][k]:10.0f} {full['through'][k]:8.1f} {reuse['through'][k]:8.1f} "
              f"{full['through'][k] / reuse['through'][k]:8.2f}x {full['cpu_through'][k]:11.1f} "
              f"{reuse['cpu_through'][k]:12.1f} {full['cpu_through'][k] / reuse['cpu_through'][k]:12.2f}x")


if __name__ == "__main__":
    main()
