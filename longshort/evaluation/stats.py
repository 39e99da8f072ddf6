"""Uncertainty of evaluation numbers: confidence intervals, and paired differences between two systems.

Two systems evaluated on the same problems are compared item by item: the difference of their
per-item accuracies (each averaged over that item's samples) is what varies, not each accuracy on
its own, so the paired interval is much narrower than two independent ones whenever the systems
tend to get the same items right. That is what decides a claim such as "within 2 points of the
baseline": the lower end of the paired 95% interval of the difference must be at or above -2 points
(``PairedDifference.within``), never the point estimate.

Intervals are percentile bootstraps over items (resampling items, not samples, since items are the
unit that a new draw of problems would change), seeded so a table renders the same numbers every
time. With one sample per item the exact McNemar test on the discordant items is reported too.
Tokens are compared the same way: the ratio of mean tokens, with a paired bootstrap interval.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0  # fixed: the same records always give the same interval
_CHUNK = 1_000  # resamples drawn at once (bounds memory at ~8 bytes x items x _CHUNK)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided ``LEVEL`` confidence interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)

    def points(self, scale: float = 100.0, digits: int = 1, sign: bool = False) -> str:
        """``12.5 [10.1, 15.0]`` (in points of ``scale``); with ``sign``, ``+1.5 [-0.4, +3.3]``."""
        form = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
        return f"{form.format(scale * self.estimate)} [{form.format(scale * self.low)}, {form.format(scale * self.high)}]"


def _resampled_means(columns: Sequence[np.ndarray], resamples: int, seed: int) -> list[np.ndarray]:
    """Means of each column over the same ``resamples`` bootstrap draws of row indices."""
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = [[] for _ in columns]
    for start in range(0, resamples, _CHUNK):
        index = rng.integers(0, n, size=(min(_CHUNK, resamples - start), n))
        for store, column in zip(out, columns):
            store.append(column[index].mean(axis=1))
    return [np.concatenate(store) for store in out]


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: Sequence[float], *, level: float = LEVEL, resamples: int = RESAMPLES,
                  seed: int = SEED) -> Interval:
    """The mean of ``values`` (one per item) with a percentile bootstrap interval over items."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("no items: an interval needs at least one")
    if data.size == 1 or np.all(data == data[0]):
        return Interval(float(data.mean()), float(data.mean()), float(data.mean()))
    [draws] = _resampled_means([data], resamples, seed)
    return Interval(float(data.mean()), *_percentiles(draws, level))


@dataclass(frozen=True)
class PairedDifference:
    """System A minus system B on the items both were evaluated on.

    ``accuracy`` is the mean per-item accuracy difference (a fraction; x100 for points) with its
    paired interval; ``tokens`` is A's mean tokens over B's, with its interval (0.2 = 80% fewer).
    ``a_better`` / ``b_better`` count the items where one system's per-item accuracy is higher
    (the discordant pairs); ``mcnemar_p`` is the exact two-sided McNemar p-value on them when every
    item has one sample per system, else None.
    """

    items: int
    accuracy: Interval
    tokens: Interval | None
    a_better: int
    b_better: int
    mcnemar_p: float | None

    def within(self, margin: float) -> bool:
        """Whether A is no more than ``margin`` (a fraction: 0.02 = 2 points) below B, by the interval's low end."""
        return self.accuracy.low >= -margin

    def to_dict(self) -> dict:
        return {"items": self.items, "accuracy": self.accuracy.to_dict(),
                "tokens": self.tokens.to_dict() if self.tokens else None, "a_better": self.a_better,
                "b_better": self.b_better, "mcnemar_p": self.mcnemar_p}


def mcnemar_exact(a_better: int, b_better: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant pairs against 1/2."""
    n = a_better + b_better
    if n == 0:
        return 1.0
    k = min(a_better, b_better)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a_accuracy: Mapping[str, float], b_accuracy: Mapping[str, float], *,
                      a_tokens: Mapping[str, float] | None = None, b_tokens: Mapping[str, float] | None = None,
                      binary: bool = False, level: float = LEVEL, resamples: int = RESAMPLES,
                      seed: int = SEED) -> PairedDifference:
    """A - B on the items in both maps (item id -> per-item accuracy, and optionally mean tokens).

    Items only one system saw are left out: a paired comparison is only as wide as its overlap, and
    the caller should say so when the overlap is not the whole set (``items`` tells).
    """
    common = sorted(set(a_accuracy) & set(b_accuracy))
    if not common:
        raise ValueError("the two systems share no items: evaluate them on the same problems")
    a = np.array([a_accuracy[i] for i in common], dtype=float)
    b = np.array([b_accuracy[i] for i in common], dtype=float)
    columns = [a - b]
    with_tokens = a_tokens is not None and b_tokens is not None
    if with_tokens:
        ta = np.array([a_tokens[i] for i in common], dtype=float)
        tb = np.array([b_tokens[i] for i in common], dtype=float)
        columns += [ta, tb]
    draws = _resampled_means(columns, resamples, seed) if len(common) > 1 else [c for c in columns]
    diff = Interval(float(columns[0].mean()), *_percentiles(draws[0], level))
    tokens = None
    if with_tokens and tb.mean() > 0:
        ratios = draws[1] / np.where(draws[2] > 0, draws[2], np.nan)
        low, high = _percentiles(ratios[np.isfinite(ratios)], level)
        tokens = Interval(float(ta.mean() / tb.mean()), low, high)
    a_better, b_better = int((a > b).sum()), int((b > a).sum())
    return PairedDifference(len(common), diff, tokens, a_better, b_better,
                            mcnemar_exact(a_better, b_better) if binary else None)


def seed_summary(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (SD 0 for one seed)."""
    data = np.asarray(values, dtype=float)
    return float(data.mean()), float(data.std(ddof=1)) if data.size > 1 else 0.0
