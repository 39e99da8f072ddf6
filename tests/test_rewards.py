"""Reward terms as a whole: under every shipped recipe's weights no wrong episode out-scores a right one.

Episodes are played through the recipe's own env and agents with random texts and lengths, so only
transcripts the env can produce are scored: a format failure ends an episode unanswered, an answer is
graded right or wrong at random, each turn's tokens lie within its agent's cap.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from longshort.config import load_config
from longshort.episode import Episode, Outcome, Turn
from longshort.registry import ENVS
from longshort.rewards import RewardContext, score_group
from longshort.rollout import build_agents

RECIPES = sorted(p.stem for p in (Path(__file__).parents[1] / "recipes").glob("*.yaml"))

# Texts by the kind of turn they are, for each agent type; "bad" fails the agent's format check.
TEXTS = {
    "long": {"ok": ["<think>\n3 * 4 = 12\n</think>"], "bad": ["3 * 4 = 12", "<think>\nunclosed"]},
    "short": {"ok": ["<answer>\n12 + 1 = 13\n</rethink>", "<answer>\nThe final answer is \\boxed{13}.\n</answer>"],
              "bad": ["<answer>\nno box\n</answer>", "no tags at all"]},
    "single": {"ok": ["<think>\n{skips}3 * 4 = 12\n</think>\nThe final answer is \\boxed{12}."],
               "bad": ["<think>\n{skips}never closed", "no answer here"]},
}
TEXTS["skip"] = TEXTS["single"]


def random_episode(rng: random.Random, env, agents, types: dict[str, str]) -> Episode:
    """One episode the env could end with: random well- or ill-formed turns of random lengths."""
    role, turns = env.reset("q"), []
    while True:
        agent = agents[role]
        kind = "bad" if rng.random() < 0.2 else "ok"
        truncated = rng.random() < 0.1
        cap = max(1, min(agent.sampling.max_new_tokens, env.tokens_left()))
        n = cap if truncated else rng.randint(1, cap)
        skips = rng.randint(0, n)
        text = rng.choice(TEXTS[types[role]][kind]).replace("{skips}", "[SKIP]\n\n" * skips)
        turn = Turn(role, [], [1] * n, [0.0] * n, text, "length" if truncated else "stop", "v")
        result = env.step(turn)
        turns.append(turn)
        if result.done:
            break
        role = result.next_role
    outcome = env.outcome
    correct = outcome.finished and rng.random() < 0.5
    return Episode("p", 0, "q", "12", turns, Outcome(outcome.reason, outcome.answer_text, outcome.answer_role,
                                                       "12" if correct else "7", correct))


@pytest.mark.parametrize("recipe", RECIPES)
def test_no_wrong_episode_out_scores_a_right_one(recipe):
    config = load_config(recipe)
    agents = build_agents(config)
    types = {role: spec.type for role, spec in config.agents.items()}
    env = ENVS.get(config.env.name)(agents, max_turns=config.env.max_turns, max_total_tokens=config.env.max_total_tokens)
    ctx = RewardContext.from_config(agents, config.rewards)
    assert ctx.length_gate == "correct"
    rng = random.Random(recipe)
    base = config.rewards.weights
    for trial in range(300):
        scale = rng.choice([1.0, 3.0, 10.0])  # the length weight a lever may raise (the lean table run used 3)
        weights = {role: {term: w * scale if term == "length" else w for term, w in terms.items()}
                   for role, terms in base.items()}
        group = [random_episode(rng, env, agents, types) for _ in range(rng.randint(2, 8))]
        score_group(group, weights, ctx)
        for role in weights:
            right = [ep.totals[role] for ep in group if ep.outcome.correct]
            wrong = [ep.totals[role] for ep in group if not ep.outcome.correct]
            if right and wrong:
                assert min(right) > max(wrong), (recipe, role, trial, right, wrong)


def _long_short_group():
    """Long agent's tokens 10 / 30 / 20; the third episode is wrong."""
    from agents import LongThoughtAgent, ShortThoughtAgent

    agents = {"long": LongThoughtAgent("long"), "short": ShortThoughtAgent("short")}

    def episode(n_long: int, n_short: int, correct: bool) -> Episode:
        turns = [Turn("long", [], [1] * n_long, [0.0] * n_long, "", "stop", "v"),
                 Turn("short", [], [1] * n_short, [0.0] * n_short, "", "stop", "v")]
        return Episode("p", 0, "q", "5", turns, Outcome("answered", "", "short", "5", correct))

    return agents, [episode(10, 100, True), episode(30, 5, True), episode(5, 50, False)]


def test_the_papers_ungated_long_agent_term_pays_a_wrong_answer_more_than_a_right_one():
    """The ablation the gate exists for: ``length_gate=paper`` at the lean run's length weight 3."""
    agents, group = _long_short_group()
    weights = {"long": {"collaboration": 1.0, "format": 1.0, "length": 3.0}}
    score_group(group, weights, RewardContext(agents, length_gate="paper"))
    # counts 10, 30, 5 -> lam = 0.5 - 5/25, -0.5, 0.5: the wrong, shortest episode gets the most
    assert [ep.rewards["long"]["length"] for ep in group] == pytest.approx([0.3, -0.5, 0.5])
    assert group[2].totals["long"] > group[1].totals["long"]
    score_group(group, weights, RewardContext(agents, length_gate="correct"))
    assert [ep.rewards["long"]["length"] for ep in group] == pytest.approx([0.3, -0.5, -0.5])
    assert min(group[0].totals["long"], group[1].totals["long"]) > group[2].totals["long"]


def test_gated_linear_cost_gives_a_wrong_episode_the_groups_highest_cost():
    agents, group = _long_short_group()
    score_group(group, {"short": {"length": 1.0}}, RewardContext(agents, length_mode="linear", token_cost=0.01))
    assert [ep.rewards["short"]["length"] for ep in group] == pytest.approx([-1.0, -0.05, -1.0])
    score_group(group, {"short": {"length": 1.0}},
                RewardContext(agents, length_mode="linear", token_cost=0.01, length_gate="paper"))
    assert [ep.rewards["short"]["length"] for ep in group] == pytest.approx([-1.0, -0.05, -0.5])


def test_groups_that_give_no_gradient_are_counted_per_agent():
    """``groups/<role>/all_equal``: equal totals among the episodes the agent acted in, or fewer than two."""
    from longshort.trainers.metrics import group_metrics

    agents, (a, b, c) = _long_short_group()
    silent = Episode("p", 0, "q", "5", a.turns[:1], Outcome("format:long"))  # the short agent never spoke
    groups = [[a, b], [a, c], [a, silent]]
    for group in groups:
        score_group(group, {"long": {"collaboration": 1.0}, "short": {"correctness": 1.0}}, RewardContext(agents))
    # long: 1,1 equal | 1,0 differ | 1,0 differ; short: 1,1 equal | 1,0 differ | one episode acted: no gradient
    assert group_metrics(groups, ["long", "short", "absent"]) == pytest.approx(
        {"groups/long/all_equal": 1 / 3, "groups/short/all_equal": 2 / 3})
