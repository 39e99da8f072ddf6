"""Pruning steps to ``[SKIP]`` and answering after the pruned thinking (the step-entropy analysis).

Of a chain's N steps, the ``floor(kappa * N)`` chosen ones are replaced, whole (delimiter included,
as the released code does, so consecutive pruned steps read ``[SKIP][SKIP]``), by the placeholder;
kept steps stay verbatim and in order. Strategies: ``low`` (lowest step entropy first: the paper's
criterion), ``high`` (highest first) and ``random`` (uniform, seeded), both baselines from the paper's
Figure 1. Sorting is stable and no step is exempt, matching the released code. Several step scores
(``SCORES``: the paper's mean, the v1 sum that its Theorem 1 bounds, ``body``) can be compared in one
pass: each ranks the same chains, and a pruned thinking two scores agree on is answered once.

The pruned thinking is closed with ``\\n</think>\\n\\n`` and the same model writes the answer, which is
graded with ``longshort.verify``. Failed generations count as wrong (the released code dropped
them, inflating accuracy). Tokens are counted as the model saw them: kept steps by their own token
ids, and each ``[SKIP]`` as ``skip_tokens`` tokens (1 when it is an added token, see ``skip.py``).
"""
from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from longshort.analysis import plots
from longshort.analysis.chains import Chain, ChainFormat
from longshort.analysis.steps import Step
from longshort.config import STEP_SCORES
from longshort.engines.base import Engine, SamplingParams
from longshort.verify import Verifier

SKIP = "[SKIP]"
STRATEGIES = ("low", "random", "high")
SCORES = STEP_SCORES  # step scores to rank by (scoring.StepEntropy): the paper's is the mean
KAPPAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def prune_count(kappa: float, n_steps: int) -> int:
    """``floor(kappa * N)``, robust to float error (0.6 * 5 is 2.9999999999999996 in floating point)."""
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must lie in [0, 1], got {kappa}")
    return min(n_steps, math.floor(kappa * n_steps + 1e-9))


def select_steps(scores: Sequence[float], kappa: float, strategy: str, *, seed: int | str = 0) -> list[int]:
    """Indices (ascending) of the steps to prune from a chain whose steps have these ``scores``.

    ``seed`` drives ``random`` only; a string seed is hashed stably (unlike ``hash()``, the same in every
    process), so a chain's random baseline is reproducible from its id."""
    count = prune_count(kappa, len(scores))
    if strategy == "low":
        chosen = sorted(range(len(scores)), key=lambda i: scores[i])[:count]
    elif strategy == "high":
        chosen = sorted(range(len(scores)), key=lambda i: -scores[i])[:count]
    elif strategy == "random":
        chosen = random.Random(seed).sample(range(len(scores)), count)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    return sorted(chosen)


def prune_text(step_texts: Sequence[str], pruned: Sequence[int], placeholder: str = SKIP) -> str:
    """The compressed thinking: each pruned step (with its delimiter) becomes ``placeholder``."""
    drop = set(pruned)
    return "".join(placeholder if i in drop else text for i, text in enumerate(step_texts))


@dataclass
class PrunedAnswer:
    """One (chain, score, strategy, kappa) cell of the analysis, with the answer the model gave after it.

    ``score`` names the step score that ranked the steps (``random`` ignores it, so its answers are the
    same under every score)."""

    problem_id: str
    strategy: str
    kappa: float
    n_steps: int
    pruned: list[int]
    thinking: str
    thinking_tokens: int
    full_tokens: int
    answer: str
    extracted: str | None
    correct: bool
    score: str = "mean"

    @property
    def reduction(self) -> float:
        return 1.0 - self.thinking_tokens / self.full_tokens if self.full_tokens else 0.0


@dataclass
class Cell:
    """Accuracy and mean thinking-token reduction of one strategy at one kappa, over all chains."""

    strategy: str
    kappa: float
    accuracy: float
    thinking_tokens: float
    reduction: float
    n: int
    score: str = "mean"


