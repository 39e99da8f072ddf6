"""Step entropy: one batched teacher-forced pass vs scoring step by step, on the same chains.

    python benchmarks/step_entropy_throughput.py [--model smollm2-135m] [--chains 16] [--steps 16]

The chains are built from the synthetic problems' gold solution steps (one step per sentence,
blank-line separated, several problems' solutions concatenated to reach ``--steps`` steps), so the
comparison needs no sampling and is identical between runs. The step-by-step way is what scoring
without the teacher-forced trick costs: for every step, a forward pass over the whole prefix
(question + chain up to that step), one chain at a time. Both produce the same entropies (checked).
Prints both times and the ratio (target: >= 5x).
"""
from __future__ import annotations

import argparse
import time

import torch

from longshort.analysis.chains import ChainFormat
from longshort.analysis.scoring import stepwise_token_entropies, token_entropies
from longshort.analysis.steps import StepSegmenter
from longshort.models import load_model
from longshort.data.synthetic import synthetic_problems


def build_chains(tokenizer, n_chains: int, n_steps: int):
    """(prompt_ids, chain_ids) pairs whose chains have about ``n_steps`` blank-line separated steps."""
    problems = synthetic_problems(n_chains * n_steps, min_steps=1, max_steps=4, seed=7)
    fmt = ChainFormat()
    pairs = []
    for c in range(n_chains):
        sentences: list[str] = []
        for problem in problems[c * n_steps:(c + 1) * n_steps]:
            sentences.extend(problem.meta["steps"])
        chain = "\n\n".join(sentences[:n_steps])
        pairs.append((fmt.thinking_prompt_ids(tokenizer, problems[c * n_steps].prompt),
                      tokenizer.encode(chain, add_special_tokens=False)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--steps", type=int, default=16, help="steps per chain (the ratio grows with it)")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of each way")
    args = parser.parse_args()

    model, tokenizer = load_model(args.model, dtype=args.dtype)
    segmenter = StepSegmenter(tokenizer)
    pairs = build_chains(tokenizer, args.chains, args.steps)
    steps = [segmenter.segment(chain) for _, chain in pairs]
    tokens = sum(len(p) + len(c) for p, c in pairs)
    token_entropies(model, pairs[:2])  # warm-up (allocator, kernels)

    batched_s, stepwise_s = float("inf"), float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        batched = token_entropies(model, pairs)
        batched_s = min(batched_s, time.perf_counter() - start)
        start = time.perf_counter()
        stepwise = [stepwise_token_entropies(model, p, c, s) for (p, c), s in zip(pairs, steps)]
        stepwise_s = min(stepwise_s, time.perf_counter() - start)
    differences = torch.cat([(a - b).abs() for a, b in zip(batched, stepwise)])
    # fp32 agrees to ~1e-5 bits; bf16 rounds differently for different batch shapes (~0.3 bits at worst)
    tolerance = 1.0 if next(model.parameters()).dtype == torch.bfloat16 else 1e-3

    print(f"{args.model} ({next(model.parameters()).dtype}), {len(pairs)} chains, "
          f"{sum(map(len, steps)) / len(steps):.1f} steps and {tokens / len(pairs):.0f} tokens per chain "
          f"(prompt included), torch threads {torch.get_num_threads()}")
    print(f"batched teacher-forced pass: {batched_s:.3f}s ({tokens / batched_s:.0f} tok/s)")
    print(f"step by step (prefix re-run per step): {stepwise_s:.3f}s")
    worst = float(differences.max())
    print(f"ratio: {stepwise_s / batched_s:.1f}x (target >= 5x); |difference| max {worst:.2e}, "
          f"mean {float(differences.mean()):.2e} bits ({'ok' if worst <= tolerance else 'MISMATCH'})")


if __name__ == "__main__":
    main()
