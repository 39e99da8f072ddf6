"""Agents, envs, rewards and the rollout runner on scripted engines: exact tokens, masks and outcomes.

A scripted engine replays fixed texts as token ids, so every transcript here is built by hand and
every expected token sequence is computed independently of the code under test.
"""
from __future__ import annotations

import asyncio

import pytest

from agents import SEPARATOR, Agent, FormatResult, LongThoughtAgent, ShortThoughtAgent, SingleAgent, register_agent
from envs import Env, LongShortEnv, SingleTurnEnv, register_env
from longshort.data import Problem
from longshort.engines.base import SamplingParams
from longshort.episode import Episode, load_episodes, save_episodes
from longshort.models import tiny_tokenizer
from longshort.registry import AGENTS, ENVS
from longshort.rewards import RewardContext, score_group
from longshort.rollout import RolloutRunner
from scripted import ScriptedEngine

PROBLEM = Problem(id="p0", prompt="Tom has 2 apples and buys 3 more. How many apples?", answer="5")


def run_long_short(long_texts, short_texts, *, max_turns=8, max_total_tokens=4096, problem=PROBLEM,
                   long_tokens=256, short_tokens=256):
    tok = tiny_tokenizer()
    agents = {"long": LongThoughtAgent("long", sampling=SamplingParams(max_new_tokens=long_tokens)),
              "short": ShortThoughtAgent("short", sampling=SamplingParams(max_new_tokens=short_tokens))}
    engines = {"long": ScriptedEngine(tok, long_texts), "short": ScriptedEngine(tok, short_texts)}
    runner = RolloutRunner(lambda: LongShortEnv(agents, max_turns=max_turns, max_total_tokens=max_total_tokens),
                           agents, engines, reward_weights={"long": {"collaboration": 1.0, "format": 1.0},
                                                           "short": {"correctness": 1.0, "format": 1.0}})
    [[episode]] = runner.run([problem], group_size=1)
    return runner, episode, tok, agents


def chat_prefix(tok, system: str, question: str) -> list[int]:
    return tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=True, return_dict=False)


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


TURNS = ["<think>Tom starts with 2 apples.</think>", "<answer>2 + 3 = 5, but check.</rethink>",
         "<think>Yes, 2 + 3 = 5.</think>", "<answer>So \\boxed{5}</answer>"]


def test_two_agent_episode_ends_with_the_verified_answer():
    _, episode, _, _ = run_long_short(TURNS[0::2], TURNS[1::2])
    assert [t.role for t in episode.turns] == ["long", "short", "long", "short"]
    assert episode.outcome.reason == "answered" and episode.outcome.correct and episode.outcome.extracted == "5"
    assert episode.rewards == {"long": {"collaboration": 1.0, "format": 1.0},
                               "short": {"correctness": 1.0, "format": 1.0}}
    assert episode.totals == {"long": 2.0, "short": 2.0}


def test_prompts_are_hand_built_token_sequences():
    runner, episode, tok, agents = run_long_short(TURNS[0::2], TURNS[1::2])
    sep = enc(tok, SEPARATOR)
    ids = [enc(tok, text) for text in TURNS]
    long_prefix = chat_prefix(tok, agents["long"].system_prompt, PROBLEM.prompt)
    short_prefix = chat_prefix(tok, agents["short"].system_prompt, PROBLEM.prompt)
    assert runner.engines["long"].prompts == [long_prefix, long_prefix + ids[0] + sep + ids[1] + sep]
    assert runner.engines["short"].prompts == [short_prefix + ids[0] + sep,
                                               short_prefix + ids[0] + sep + ids[1] + sep + ids[2] + sep]
    assert [t.prompt_ids for t in episode.turns] == runner.engines["long"].prompts[:1] + \
        runner.engines["short"].prompts[:1] + runner.engines["long"].prompts[1:] + runner.engines["short"].prompts[1:]


