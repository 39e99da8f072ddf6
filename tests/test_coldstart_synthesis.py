"""``sft.coldstart: synthesis``: chains -> steps -> thoughts -> Monte Carlo importance -> transcripts,
resumable per problem; and the gold-steps builder on MATH-style solutions."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from longshort.analysis import coldstart_builder
from longshort.analysis.equations import equations
from longshort.analysis.synthesis import check_transcript
from longshort.coldstart import ColdStartError, build_transcripts, load_coldstart, solution_steps
from longshort.config import load_config
from longshort.data import Problem
from longshort.data.longchains import LongChain, long_chains
from longshort.engines.base import Generation, SamplingParams
from longshort.models import tiny_tokenizer
from longshort.registry import COLDSTART

KEY = "so x = 5"  # the thought that makes the teacher's answers right


class KeyedTeacher:
    """A teacher whose rollout answers are right exactly when the thinking so far holds ``KEY``:
    importance is known in advance. ``fail_on`` raises for one question (a run killed mid-way)."""

    def __init__(self, tokenizer, fail_on: str | None = None):
        self.tokenizer = tokenizer
        self.fail_on = fail_on
        self.questions: list[str] = []

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        prompt = self.tokenizer.decode(prompt_ids)
        if self.fail_on and self.fail_on in prompt:
            raise RuntimeError("killed")
        self.questions.append(prompt)
        text = ("5" if KEY in prompt else "6" if "y = 6" in prompt else "0") + "}$"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(ids, [-0.1] * len(ids), text, "stop", "}$")


def chain(*thoughts: str) -> str:
    return "<think>\n" + "\n\n".join(thoughts) + "\n</think>\n\nThe answer is 5."


PROBLEMS = [Problem("p0", "Find x when x - 2 = 3.", "5"), Problem("p1", "Find y when y - 4 = 2.", "6"),
            Problem("p2", "Find z when z + 1 = 8.", "7"), Problem("p3", "Find w.", "1")]
CHAINS = [
    {"id": "p0", "response": chain("Okay, we need x.", "Subtract: x - 2 = 3.", f"Add 2, {KEY}.",
                                   "Wait, let me verify: 5 - 2 = 3.", "Yes.")},
    {"problem": "Find y when y - 4 = 2.", "response": chain("We need y.", "Adding 4 gives y = 6.")},
    {"id": "p2", "response": chain("Hmm.", "I am not sure.")},  # never reaches 7
]


def synthesis_config(tmp_path: Path, *overrides: str):
    chains = tmp_path / "chains.jsonl"
    chains.write_text("".join(json.dumps(row) + "\n" for row in CHAINS))
    return load_config("tiny", ["sft.coldstart=synthesis", f"sft.synthesis.chains={chains}",
                                "sft.synthesis.rollouts=2", "sft.synthesis.thought_min_steps=1",
                                "sft.synthesis.thought_max_steps=1", "sft.synthesis.top_fraction=0.2",
                                *overrides])


def test_chains_file_to_transcripts_with_counts(tmp_path, monkeypatch, capsys):
    teacher = KeyedTeacher(tiny_tokenizer())
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda settings, seed: teacher)
    config = synthesis_config(tmp_path)
    out = tmp_path / "coldstart"
    paths = COLDSTART.get("synthesis")(config, PROBLEMS, out)

    summary = json.loads((out / coldstart_builder.SUMMARY_FILE).read_text())
    assert summary["kept"] == 2 and summary["dropped"] == {"never_reaches_gold": 1, "no_chain": 1}
    assert summary["thoughts"] == {"long": 2, "compressed": 2, "dropped": 3}
    assert summary["turn_caps"] == {"long": 96, "short": 64, "turns": 4, "total": 384}  # recipe tiny's
    assert "kept 2; dropped: never_reaches_gold 1, no_chain 1 (their thoughts: 2 long, 2 compressed, 3 dropped)" in \
        capsys.readouterr().out
    long_rows, short_rows = load_coldstart(paths["long"]), load_coldstart(paths["short"])
    assert [r["id"] for r in short_rows] == ["p0", "p1"] and all(r["role"] == "short" for r in short_rows)
    p0 = short_rows[0]
    # one thought per step; only "Add 2, so x = 5." lifts the rollouts' accuracy, so the long agent writes
    # it, opened by the equation it builds on; the check's new equation is the short agent's
    assert [t["text"] for t in p0["turns"]] == ["<think>\nx - 2 = 3.\n\nAdd 2, so x = 5.\n</think>",
                                                "<answer>\n5 - 2 = 3.\nThe final answer is \\boxed{5}.\n</answer>"]
    progress = [json.loads(line) for line in (out / coldstart_builder.PROGRESS_FILE).read_text().splitlines()]
    p0_row = next(r for r in progress if r["id"] == "p0")
    assert p0_row["accuracy"] == [0.0, 0.0, 1.0, 1.0, 1.0] and p0_row["chain"] == "file"
    assert [t["gain"] for t in p0_row["scored"]["thoughts"]] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert {r["id"] for r in long_rows} == {"p0", "p1"}


def test_a_killed_run_continues_with_the_problems_not_done(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    config = synthesis_config(tmp_path, "sft.synthesis.batch_problems=1")
    out = tmp_path / "coldstart"
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda s, seed: KeyedTeacher(tok, fail_on="Find y"))
    with pytest.raises(RuntimeError, match="killed"):
        COLDSTART.get("synthesis")(config, PROBLEMS, out)
    lines = (out / coldstart_builder.PROGRESS_FILE).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p0"]
    with (out / coldstart_builder.PROGRESS_FILE).open("a") as handle:
        handle.write('{"id": "p1", "sta')  # torn by the kill: redone

    teacher = KeyedTeacher(tok)
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda s, seed: teacher)
    paths = COLDSTART.get("synthesis")(config, PROBLEMS, out)
    assert not any("Find x" in q for q in teacher.questions)  # p0 was not scored again
    assert [r["id"] for r in load_coldstart(paths["short"])] == ["p0", "p1"]

    changed = synthesis_config(tmp_path, "sft.synthesis.batch_problems=4", "sft.synthesis.rollouts=3")
    with pytest.raises(coldstart_builder.SynthesisError, match="rollouts changed"):
        COLDSTART.get("synthesis")(changed, PROBLEMS, out)


def test_changing_only_the_transcript_rules_resynthesises_without_new_rollouts(tmp_path, monkeypatch):
    teacher = KeyedTeacher(tiny_tokenizer())
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda s, seed: teacher)
    out = tmp_path / "coldstart"
    first = load_coldstart(COLDSTART.get("synthesis")(synthesis_config(tmp_path), PROBLEMS, out)["short"])
    asked = len(teacher.questions)
    assert [t["role"] for t in first[0]["turns"]] == ["long", "short"]

    def unused(settings, seed):
        raise AssertionError("no teacher is needed to re-synthesise")

    measured = []
    monkeypatch.setattr(coldstart_builder, "teacher_engine", unused)
    monkeypatch.setattr(coldstart_builder, "caps_tokenizer", lambda s: measured.append(s.teacher) or tiny_tokenizer())
    # the first thought is the long agent's too: "Okay, we need x." opens, the equation after it is handed back
    wider = synthesis_config(tmp_path, "sft.synthesis.keep_first=true")
    again = load_coldstart(COLDSTART.get("synthesis")(wider, PROBLEMS, out)["short"])
    assert len(teacher.questions) == asked and [r["id"] for r in again] == ["p0", "p1"] and measured
    assert [t["text"] for t in again[0]["turns"]][:2] == ["<think>\nOkay, we need x.\n</think>",
                                                         "<answer>\nx - 2 = 3.\n</rethink>"]
    assert KEY in again[0]["turns"][2]["text"]
    settings = json.loads((out / coldstart_builder.SETTINGS_FILE).read_text())
    assert settings["keep_first"] is True and settings["scoring"] == "marginal_gain"  # the lines mean the new rules
    # the agents' turn budgets are transcript rules too: a smaller long cap re-synthesises (and drops)
    assert "turn_too_long" in coldstart_builder.build(
        synthesis_config(tmp_path, "agents.long.sampling.max_new_tokens=8"), PROBLEMS, out)[1]["dropped"]

    # lines written before thoughts were kept cannot be re-synthesised: the error says so
    progress = out / coldstart_builder.PROGRESS_FILE
    rows = [json.loads(line) for line in progress.read_text().splitlines()]
    progress.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "scored"}) + "\n" for r in rows))
    with pytest.raises(coldstart_builder.SynthesisError, match="written before thoughts were kept"):
        COLDSTART.get("synthesis")(synthesis_config(tmp_path), PROBLEMS, out)

    # lines scored by the old cumulative rule (S_i = A_i * delta, no gain), under a settings file from before
    # keep_first, end_at, turn_caps and scoring existed: re-scored from their raw A_i, never mixed
    def cumulative(row: dict) -> dict:
        if "scored" not in row:
            return row
        thoughts = [{k: v for k, v in t.items() if k != "gain"} | {"score": t["accuracy"] * t["decay"]}
                    for t in row["scored"]["thoughts"]]
        return {**row, "scored": {**row["scored"], "thoughts": thoughts}}

    progress.write_text("".join(json.dumps(cumulative(r)) + "\n" for r in rows))
    settings_path = out / coldstart_builder.SETTINGS_FILE
    old = {k: v for k, v in json.loads(settings_path.read_text()).items()
           if k not in ("keep_first", "end_at", "turn_caps", "scoring")}
    settings_path.write_text(json.dumps(old))
    rebuilt = load_coldstart(COLDSTART.get("synthesis")(synthesis_config(tmp_path), PROBLEMS, out)["short"])
    assert [t["text"] for t in rebuilt[0]["turns"]] == [t["text"] for t in first[0]["turns"]]
    p0 = next(json.loads(line) for line in progress.read_text().splitlines() if '"p0"' in line[:20])
    assert [t["gain"] for t in p0["scored"]["thoughts"]] == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_no_transcript_at_all_fails_with_the_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda s, seed: KeyedTeacher(tiny_tokenizer()))
    with pytest.raises(ColdStartError, match="1 no prefix of its thoughts leads the rollouts to the gold answer"):
        COLDSTART.get("synthesis")(synthesis_config(tmp_path), PROBLEMS[2:3], tmp_path / "out")


class OracleTeacher:
    """Rollouts that know the written chains' labels: after a prefix holding g of a problem's G gold steps,
    round(N * g / G) of its N answers are right, so each gold step has a positive marginal gain and no
    redundant step has any (the truth the synthesis is scored against)."""

    def __init__(self, tokenizer, chains: dict[str, LongChain], questions: dict[str, str], rollouts: int):
        self.tokenizer, self.chains, self.questions, self.rollouts = tokenizer, chains, questions, rollouts
        self.calls: Counter = Counter()

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        prompt = self.tokenizer.decode(prompt_ids)
        pid = next(pid for pid, question in self.questions.items() if question in prompt)
        chain = self.chains[pid]
        gold = [step for step, kind in zip(chain.steps, chain.kinds) if kind == "gold"]
        present = sum(step in prompt for step in gold)
        n = self.calls[prompt] % self.rollouts
        self.calls[prompt] += 1
        text = (chain.answer if n < round(self.rollouts * present / len(gold)) else "-1") + "}$"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(ids, [-0.1] * len(ids), text, "stop", "}$")


# (recipe, problems whose transcript may not fit an episode): recipe tiny's 96-token long turns need two
# splits, hence 6 turns (its episodes allow 4), for some 3-step chains under the tiny test tokenizer
@pytest.mark.parametrize("recipe, too_long", [("longshort_longcot_tiny", 0), ("tiny", 0.3)])
def test_on_the_written_long_chains_the_synthesis_keeps_the_gold_steps_and_drops_the_redundancy(
        tmp_path, monkeypatch, recipe, too_long):
    """Issue 27's bar: every gold step kept (verbatim in a long turn, or its equation in a short one), at
    least 90% of the redundant steps dropped, every turn within its agent's max_new_tokens and the whole
    within an episode's turns and tokens (counted with the tiny test tokenizer, which needs ~1.6x
    SmolLM2's tokens for this text), the right final answer."""
    from longshort.data import load_problems

    problems = load_problems("synthetic:train", limit=48, min_steps=1, max_steps=3, seed=5)
    chains = {c.problem_id: c for c in long_chains(problems)}
    path = tmp_path / "chains.jsonl"
    path.write_text("".join(json.dumps({"id": c.problem_id, "response": c.response()}) + "\n" for c in chains.values()))
    # the defaults make the chains' own steps the thoughts (thought_max_steps=1)
    config = load_config(recipe, ["sft.coldstart=synthesis", f"sft.synthesis.chains={path}"])
    tok = tiny_tokenizer()
    teacher = OracleTeacher(tok, chains, {p.id: p.prompt for p in problems}, config.sft.synthesis.rollouts)
    monkeypatch.setattr(coldstart_builder, "teacher_engine", lambda s, seed: teacher)
    transcripts, summary = coldstart_builder.build(config, problems, tmp_path / "out")
    assert set(summary["dropped"]) <= {"episode_too_long"}
    assert summary["dropped"].get("episode_too_long", 0) <= too_long * len(problems)
    assert summary["kept"] + sum(summary["dropped"].values()) == len(problems) and summary["kept"] == len(transcripts)

    caps = {role: config.agents[role].sampling.max_new_tokens for role in ("long", "short")}
    gold_kept = gold = redundant_dropped = redundant = 0
    for transcript in transcripts:
        chain = chains[transcript["id"]]
        long_text = "\n".join(t["text"] for t in transcript["turns"] if t["role"] == "long")
        short_text = "\n".join(t["text"] for t in transcript["turns"] if t["role"] == "short")
        for step, kind in zip(chain.steps, chain.kinds):
            if kind == "gold":
                gold += 1
                gold_kept += step in long_text or all(e.text in short_text for e in equations(step))
            else:
                redundant += 1
                redundant_dropped += step not in long_text and step not in short_text
        stated = {e.key for e in equations(long_text + short_text)}
        assert stated <= {e.key for s, k in zip(chain.steps, chain.kinds) if k == "gold" for e in equations(s)}
        lengths = [len(tok.encode(t["text"], add_special_tokens=False)) + 1 for t in transcript["turns"]]
        assert all(n <= caps[t["role"]] for n, t in zip(lengths, transcript["turns"]))
        assert len(lengths) <= config.env.max_turns and sum(lengths) <= config.env.max_total_tokens
        assert transcript["turns"][-1]["text"].endswith(f"\\boxed{{{chain.answer}}}.\n</answer>")
        assert check_transcript(transcript["turns"]) == []
    assert gold_kept == gold and redundant_dropped >= 0.9 * redundant
    assert summary["thoughts"]["long"] == gold  # the oracle's gains put exactly the gold steps in long turns