async def answer_after_pruning(engine: Engine, chains: Sequence[Chain], steps: Sequence[Sequence[Step]],
                               rankings: Mapping[str, Sequence[Sequence[float]]], *,
                               kappas: Sequence[float] = KAPPAS, strategies: Sequence[str] = STRATEGIES,
                               sampling: SamplingParams, verifier: Verifier, fmt: ChainFormat = ChainFormat(),
                               seed: int = 0, skip_tokens: int = 1) -> list[PrunedAnswer]:
    """Prune every chain at every (score, strategy, kappa), let the model answer, and grade the answers.

    ``rankings`` maps a score name to each chain's per-step scores under it. Identical pruned
    thinkings of one chain (kappa 0 and 1 for every strategy, ``random`` under every score) are
    answered once and shared, so the strategies are compared on the same samples there. All requests
    go to the engine at once, so a batching engine decodes them together.
    """
    tokenizer = engine.tokenizer
    cells: list[tuple[int, str, str, float, list[int], str]] = []
    for score, scores in rankings.items():
        for c, (chain, chain_steps, chain_scores) in enumerate(zip(chains, steps, scores)):
            for strategy in strategies:
                for kappa in kappas:
                    pruned = select_steps(chain_scores, kappa, strategy, seed=f"{seed}:{chain.problem_id}")
                    cells.append((c, score, strategy, kappa, pruned,
                                  prune_text([s.text for s in chain_steps], pruned)))
    keys = sorted({(c, text) for c, _, _, _, _, text in cells})
    generations = await asyncio.gather(*(
        engine.generate(fmt.answer_prompt_ids(tokenizer, chains[c].question, text), sampling) for c, text in keys))
    answers = dict(zip(keys, generations))
    verdicts = {key: verifier.grade(fmt.graded(gen.text), chains[key[0]].gold, chains[key[0]].choices)
                for key, gen in answers.items()}
    results = []
    for c, score, strategy, kappa, pruned, text in cells:
        chain_steps = steps[c]
        full = sum(s.num_tokens for s in chain_steps)
        kept = full - sum(chain_steps[i].num_tokens for i in pruned)
        verdict, generation = verdicts[(c, text)], answers[(c, text)]
        results.append(PrunedAnswer(chains[c].problem_id, strategy, kappa, len(chain_steps), pruned, text,
                                    kept + skip_tokens * len(pruned), full, fmt.graded(generation.text),
                                    verdict.extracted, verdict.correct, score))
    return results


def summarise(results: Sequence[PrunedAnswer]) -> list[Cell]:
    """One Cell per (score, strategy, kappa), in the order they first appear."""
    groups: dict[tuple[str, str, float], list[PrunedAnswer]] = {}
    for r in results:
        groups.setdefault((r.score, r.strategy, r.kappa), []).append(r)
    cells = []
    for (score, strategy, kappa), rows in groups.items():
        full = sum(r.full_tokens for r in rows)
        kept = sum(r.thinking_tokens for r in rows)
        cells.append(Cell(strategy, kappa, sum(r.correct for r in rows) / len(rows), kept / len(rows),
                          1.0 - kept / full if full else 0.0, len(rows), score))
    return cells


STRATEGY_STYLE = {"low": ("lowest entropy first", "tab:green"), "random": ("random", "tab:gray"),
                  "high": ("highest entropy first", "tab:red")}


SCORE_LINES = dict(zip(SCORES, ("-", "--", ":", "-.")))  # one line style per step score


def plot_pruning(cells: Sequence[Cell], path: str | Path, title: str = "") -> Path:
    """Accuracy and thinking-token reduction against the pruned fraction kappa, per strategy (one line
    style per step score; ``random`` is drawn once, as it does not depend on the score)."""
    plt = plots.pyplot()
    fig, (acc_ax, red_ax) = plt.subplots(1, 2, figsize=(10, 4))
    scores = list(dict.fromkeys(c.score for c in cells))
    for score in scores:
        for strategy, (label, color) in STRATEGY_STYLE.items():
            if strategy == "random" and score != scores[0]:
                continue
            rows = sorted((c for c in cells if c.strategy == strategy and c.score == score), key=lambda c: c.kappa)
            if not rows:
                continue
            if len(scores) > 1 and strategy != "random":
                label = f"{label} ({score})"
            kappas = [c.kappa for c in rows]
            style = dict(marker="o", color=color, label=label, linestyle=SCORE_LINES.get(score, "-"))
            acc_ax.plot(kappas, [100 * c.accuracy for c in rows], **style)
            red_ax.plot(kappas, [100 * c.reduction for c in rows], **style)
    acc_ax.set(xlabel="fraction of steps pruned (kappa)", ylabel="accuracy (%)", title="answer after pruning")
    red_ax.set(xlabel="fraction of steps pruned (kappa)", ylabel="thinking tokens removed (%)",
               title="token reduction")
    for ax in (acc_ax, red_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return plots.save(fig, path)