def test_per_agent_training_masks_are_exact():
    runner, episode, tok, agents = run_long_short(TURNS[0::2], TURNS[1::2])
    sep = enc(tok, SEPARATOR)
    ids = [enc(tok, text) for text in TURNS]
    for role, own in (("long", (0, 2)), ("short", (1, 3))):
        [sample] = runner.training_samples([episode], role)
        prefix = chat_prefix(tok, agents[role].system_prompt, PROBLEM.prompt)
        last = own[-1]
        expected_ids, expected_mask = list(prefix), [0] * len(prefix)
        for i in range(last + 1):
            expected_ids += ids[i]
            expected_mask += [int(i in own)] * len(ids[i])
            if i < last:
                expected_ids += sep
                expected_mask += [0] * len(sep)
        assert sample.input_ids == expected_ids
        assert sample.action_mask == expected_mask
        trained = [lp for lp, m in zip(sample.logprobs, sample.action_mask) if m]
        assert trained == [lp for t in episode.turns if t.role == role for lp in t.logprobs]
        assert all(lp == 0.0 for lp, m in zip(sample.logprobs, sample.action_mask) if not m)
        # Each own turn was sampled right after exactly the prompt the sample holds before it.
        for turn in (t for t in episode.turns if t.role == role):
            n = len(turn.prompt_ids)
            assert sample.input_ids[:n] == turn.prompt_ids
            assert sample.input_ids[n: n + turn.num_tokens] == turn.action_ids


def test_partner_turns_from_another_vocabulary_are_retokenised():
    runner, episode, tok, agents = run_long_short(TURNS[0::2], TURNS[1::2])
    episode.turns[1].vocab = "another-model:999"
    episode.turns[1].action_ids = [1, 2, 3]  # meaningless in this vocabulary: must not be used
    [sample] = runner.training_samples([episode], "long")
    assert enc(tok, TURNS[1]) == sample.input_ids[
        len(chat_prefix(tok, agents["long"].system_prompt, PROBLEM.prompt)) + len(enc(tok, TURNS[0])) +
        len(enc(tok, SEPARATOR)):][: len(enc(tok, TURNS[1]))]


@pytest.mark.parametrize("long_texts, short_texts, reason, bad_turn_reason", [
    (["<think>unclosed"], [], "format:long", "does not end with </think>"),
    (["<think>   </think>"], [], "format:long", "empty"),
    (["no tags at all"], [], "format:long", "does not start with <think>"),
    (["<think>ok</think>"], ["<answer>the answer is 5</answer>"], "format:short", "no \\boxed{} answer"),
    (["<think>ok</think>"], ["<answer>x <think> y</answer>"], "format:short", "contains <think> inside the segment"),
    (["<think>ok</think>"], [""], "format:short", "does not start with <answer>"),
])
def test_bad_output_ends_the_episode_as_a_format_failure(long_texts, short_texts, reason, bad_turn_reason):
    _, episode, _, _ = run_long_short(long_texts, short_texts)
    assert episode.outcome.reason == reason and not episode.outcome.correct
    assert episode.turns[-1].format_ok is False and episode.turns[-1].format_reason == bad_turn_reason
    role = reason.split(":")[1]
    assert episode.rewards[role]["format"] == 0.0


def test_truncation_at_the_turn_budget_is_a_format_failure():
    _, episode, _, _ = run_long_short(["<think>" + "many words " * 40 + "</think>"], [], long_tokens=10)
    assert episode.outcome.reason == "format:long" and episode.turns[0].format_reason == "truncated"
    assert episode.turns[0].num_tokens == 10


def test_total_budget_caps_turns_and_ends_as_budget():
    text = "<think>" + "step " * 30 + "</think>"
    _, episode, tok, _ = run_long_short([text], [], max_total_tokens=12)
    assert episode.outcome.reason == "budget" and episode.tokens() == 12


