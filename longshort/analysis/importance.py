"""Monte Carlo thought importance (Long-Short, section 2) and its command line.

RECONSTRUCTION, not the paper's code: the paper's scoring code is not released and its formula could
not be read. What is confirmed: rollouts are run at each thought, effectiveness is N_right / N_sum,
and a decay term delta(y_i) favours thoughts reached with shorter context; the joint metric is
"theoretically bounded". This module implements the documented reconstruction:

- prefix i = question, ``<think>\\n``, thoughts 1..i, ``\\n</think>\\n\\n`` (``ChainFormat``); N answers
  are sampled from it and graded with ``longshort.verify``: ``A_i = N_right / N_sum``;
- ``y_i`` = tokens of thoughts 1..i; ``delta(y_i) = 1 - y_i / y_K`` (linear) or ``exp(-lam * y_i / y_K)``
  (the default: the linear decay is 0 at the last thought, so its score says nothing);
- the gain of thought i is what it adds to the accuracy: ``g_i = A_i - A_(i-1)``, with ``A_0`` the
  accuracy after the empty prefix (no thought at all, reported as ``baseline``) for the first one;
- ``S_i = g_i * delta(y_i)``, so ``-1 <= S_i <= 1`` and ``|S_i| <= |g_i|``.

Scoring by the gain is OUR READING of "the effectiveness of each thought", not a confirmed formula.
The other reading, ``S_i = A_i * delta(y_i)``, is cumulative: once the answer first appears every
later thought (rechecks, summaries) inherits its prefix's accuracy, and the empty-thinking accuracy
is never used, although the paper's Figure 2 finds its best accuracy there. The raw ``A_i`` are kept
with every score (``accuracy``), so either reading can be recomputed (``rescore``).

    python -m longshort.analysis.importance --limit 16 --out runs/importance
    python -m longshort.analysis.importance --chunks runs/chunk/chunks.jsonl --out runs/importance
"""
from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from longshort.analysis import plots
from longshort.analysis.chains import ChainFormat
from longshort.engines import model_thread
from longshort.engines.base import Engine, SamplingParams
from longshort.verify import Verifier

DECAYS = ("exp", "linear")


def decay(tokens: int, total: int, kind: str = "exp", lam: float = 1.0) -> float:
    """delta(y) in [0, 1], decreasing in the context length ``tokens`` out of the chain's ``total``."""
    if total <= 0:
        return 1.0
    ratio = min(1.0, max(0.0, tokens / total))
    if kind == "linear":
        return 1.0 - ratio
    if kind == "exp":
        return math.exp(-lam * ratio)
    raise ValueError(f"unknown decay {kind!r}; use one of {', '.join(DECAYS)}")


@dataclass
class ThoughtScore:
    index: int  # 0-based; the prefix ends with this thought
    kind: str
    text: str
    tokens: int  # y_i: tokens of thoughts 0..index
    n_right: int
    n_sum: int
    accuracy: float  # A_i
    decay: float  # delta(y_i)
    gain: float  # g_i = A_i - A_(i-1), A_0 = the baseline
    score: float  # S_i = g_i * delta(y_i)


@dataclass
class ImportanceResult:
    id: str
    question: str
    answer: str
    baseline: float  # accuracy of answering with an empty thinking
    thoughts: list[ThoughtScore]

    def to_dict(self) -> dict:
        return asdict(self)


async def score_thoughts(engine: Engine, problem_id: str, question: str, gold: str, thoughts: Sequence[str],
                         kinds: Sequence[str] | None = None, *, n_rollouts: int = 5,
                         sampling: SamplingParams, verifier: Verifier, fmt: ChainFormat = ChainFormat(),
                         decay_kind: str = "exp", lam: float = 1.0,
                         choices: list[str] | None = None) -> ImportanceResult:
    """Roll out ``n_rollouts`` answers after every prefix of ``thoughts`` (and the empty one) and score.

    All ``(K + 1) * n_rollouts`` requests go to the engine at once.
    """
    tokenizer = engine.tokenizer
    prefixes = ["".join(thoughts[:i]) for i in range(len(thoughts) + 1)]
    prompts = [fmt.answer_prompt_ids(tokenizer, question, prefix.rstrip()) for prefix in prefixes]
    generations = await asyncio.gather(*(engine.generate(p, sampling) for p in prompts for _ in range(n_rollouts)))
    right = [sum(verifier.grade(fmt.graded(g.text), gold, choices).correct
                 for g in generations[i * n_rollouts:(i + 1) * n_rollouts]) for i in range(len(prefixes))]
    lengths = [len(tokenizer.encode(prefix, add_special_tokens=False)) for prefix in prefixes]
    scores = []
    for i, text in enumerate(thoughts):
        accuracy, before = right[i + 1] / n_rollouts, right[i] / n_rollouts
        factor = decay(lengths[i + 1], lengths[-1], decay_kind, lam)
        scores.append(ThoughtScore(i, kinds[i] if kinds else "", text, lengths[i + 1], right[i + 1], n_rollouts,
                                   accuracy, factor, accuracy - before, (accuracy - before) * factor))
    return ImportanceResult(problem_id, question, gold, right[0] / n_rollouts, scores)


SCORING = "marginal_gain"  # the rule S_i follows; progress files from before it say "cumulative"


