"""Benchmark metrics from evaluation records: accuracy, pass@k, tokens, turns and failure counts.

Accuracy is pass@1 averaged over the k samples of each item, then over items (the paper's protocol
for AIME/AMC with k = 4). pass@k uses the unbiased estimator of Chen et al. (2021),
``1 - C(n - c, k) / C(n, k)`` for an item with c correct of n samples; with k = n it is "any sample
correct". Tokens are generated tokens per episode, summed over agents (the paper's efficiency
measure) and split per agent. Every record counts: an episode that raised is wrong, with zero tokens,
and listed under ``broken``.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

from longshort.evaluation.records import ERROR, Record
from longshort.evaluation.stats import mean_interval


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class SetResult:
    """The metrics of one problem set (a benchmark, or the run's held-out problems).

    ``accuracy`` and ``pass_at`` are fractions in [0, 1]; ``accuracy_stderr`` is the standard error
    of the mean over items (how far a rerun on new items could move the number) and ``accuracy_ci``
    its 95% bootstrap interval over items (``longshort.evaluation.stats``). ``outcomes`` counts how
    episodes ended, ``verdicts`` why answered episodes were graded as they were. ``by_steps`` splits
    accuracy by the number of gold solution steps of the items that record them (synthetic problems,
    GSM8K): ``{"2": {"items": 40, "accuracy": 0.3}}``; empty where the problems have none.
    """

    name: str
    items: int
    samples: int
    episodes: int
    accuracy: float
    accuracy_stderr: float
    pass_at: dict[int, float]
    tokens: float
    tokens_by_role: dict[str, float]
    turns: float
    format_failure_rate: float
    outcomes: dict[str, int]
    verdicts: dict[str, int]
    broken: list[dict] = field(default_factory=list)
    accuracy_ci: tuple[float, float] | None = None  # None in results written before intervals existed
    by_steps: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pass_at"] = {str(k): v for k, v in self.pass_at.items()}  # JSON keys are strings
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SetResult:
        ci = data.get("accuracy_ci")
        return cls(**{**data, "pass_at": {int(k): v for k, v in data["pass_at"].items()},
                      "accuracy_ci": tuple(ci) if ci else None})


def group_by_item(records: Iterable[Record]) -> dict[str, list[Record]]:
    by_item: dict[str, list[Record]] = {}
    for record in records:
        by_item.setdefault(record.id, []).append(record)
    return by_item


def item_accuracy(by_item: Mapping[str, list[Record]]) -> dict[str, float]:
    """Each item's accuracy over its samples."""
    return {item: sum(r.correct for r in rs) / len(rs) for item, rs in by_item.items()}


def per_item(records: Iterable[Record]) -> tuple[dict[str, float], dict[str, float]]:
    """(accuracy, mean generated tokens) of each item over its samples: what paired comparisons pair."""
    by_item = group_by_item(records)
    return item_accuracy(by_item), {item: sum(r.total_tokens for r in rs) / len(rs) for item, rs in by_item.items()}


def summarize(name: str, records: Iterable[Record], samples: int,
              steps: Mapping[str, int] | None = None) -> SetResult:
    """Metrics of one set from its records (every (item, sample) of the set, each once); ``steps``
    maps item ids to their number of gold solution steps, where known."""
    records = list(records)
    if not records:
        raise ValueError(f"no records to summarize for '{name}'")
    by_item = group_by_item(records)
    accuracy_of = item_accuracy(by_item)
    per_item_accuracy = list(accuracy_of.values())
    interval = mean_interval(per_item_accuracy)
    strata: dict[int, list[float]] = {}
    for item, value in accuracy_of.items():
        if steps and item in steps:
            strata.setdefault(steps[item], []).append(value)
    n_items = len(per_item_accuracy)
    stderr = statistics.stdev(per_item_accuracy) / math.sqrt(n_items) if n_items > 1 else 0.0
    ks = sorted({1, samples})
    pass_at = {k: statistics.fmean(pass_at_k(len(rs), sum(r.correct for r in rs), k) for rs in by_item.values())
               for k in ks if all(len(rs) >= k for rs in by_item.values())}
    roles = sorted({role for r in records for role in r.tokens})
    outcomes = Counter(r.outcome for r in records)
    verdicts = Counter(_verdict_kind(r.verdict) for r in records if r.verdict is not None)
    return SetResult(
        name=name, items=len(by_item), samples=samples, episodes=len(records),
        accuracy=statistics.fmean(per_item_accuracy), accuracy_stderr=stderr, pass_at=pass_at,
        tokens=statistics.fmean(r.total_tokens for r in records),
        tokens_by_role={role: statistics.fmean(r.tokens.get(role, 0) for r in records) for role in roles},
        turns=statistics.fmean(len(r.turns) for r in records),
        format_failure_rate=sum(n for reason, n in outcomes.items() if reason.startswith("format:")) / len(records),
        outcomes=dict(sorted(outcomes.items())), verdicts=dict(sorted(verdicts.items())),
        broken=[{"id": r.id, "sample": r.sample, "error": r.error} for r in records if r.outcome == ERROR],
        accuracy_ci=(interval.low, interval.high),
        by_steps={str(k): {"items": len(v), "accuracy": statistics.fmean(v)} for k, v in sorted(strata.items())},
    )


def _verdict_kind(verdict: str) -> str:
    """``error: <message>`` verdicts are counted together; the message stays in the record."""
    return "error" if verdict.startswith("error") else verdict
