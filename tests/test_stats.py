"""Intervals and paired differences: what decides "within 2 points" in tables and ``evaluate baseline=``."""
from __future__ import annotations

import random

import pytest

from longshort.evaluation import evaluate_problems
from longshort.evaluation.paired import compare_sets, markdown, verdict
from longshort.evaluation.stats import mcnemar_exact, mean_interval, paired_difference
from test_evaluate import QUESTION, FakeEngine, config_for, problems, short_reply


def test_mean_interval_covers_the_mean_and_is_the_same_every_time():
    rng = random.Random(0)
    values = [float(rng.random() < 0.3) for _ in range(400)]
    first = mean_interval(values)
    assert first == mean_interval(values)  # seeded: a table renders the same numbers twice
    assert first.estimate == pytest.approx(sum(values) / 400) and first.low < first.estimate < first.high
    # the normal approximation's half-width, 1.96 * sqrt(p (1 - p) / n), within a tenth of a point of it
    p = first.estimate
    assert (first.high - first.low) / 2 == pytest.approx(1.96 * (p * (1 - p) / 400) ** 0.5, abs=0.005)
    assert mean_interval([1.0]).low == mean_interval([1.0]).high == 1.0


def test_pairing_narrows_the_interval_when_systems_agree_on_most_items():
    """Two systems that differ on 8 of 500 items: independent intervals overlap widely, the paired
    one says A is better and by how much."""
    rng = random.Random(1)
    b = {f"q{i}": float(rng.random() < 0.5) for i in range(500)}
    a = dict(b)
    flipped = [item for item, value in b.items() if value == 0.0][:8]
    a.update({item: 1.0 for item in flipped})
    diff = paired_difference(a, b, binary=True)
    assert diff.items == 500 and diff.a_better == 8 and diff.b_better == 0
    assert diff.accuracy.estimate == pytest.approx(8 / 500) and diff.accuracy.low > 0
    assert diff.mcnemar_p == pytest.approx(2 / 2 ** 8)
    independent = mean_interval(list(a.values()))
    assert diff.accuracy.high - diff.accuracy.low < (independent.high - independent.low) / 3
    assert verdict(diff) == "better"


def test_within_two_points_is_decided_by_the_interval_not_the_estimate():
    rng = random.Random(2)
    b = {f"q{i}": float(rng.random() < 0.5) for i in range(60)}
    a = {item: (1.0 - value if rng.random() < 0.3 else value) for item, value in b.items()}
    diff = paired_difference(a, b)
    assert abs(diff.accuracy.estimate) < 0.1 and diff.accuracy.low < -0.02  # close in estimate, too few items
    assert not diff.within(0.02) and verdict(diff) == "undecided"
    same = paired_difference(b, b)
    assert same.within(0.02) and same.accuracy.low == same.accuracy.high == 0.0


def test_token_ratio_and_only_shared_items_are_paired():
    a_acc, b_acc = {"x": 1.0, "y": 0.0, "z": 1.0}, {"x": 1.0, "y": 1.0}
    diff = paired_difference(a_acc, b_acc, a_tokens={"x": 20.0, "y": 20.0, "z": 5.0},
                             b_tokens={"x": 100.0, "y": 100.0})
    assert diff.items == 2 and diff.tokens.estimate == pytest.approx(0.2)
    with pytest.raises(ValueError, match="share no items"):
        paired_difference({"x": 1.0}, {"y": 1.0})


def test_mcnemar_exact_two_sided():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 2 ** 10)


def test_two_evaluations_on_the_same_problems_are_paired_from_their_records(tmp_path):
    config = config_for(tmp_path)
    items = problems(40)

    def long(prompt: str) -> str:
        return "<think>add</think>"

    def right(prompt: str) -> str:  # every item right; short_reply gets the odd ones wrong
        i = int(QUESTION.search(prompt).group(1))
        return f"<answer>so \\boxed{{{2 * i}}}</answer>"

    evaluate_problems(config, items, out_dir=tmp_path / "half", progress=False,
                      engines={"long": FakeEngine(long), "short": FakeEngine(short_reply)})
    evaluate_problems(config, items, out_dir=tmp_path / "all", progress=False,
                      engines={"long": FakeEngine(long), "short": FakeEngine(right)})
    diffs = compare_sets(tmp_path / "all", tmp_path / "half")
    diff = diffs["heldout"]
    assert diff.items == 40 and diff.a_better == 20 and diff.b_better == 0
    assert diff.accuracy.estimate == pytest.approx(0.5) and verdict(diff) == "better"
    assert diff.mcnemar_p == pytest.approx(2 / 2 ** 20)
    assert "| heldout | 40 | +50.0 [" in markdown("all", "half", diffs)