def rescore(scored: dict) -> dict:
    """A scored record (``ImportanceResult.to_dict()``, or one written before the gain existed, whose
    ``score`` was ``A_i * delta(y_i)``) with ``gain`` and ``score`` computed from its raw ``A_i``,
    baseline and decays under ``SCORING``: old progress lines need no new rollouts."""
    thoughts, before = [], scored["baseline"]
    for thought in scored["thoughts"]:
        gain = thought["accuracy"] - before
        thoughts.append({**thought, "gain": gain, "score": gain * thought["decay"]})
        before = thought["accuracy"]
    return {**scored, "thoughts": thoughts}


# ------------------------------------------------------------------------------------------- CLI


async def _thoughts_from_model(args: argparse.Namespace, engine: Engine, fmt: ChainFormat) -> list[dict]:
    """The model's own chains for the chosen problems, cut into steps and grouped by the rule chunker."""
    from longshort.analysis.chains import generate_chains
    from longshort.analysis.chunking import RuleChunker, thoughts_from_blocks
    from longshort.analysis.cli_common import problems_from_args
    from longshort.analysis.steps import StepSegmenter

    problems = problems_from_args(args)
    chains = await generate_chains(engine, problems, SamplingParams(
        temperature=args.temperature, top_p=0.95, max_new_tokens=args.chain_tokens), fmt)
    segmenter, chunker = StepSegmenter(engine.tokenizer), RuleChunker(min_steps=1, max_steps=args.thought_steps)
    records = []
    for chain in chains:
        steps = segmenter.segment(chain.ids)
        thoughts = thoughts_from_blocks(steps, chunker.chunk(steps))
        records.append({"id": chain.problem_id, "question": chain.question, "answer": chain.gold,
                        "thoughts": [{"text": t.text, "kind": t.kind} for t in thoughts]})
    return records


def plot_importance(results: Sequence[ImportanceResult], path: str | Path) -> Path:
    """S_i and A_i against the thought index: one faint line per chain, the mean per index on top,
    and the empty-thinking accuracy as a dashed reference (the paper's Fig. 3 shape)."""
    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, attr, title in ((axes[0], "score", "joint score S_i = (A_i - A_(i-1)) * delta(y_i)"),
                            (axes[1], "accuracy", "rollout accuracy A_i")):
        by_index: dict[int, list[float]] = {}
        for r in results:
            values = [getattr(t, attr) for t in r.thoughts]
            ax.plot(range(1, len(values) + 1), values, color="tab:blue", alpha=0.15, linewidth=1)
            for i, v in enumerate(values, 1):
                by_index.setdefault(i, []).append(v)
        xs = sorted(by_index)
        ax.plot(xs, [sum(by_index[x]) / len(by_index[x]) for x in xs], color="tab:blue", marker="o", linewidth=2,
                label="mean over chains")
        if results and attr == "accuracy":
            ax.axhline(sum(r.baseline for r in results) / len(results), color="black", linestyle="--",
                       linewidth=1, label="no thinking (A_0)")
        ax.set(title=title, xlabel="thought index i", ylim=(-1.02 if attr == "score" else -0.02, 1.02))
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("value")
    return plots.save(fig, path)


def main(argv: list[str] | None = None) -> None:
    from longshort.analysis import cli_common as common

    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.importance", description=(
        "Monte Carlo thought importance: A_i, its gain over the previous prefix, delta(y_i) and S_i per "
        "thought (our reading of the paper, see the module docstring). Writes scores.jsonl and importance.png."))
    parser.add_argument("--chunks", help="JSONL from `python -m longshort.analysis.chunk`; default: the model's own "
                                         "chains for the chosen problems, grouped by the rule chunker")
    parser.add_argument("--out", default="runs/importance", help="output directory")
    parser.add_argument("--rollouts", type=int, default=5, help="N: answers sampled per prefix (the paper's Fig. 1: 5)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--answer-tokens", type=int, default=32, help="token budget of each rollout's answer")
    parser.add_argument("--chain-tokens", type=int, default=256, help="token budget of a generated chain")
    parser.add_argument("--thought-steps", type=int, default=1, help="steps per thought for generated chains "
                        "(as sft.synthesis.thought_max_steps)")
    parser.add_argument("--decay", choices=DECAYS, default="exp")
    parser.add_argument("--lam", type=float, default=1.0, help="rate of the exp decay")
    common.add_model_args(parser)
    common.add_problem_args(parser, default_limit=16)
    common.add_format_args(parser)
    args = parser.parse_args(argv)


    _, engine = common.load_engine(args)
    fmt = common.format_from_args(args)
    verifier = Verifier()
    sampling = fmt.answer_sampling(args.temperature, args.answer_tokens)

    async def run() -> list[ImportanceResult]:
        records = common.read_jsonl(args.chunks) if args.chunks else await _thoughts_from_model(args, engine, fmt)
        return await asyncio.gather(*(score_thoughts(
            engine, str(r.get("id", i)), r["question"], str(r["answer"]), [t["text"] for t in r["thoughts"]],
            [t.get("kind", "") for t in r["thoughts"]], n_rollouts=args.rollouts, sampling=sampling,
            verifier=verifier, fmt=fmt, decay_kind=args.decay, lam=args.lam) for i, r in enumerate(records)))

    results = model_thread.run(run())
    out = Path(args.out)
    common.write_jsonl((r.to_dict() for r in results), out / "scores.jsonl")
    plot_importance(results, out / "importance.png")
    for r in results:
        row = " ".join(f"{t.score:.2f}" for t in r.thoughts)
        print(f"{r.id}: baseline A_0={r.baseline:.2f}  S_i by thought: {row}")
    print(f"wrote {out / 'scores.jsonl'} and {out / 'importance.png'}")


if __name__ == "__main__":
    from longshort.analysis.cli_common import run_command

    run_command(main)
