"""Long chains with known redundancy: deterministic, correct, with the redundancy they record."""
from __future__ import annotations

import pytest

from longshort.analysis.steps import StepSegmenter, segment_text
from longshort.data import Problem
from longshort.data.longchains import GOLD, KINDS, label_step, long_chain, long_chains, redundant_count
from longshort.models import tiny_model
from longshort.data.synthetic import synthetic_problems
from longshort.verify import Verifier

GSM8K_STYLE = Problem("gsm8k-like-1", "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the "
                      "rest for $2 each. How much does she make?", "18",
                      {"steps": ["Janet sells 16 - 3 - 4 = 9 duck eggs a day.",
                                 "She makes 9 * 2 = $18 every day at the farmer's market."]})


def test_a_chain_depends_only_on_the_seed_and_wording_varies_with_it():
    problems = synthetic_problems(20, min_steps=1, max_steps=3, seed=3)
    assert [long_chain(p, seed=1) for p in problems] == [long_chain(p, seed=1) for p in problems]
    assert sum(long_chain(p, seed=1).steps != long_chain(p, seed=2).steps for p in problems) >= 15


@pytest.mark.parametrize("redundancy", [0.0, 0.5, 0.8])
def test_gold_steps_stay_in_order_and_the_recorded_share_is_the_asked_one(redundancy):
    for problem in [*synthetic_problems(30, min_steps=1, max_steps=3, seed=5), GSM8K_STYLE]:
        chain = long_chain(problem, redundancy=redundancy)
        gold = [s for s, kind in zip(chain.steps, chain.kinds) if kind == GOLD]
        assert gold == problem.meta["steps"]
        n_gold = len(gold)
        assert len(chain.steps) - n_gold == redundant_count(n_gold, redundancy)
        assert chain.redundancy_share == pytest.approx(redundancy, abs=0.5 / len(chain.steps) + 1e-9)
        assert set(chain.kinds) <= set(KINDS) and chain.redundant == [k != GOLD for k in chain.kinds]
    assert redundant_count(1, 0.8) == 4 and redundant_count(3, 0.8) == 12


def test_every_chain_ends_in_the_right_boxed_answer():
    verifier = Verifier()
    for problem in [*synthetic_problems(30, min_steps=1, max_steps=3, seed=7), GSM8K_STYLE]:
        chain = long_chain(problem)
        assert chain.response().endswith(f"\\boxed{{{problem.answer}}}$.")
        assert verifier.grade(chain.response().split("</think>")[1], problem.answer).correct
        assert chain.kinds[-1] == "hesitate" and chain.kinds[0] == "restate"  # R1's opening and closing habits


def test_the_step_segmenter_cuts_a_chain_into_exactly_its_recorded_steps():
    _, tokenizer = tiny_model(seed=0)
    segmenter = StepSegmenter(tokenizer)
    for problem in [*synthetic_problems(10, min_steps=1, max_steps=3, seed=9), GSM8K_STYLE]:
        chain = long_chain(problem)
        steps = segment_text(chain.thinking, segmenter)
        assert [s.text.strip() for s in steps] == list(chain.steps)


def test_the_labeller_recognises_every_kind_it_wrote_and_nothing_in_gold_steps():
    chains = long_chains(synthetic_problems(200, min_steps=1, max_steps=3, seed=11))
    assert {kind for chain in chains for kind in chain.kinds} == set(KINDS)  # every kind occurs
    for chain in chains:
        assert [label_step(s) for s in chain.steps] == list(chain.kinds)


def test_problems_without_steps_are_refused_or_left_out():
    bare = Problem("bare", "What is 2 + 2?", "4", {})
    with pytest.raises(ValueError, match="no gold solution steps"):
        long_chain(bare)
    assert [c.problem_id for c in long_chains([bare, GSM8K_STYLE])] == ["gsm8k-like-1"]
    with pytest.raises(ValueError, match="redundancy"):
        long_chain(GSM8K_STYLE, redundancy=1.0)


def test_pruning_is_scored_against_the_recorded_redundancy():
    from longshort.analysis.redundancy import score_pruning, teacher_forced_control

    score = score_pruning([([True, False, True, True], [0, 1]), ([False, True], [1])])
    assert (score.removed, score.removed_redundant, score.redundant) == (3, 2, 4)
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(0.5)
    model, tokenizer = tiny_model(seed=0)
    problems = synthetic_problems(5, min_steps=1, max_steps=2, seed=13)
    chains = long_chains(problems)
    result = teacher_forced_control(model, tokenizer, chains, [p.prompt for p in problems], kappa=0.8)
    expected = sum(int(0.8 * len(c.steps) + 1e-9) for c in chains)
    assert set(result["rankings"]) == {"mean", "sum", "body"}
    for ranking in result["rankings"].values():
        assert {s["removed"] for s in ranking.values()} == {expected}
    assert all(set(kinds) <= set(KINDS) and GOLD in kinds for kinds in result["kinds"].values())