def test_turn_cap_cuts_an_env_that_never_finishes():
    _, episode, _, _ = run_long_short(["<think>a</think>"] * 5, ["<answer>b</rethink>"] * 5, max_turns=4)
    assert len(episode.turns) == 4 and episode.outcome.reason == "turn_cap"
    assert episode.rewards["long"]["collaboration"] == 0.0 and episode.rewards["long"]["format"] == 1.0


def test_wrong_answer_is_graded_wrong():
    _, episode, _, _ = run_long_short(["<think>a</think>"], ["<answer>\\boxed{6}</answer>"])
    assert episode.outcome.reason == "answered" and episode.outcome.extracted == "6" and not episode.outcome.correct


def test_single_turn_env_and_agent():
    tok = tiny_tokenizer()
    agents = {"single": SingleAgent("single")}
    engine = ScriptedEngine(tok, ["<think>2 + 3 = 5</think> The answer is \\boxed{5}.", "I think it is 5."])
    runner = RolloutRunner(lambda: SingleTurnEnv(agents), agents, {"single": engine})
    [[good, bad]] = runner.run([PROBLEM], group_size=2)
    assert good.outcome.correct and good.outcome.answer_role == "single"
    assert bad.outcome.reason == "format:single" and len(bad.turns) == 1


def _episode_with_tokens(n_long: int, n_short: int, correct: bool) -> Episode:
    from longshort.episode import Outcome, Turn
    turns = [Turn("long", [], [1] * n_long, [0.0] * n_long, "", "stop", "v"),
             Turn("short", [], [1] * n_short, [0.0] * n_short, "", "stop", "v")]
    return Episode("p", 0, "q", "5", turns, Outcome("answered", "", "short", "5", correct))


def test_length_reward_counts_only_the_agents_own_tokens():
    agents = {"long": LongThoughtAgent("long"), "short": ShortThoughtAgent("short")}
    group = [_episode_with_tokens(10, 100, True), _episode_with_tokens(30, 5, True), _episode_with_tokens(20, 50, False)]
    paper = RewardContext(agents, length_gate="paper")
    score_group(group, {"long": {"length": 1.0}, "short": {"length": 1.0}}, paper)
    # long: counts 10, 30, 20 -> lam = 0.5, -0.5, 0.0, never gated in the paper (the long agent gives no answer)
    assert [ep.rewards["long"]["length"] for ep in group] == [0.5, -0.5, 0.0]
    # short: counts 100, 5, 50 -> lam = -0.5, 0.5, 0.5 - 45/95; the wrong episode keeps only the penalty
    assert [ep.rewards["short"]["length"] for ep in group] == pytest.approx([-0.5, 0.5, 0.0])
    # the default gate: the same lam in the correct episodes, the floor -0.5 in the wrong one, for both agents
    score_group(group, {"long": {"length": 1.0}, "short": {"length": 1.0}}, RewardContext(agents))
    assert [ep.rewards["long"]["length"] for ep in group] == [0.5, -0.5, -0.5]
    assert [ep.rewards["short"]["length"] for ep in group] == pytest.approx([-0.5, 0.5, -0.5])
    score_group(group, {"short": {"length": 2.0}},
                RewardContext(agents, length_mode="linear", token_cost=0.01, length_gate="paper"))
    assert [ep.rewards["short"]["length"] for ep in group] == pytest.approx([-1.0, -0.05, -0.5])
    assert [ep.totals["short"] for ep in group] == pytest.approx([-2.0, -0.1, -1.0])


def test_unknown_reward_term_names_the_closest():
    agents = {"short": ShortThoughtAgent("short")}
    with pytest.raises(KeyError, match="did you mean 'correctness'"):
        score_group([_episode_with_tokens(1, 1, True)], {"short": {"corectness": 1.0}}, RewardContext(agents))


def test_episodes_round_trip_through_jsonl(tmp_path):
    _, episode, _, _ = run_long_short(TURNS[0::2], TURNS[1::2])
    save_episodes([episode], tmp_path / "episodes.jsonl")
    assert load_episodes(tmp_path / "episodes.jsonl") == [episode]