def test_math_solutions_are_cut_into_steps_for_the_gold_steps_builder():
    one_paragraph = ("We have $r = \\sqrt{0^2 + 3^2} = 3.$  Also, the angle is $\\frac{\\pi}{2}.$ "
                     "Therefore, the answer is $\\boxed{3}.$")
    assert solution_steps(one_paragraph) == ["We have $r = \\sqrt{0^2 + 3^2} = 3.$", "Also, the angle is $\\frac{\\pi}{2}.$",
                                             "Therefore, the answer is $\\boxed{3}.$"]
    assert solution_steps("First $x. Y$ here.\n\nSecond.\n\n[asy]\ndraw((0,0));\n\ndot((1,1));\n[/asy]\n\nThird.") == [
        "First $x. Y$ here.", "Second.", "Third."]
    problems = [Problem(f"m{i}", "Compute $1+2$.", "3", {"solution": one_paragraph}) for i in range(3)]
    records = build_transcripts(problems, seed=0)
    assert len(records) == 3 and all(r["turns"][-1]["text"].endswith("\\boxed{3} </answer>") for r in records)


@pytest.mark.slow
def test_smollm2_teacher_on_synthetic_problems(tmp_path):
    """The whole stage with a real model writing the chains and answering the rollouts."""
    from longshort.data import load_problems

    config = load_config("tiny", ["sft.coldstart=synthesis", "sft.synthesis.teacher=smollm2-135m",
                                  "sft.synthesis.chain_tokens=96", "sft.synthesis.rollouts=4",
                                  "sft.synthesis.answer_tokens=12", "sft.synthesis.thought_max_steps=2",
                                  "sft.synthesis.thought_min_steps=1", "sft.synthesis.dtype=fp32"])
    problems = load_problems("synthetic:train", limit=8, min_steps=1, max_steps=1, seed=3)
    out = tmp_path / "coldstart"
    try:
        paths = COLDSTART.get("synthesis")(config, problems, out)
    except ColdStartError as error:  # all dropped: still a full run of every piece; the reasons are counted
        assert "no prefix of its thoughts" in str(error)
        paths = None
    summary = json.loads((out / coldstart_builder.SUMMARY_FILE).read_text())
    progress = [json.loads(line) for line in (out / coldstart_builder.PROGRESS_FILE).read_text().splitlines()]
    assert summary["problems"] == len(progress) == 8 and summary["kept"] + sum(summary["dropped"].values()) == 8
    assert all(row["chain"] == "teacher" and row["chain_tokens"] > 0 for row in progress)
    scored = [row for row in progress if "scores" in row]
    assert scored and all(-1 <= s <= 1 and 0 <= a <= 1
                          for row in scored for s, a in zip(row["scores"], row["accuracy"]))
    if paths is not None:
        assert all(r["turns"][-1]["text"].endswith("</answer>") for r in load_coldstart(paths["short"]))


def test_a_chat_template_that_opens_the_thinking_is_not_opened_twice():
    """DeepSeek-R1-Distill's template ends the generation prompt with "<think>\\n" itself."""
    from longshort.analysis.chains import R1_FORMAT

    plain, r1 = tiny_tokenizer(), tiny_tokenizer()
    r1.chat_template = plain.chat_template.replace("<|im_start|>assistant\n", "<|im_start|>assistant\n<think>\n")
    assert r1.chat_template != plain.chat_template
    for tok in (plain, r1):
        text = tok.decode(R1_FORMAT.thinking_prompt_ids(tok, "What is 2+2?"))
        assert text.count("<think>") == 1 and text.endswith("<think>\n")
