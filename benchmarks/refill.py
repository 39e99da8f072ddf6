"""More requests than rows: waiting requests joining a running batch, against batch after batch.

An evaluation submits hundreds of problems to an engine of 32 rows. Served batch after batch, each
batch runs until its longest row ends, with fewer and fewer rows (a 2-core CPU decodes 4 rows
barely faster than 32); with joining, a waiting request takes each finished row's place, so the
engine decodes full batches until the last requests. Both ways run here on the same engine (same
model, same seed, same prompts): "batch after batch" awaits the requests 32 at a time, which is
exactly how the engine served them before waiting requests could join. Each request samples from
its own random stream, so both ways draw the same numbers; in fp32 they produce the same tokens
(the script counts how many), in bf16 padding changes the rounding and some completions differ.

    python benchmarks/refill.py                       # SmolLM2-135M in bf16, 96 problems, 32 rows
    python benchmarks/refill.py --requests 200 --max-new-tokens 576
    python benchmarks/refill.py --tiny                # seconds: a tiny random model, for a smoke test

Prints each run's generated tokens, seconds, tokens/s, forward passes and mean rows per pass, and
the ratio of the two ways' rates over all their runs (interleaved, ``--repeats`` each).
"""
from __future__ import annotations

import argparse
import asyncio
import time

import torch

from longshort.analysis.chains import THINK_SYSTEM_PROMPT
from longshort.data.synthetic import synthetic_problems
from longshort.engines import HFEngine, SamplingParams, model_thread
from longshort.engines.base import Generation
from longshort.models import load_model, tiny_model

from rollout_throughput import render_prompts  # benchmarks/, beside this script


def serve(engine: HFEngine, prompts: list[list[int]], sampling: SamplingParams, chunk: int | None
          ) -> tuple[list[Generation], float]:
    """All prompts through ``engine``: at once (``chunk`` None), or ``chunk`` at a time, each chunk awaited."""
    async def run() -> list[Generation]:
        if chunk is None:
            return list(await asyncio.gather(*(engine.generate(p, sampling) for p in prompts)))
        results = []
        for start in range(0, len(prompts), chunk):
            results += await asyncio.gather(*(engine.generate(p, sampling) for p in prompts[start: start + chunk]))
        return results

    start = time.perf_counter()
    results = model_thread.run(run())
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory or Hub id")
    parser.add_argument("--tiny", action="store_true", help="use a tiny random model (smoke test)")
    parser.add_argument("--dtype", default="bf16", help="bf16 (the evaluations' dtype), fp32 or auto")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32, help="the engine's max_batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.3, help="the evaluations' default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each way")
    args = parser.parse_args()

    model, tokenizer = tiny_model(seed=args.seed) if args.tiny else load_model(args.model, dtype=args.dtype,
                                                                                device="cpu")
    problems = synthetic_problems(args.requests, min_steps=1, max_steps=3, seed=args.seed)
    prompts = render_prompts(tokenizer, problems, THINK_SYSTEM_PROMPT)  # the long-CoT recipe's prompt
    sampling = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    print(f"model={'tiny' if args.tiny else args.model} dtype={next(model.parameters()).dtype} "
          f"requests={args.requests} rows={args.batch} max_new_tokens={args.max_new_tokens} T={args.temperature} "
          f"threads={torch.get_num_threads()}")
    serve(HFEngine(model, tokenizer, max_batch_size=args.batch), prompts[: args.batch],
          SamplingParams(max_new_tokens=4), None)  # warm-up

    ways = {"batch after batch": args.batch, "waiting requests join": None}
    totals = {name: [0, 0.0] for name in ways}  # tokens, seconds over the repeats
    outcomes = {}
    for repeat in range(args.repeats):  # interleaved: a shared or throttled CPU drifts by 10-15% between runs
        for name, chunk in ways.items():
            engine = HFEngine(model, tokenizer, max_batch_size=args.batch, seed=args.seed)
            results, seconds = serve(engine, prompts, sampling, chunk)
            tokens = sum(len(r.token_ids) for r in results)
            totals[name][0] += tokens
            totals[name][1] += seconds
            outcomes[name] = results
            stats = engine.stats
            rows = stats.forward_rows / stats.forward_passes
            print(f"{name:<22} {tokens:6d} tokens in {seconds:7.1f} s = {tokens / seconds:6.1f} tokens/s   "
                  f"forward passes {stats.forward_passes:5d}, rows per pass {rows:5.1f}, joined {stats.joined}",
                  flush=True)
    (static_tokens, static_seconds), (joined_tokens, joined_seconds) = totals.values()
    same = sum(a.token_ids == b.token_ids for a, b in zip(*outcomes.values()))
    print(f"joining / batch after batch = {joined_tokens / joined_seconds / (static_tokens / static_seconds):.2f}x "
          f"tokens/s over {args.repeats} run(s) each; {same} of {len(prompts)} completions identical")


if __name__ == "__main__":
    main()