def test_a_new_agent_and_env_in_a_few_lines():
    """A planner/solver/checker env with three agents registered in Python and played by scripted engines
    (the README's version of this team runs from its own files in tests/test_extensions.py)."""

    @register_agent("checker_demo")
    class Checker(Agent):
        system_prompt = "Check the solution. Reply ACCEPT \\boxed{answer} or REJECT."
        stop = ("REJECT",)
        gives_answer = True

        def check_format(self, text: str, finish_reason: str) -> FormatResult:
            if "\\boxed{" in text:
                return FormatResult(True, "final")
            return FormatResult("REJECT" in text, "reject" if "REJECT" in text else "invalid")

    @register_env("plan_solve_check_demo")
    class PlanSolveCheck(Env):
        roles = ("planner", "solver", "checker")

        def first_role(self) -> str:
            return "planner"

        def next_role(self, turn, result) -> str:
            return {"planner": "solver", "solver": "checker", "checker": "planner"}[turn.role]

    tok = tiny_tokenizer()
    agents = {"planner": AGENTS.get("long")("planner"), "solver": AGENTS.get("short")("solver"),
              "checker": AGENTS.get("checker_demo")("checker")}
    script = {"planner": ["<think>add</think>", "<think>add again</think>"],
              "solver": ["<answer>2+3=4</rethink>", "<answer>2+3=5</rethink>"],
              "checker": ["REJECT", "ACCEPT \\boxed{5}"]}
    engines = {role: ScriptedEngine(tok, texts) for role, texts in script.items()}
    runner = RolloutRunner(lambda: ENVS.get("plan_solve_check_demo")(agents, max_turns=9), agents, engines,
                           reward_weights={"checker": {"correctness": 1.0}, "planner": {"collaboration": 1.0}})
    [[episode]] = runner.run([PROBLEM])
    assert [t.role for t in episode.turns] == ["planner", "solver", "checker"] * 2
    assert episode.outcome.correct and episode.totals == {"checker": 1.0, "planner": 1.0}


def test_runner_plays_all_episodes_concurrently():
    """Every episode's first turn is requested before any second turn: the engine sees whole batches."""
    tok = tiny_tokenizer()
    order: list[str] = []

    class Recording(ScriptedEngine):
        async def generate(self, prompt_ids, sampling):
            order.append(self.name)
            await asyncio.sleep(0)
            return await super().generate(prompt_ids, sampling)

    long_engine, short_engine = Recording(tok, ["<think>a</think>"] * 6), Recording(tok, ["<answer>\\boxed{5}</answer>"] * 6)
    long_engine.name, short_engine.name = "long", "short"
    agents = {"long": LongThoughtAgent("long"), "short": ShortThoughtAgent("short")}
    runner = RolloutRunner(lambda: LongShortEnv(agents), agents, {"long": long_engine, "short": short_engine})
    groups = runner.run([PROBLEM, Problem("p1", "2+2?", "4")], group_size=3)
    assert [len(g) for g in groups] == [3, 3] and [ep.problem_id for ep in groups[1]] == ["p1"] * 3
    assert order == ["long"] * 6 + ["short"] * 6


def test_length_reward_ignores_episodes_the_agent_never_acted_in():
    agents = {"long": LongThoughtAgent("long"), "short": ShortThoughtAgent("short")}
    silent = _episode_with_tokens(10, 0, False)
    silent.turns = silent.turns[:1]  # the long agent failed, the short agent never spoke
    group = [_episode_with_tokens(10, 40, True), _episode_with_tokens(10, 20, True), silent]
    score_group(group, {"short": {"length": 1.0}}, RewardContext(agents, length_gate="paper"))
    assert [ep.rewards["short"]["length"] for ep in group] == [-0.5, 0.5, 0.0]
    score_group(group, {"short": {"length": 1.0}}, RewardContext(agents))  # wrong: the floor, acted or not
    assert [ep.rewards["short"]["length"] for ep in group] == [-0.5, 0.5, -0.5]
