"""The run report: what it reads from a run, the episode sampling rule, and the page in a real browser.

Runs are made by the real writers: the pipeline on a tiny random model (seconds), ``evaluate`` with
fake engines whose answers are known, and ``save_episodes``/``episode_metrics`` for hand-built
multi-turn episodes. The browser tests open the page in headless Chromium (Debian's ``chromium``)
and read the text a person would see; they skip where no Chromium is installed.
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from longshort.config import load_config
from longshort.engines.base import Generation, SamplingParams
from longshort.episode import Episode, Outcome, Turn, save_episodes
from longshort.evaluation import evaluate
from longshort.data import Problem
from longshort.models import tiny_model, tiny_tokenizer
from longshort.report import REPORT_NAME, load_run, write_report
from longshort.report.__main__ import main as report_main
from longshort.report.charts import _runs
from longshort.report.chromium import Chromium, find_chromium
from longshort.report.episodes import (
    TURN_CHARS, Group, outcome_class, round_robin, sample_groups, view_of_episode,
)
from longshort.report.render import browser_data, charts
from longshort.trainers.metrics import episode_metrics
from longshort.train import run_pipeline

needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="no chromium on PATH (apt-get install chromium; .ci/run installs it)")


# ------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> Path:
    """Every stage of the tiny recipe on a tiny random model: 2 RL steps of 2 x 2 episodes."""
    root = tmp_path_factory.mktemp("report_run")
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    per_role = [f"agents.{role}.{key}" for role in ("long", "short") for key in
                (f"model.name_or_path={root / 'model'}", "model.dtype=fp32", "sampling.max_new_tokens=8")]
    config = load_config("tiny", [f"output_dir={root / 'run'}", *per_role, "data.train.limit=8", "data.eval.limit=4",
                                  "sft.examples=8", "sft.epochs=1", "sft.batch_size=4", "sft.max_length=2048",
                                  "trainer.steps=2", "trainer.save_every=2", "rollout.problems_per_step=2",
                                  "rollout.group_size=2", "eval.max_new_tokens=8", "eval.max_turns=2"])
    return run_pipeline(config)


QUESTION = re.compile(r"What is (\d+) plus \1\?")


class FakeEngine:
    """Answers from the decoded prompt, so every transcript is known in advance."""

    def __init__(self, reply):
        self.tokenizer, self.reply = tiny_tokenizer(), reply

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        await asyncio.sleep(0)
        ids = self.tokenizer.encode(self.reply(self.tokenizer.decode(prompt_ids)), add_special_tokens=False)
        return Generation(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop")


def short_reply(prompt: str) -> str:
    """Right for even i, wrong (2i + 1) for odd i."""
    i = int(QUESTION.search(prompt).group(1))
    return f"<answer>so \\boxed{{{2 * i if i % 2 == 0 else 2 * i + 1}}}</answer>"


@pytest.fixture
def eval_run(tmp_path) -> Path:
    """An evaluation folder: the Long-Short pair on 4 toy problems, long thinks, short answers."""
    config = load_config("tiny", [f"output_dir={tmp_path}/run"])
    problems = [Problem(id=f"q{i}", prompt=f"What is {i} plus {i}?", answer=str(2 * i)) for i in range(4)]
    engines = {"long": FakeEngine(lambda prompt: "<think>add the two numbers</think>"),
               "short": FakeEngine(short_reply)}
    out = tmp_path / "eval"
    evaluate(config, {"toy": problems}, out_dir=out, engines=engines, progress=False)
    return out


def turn(role: str, text: str, tokens: int, *, ok: bool = True, reason: str = "ok", finish: str = "stop") -> Turn:
    return Turn(role=role, prompt_ids=[1, 2], action_ids=list(range(tokens)), logprobs=[-0.1] * tokens, text=text,
                finish_reason=finish, vocab="toy", format_ok=ok, format_reason=reason)


def hand_built_episode(index: int, kind: str) -> Episode:
    """A two-agent episode that ends as ``kind``: correct, wrong, format:short or turn_cap."""
    turns = [turn("long", f"<think>plan {index}</think>", 10 + index)]
    outcome = Outcome(reason="answered", answer_role="short", extracted=str(index), correct=kind == "correct",
                      verdict="ok" if kind == "correct" else "wrong")
    if kind == "format:short":
        turns.append(turn("short", "no tags at all", 7, ok=False, reason="no <answer> block"))
        outcome = Outcome(reason="format:short")
    elif kind == "turn_cap":
        turns += [turn("short", "<handback>", 3), turn("long", "<think>more</think>", 4)]
        outcome = Outcome(reason="turn_cap")
    else:
        turns.append(turn("short", f"<answer>\\boxed{{{index}}}</answer>", 5))
    return Episode(problem_id=f"p{index}", sample_index=0, prompt=f"question {index}", gold=str(index), turns=turns,
                   outcome=outcome, rewards={"long": {"collaboration": float(kind == "correct"), "length": -0.1},
                                             "short": {"correctness": float(kind == "correct")}},
                   totals={"long": float(kind == "correct") - 0.1, "short": float(kind == "correct")})


def hand_built_run(root: Path, steps: int = 3, kinds=("correct", "wrong", "format:short", "turn_cap")) -> Path:
    """A run folder as the embedded trainer writes it (episodes and metrics only): what OpenRLHF-free,
    model-free tests can build in milliseconds."""
    (root / "rl" / "episodes").mkdir(parents=True)
    (root / "config.yaml").write_text("name: handmade\nstages: [rl]\n"
                                      "agents:\n  long: {type: long}\n  short: {type: short}\n")
    rows = []
    for step in range(1, steps + 1):
        episodes = [hand_built_episode(i, kind) for i, kind in enumerate(kinds)]
        save_episodes(episodes, root / "rl" / "episodes" / f"step_{step:04d}.jsonl")
        trained = ["long"] if step % 2 else ["short"]
        rows.append({"step": step, **episode_metrics(episodes, ["long", "short"]),
                     **{f"train/{role}/clip_frac": 0.1 * step for role in trained}, "trained": trained,
                     "time/rollout_s": 1.0, "time/update_s": 0.5, "time/step_s": 1.5})
    (root / "rl" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "rl" / "DONE").write_text(json.dumps({"stage": "rl", "seconds": 4.5}) + "\n")
    return root


def embedded_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                                re.S).group(1))


# ------------------------------------------------------------------------------------ what it reads


def test_training_run_report_is_written_and_self_contained(pipeline_run):
    html = (pipeline_run / REPORT_NAME).read_text()  # written by run_pipeline itself
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html  # opens with no network
    assert "<style>" in html and html.count("<svg") >= 8
    data = embedded_data(html)
    keys = [group["key"] for group in data["groups"]]
    assert keys == ["step-1", "step-2", "eval/base/heldout", "eval/sft/heldout", "eval/rl/heldout"]
    on_disk = [json.loads(line) for line in (pipeline_run / "rl" / "episodes" / "step_0002.jsonl").open()]
    shown = data["groups"][1]["episodes"]
    assert [(e["id"], e["sample"]) for e in shown] == [(e["problem_id"], e["sample_index"]) for e in on_disk]
    for view, episode in zip(shown, on_disk):
        assert [t["tokens"] for t in view["turns"]] == [len(t["action_ids"]) for t in episode["turns"]]
        assert [t["format"] for t in view["turns"]] == [t["format_reason"] for t in episode["turns"]]
        assert view["rewards"] == episode["rewards"] and view["outcome"] == episode["outcome"]["reason"]
    run = load_run(pipeline_run)
    assert [stage for stage, _ in run.stages] == ["data", "sft", "rl", "eval"]
    assert all(seconds is not None for _, seconds in run.stages)
    assert "| rl |" in run.summary_md and "<td>rl</td>" in html  # the summary table is on the page


def test_curves_follow_the_metrics_per_agent(tmp_path):
    run = load_run(hand_built_run(tmp_path / "run"))
    by_title = {chart.title: chart for chart in charts(run)}
    terms = {s.label: s.points for s in by_title["Reward terms: long agent"].series}
    assert set(terms) == {"collaboration", "length", "total (weighted)"}
    assert terms["collaboration"] == [(1, 0.25), (2, 0.25), (3, 0.25)]  # one correct episode in four
    assert by_title["Reward terms: long agent"].shaded == [1, 3]  # alternating: long trained at odd steps
    per_turn = {s.label: s.points for s in by_title["Own tokens per turn"].series}
    assert per_turn["long"][0] == (1, (10 + 11 + 12 + 13 + 4) / 5)  # from the episodes, not metrics.jsonl
    assert {s.label: s.points for s in by_title["Clip fraction"].series}["short"] == [(2, 0.2)]
    assert by_title["KL to the reference"].empty and "kl_coef" in by_title["KL to the reference"].note
    outcomes = {s.label: s.points[0][1] for s in by_title["How episodes ended"].series}
    assert outcomes == {"correct": 0.25, "format:short": 0.25, "turn_cap": 0.25, "wrong": 0.25}


def test_a_curve_breaks_where_its_agent_was_not_trained():
    points = [(1, 0.1), (3, 0.3), (4, 0.4)]
    assert _runs(points, [1, 2, 3, 4]) == [[(1, 0.1)], [(3, 0.3), (4, 0.4)]]
    assert _runs(points, [1, 3, 4]) == [points]  # log_every=2: logged steps are neighbours


def test_evaluation_folder_report_has_its_table_plot_and_records(eval_run):
    html = write_report(eval_run).read_text()
    assert "| " not in html.split("<main>")[1].split("Episodes")[0]  # the table is HTML, not Markdown text
    assert "<th>Toy Acc.</th>" in html or "<th>toy Acc.</th>" in html
    assert html.count("data:image/png;base64,") == 1  # plot.png, inlined
    group, = embedded_data(html)["groups"]
    assert group["key"] == "evaluation/toy" and group["counts"] == {"correct": 2, "wrong": 2}
    q1 = next(e for e in group["episodes"] if e["id"] == "q1")
    assert [t["role"] for t in q1["turns"]] == ["long", "short"]
    assert (q1["verdict"], q1["extracted"], q1["gold"], q1["class"]) == ("wrong", "3", "2", "wrong")


def test_transcript_text_cannot_break_out_of_the_page(tmp_path):
    root = hand_built_run(tmp_path / "run", steps=1)
    file = root / "rl" / "episodes" / "step_0001.jsonl"
    episodes = [json.loads(line) for line in file.read_text().splitlines()]
    hostile = "</script><script>document.title='x'</script><!-- <b>bold</b> \u2028"
    episodes[0]["turns"][0]["text"] = hostile
    file.write_text("".join(json.dumps(e) + "\n" for e in episodes))
    html = write_report(root).read_text()
    assert html.count("</script>") == 2  # the data element and the browser's script, nothing injected
    assert embedded_data(html)["groups"][0]["episodes"][0]["turns"][0]["text"] == hostile


def test_an_interrupted_evaluation_shows_the_episodes_it_finished(eval_run):
    for name in ("results.json", "table.md", "plot.png"):
        (eval_run / name).unlink()
    records = eval_run / "records" / "toy.jsonl"
    records.write_text("".join(records.read_text().splitlines(keepends=True)[:3]))
    html = write_report(eval_run).read_text()
    group, = embedded_data(html)["groups"]
    assert group["key"] == "evaluation/toy" and group["total"] == 3 and "No results.json yet" in html


def test_an_openrlhf_style_run_without_episodes_still_reports(tmp_path):
    root = hand_built_run(tmp_path / "run")
    for file in (root / "rl" / "episodes").iterdir():
        file.unlink()
    html = write_report(root).read_text()
    assert "Learning curves" in html and 'id="episodes"' not in html
    assert "needs rl/episodes/" in html  # tokens per turn cannot be computed, and the page says why


# ---------------------------------------------------------------------------------- the sampling rule


def test_round_robin_keeps_rare_outcomes_in_file_order():
    episodes = [{"class": "correct", "n": i} for i in range(100)]
    episodes.insert(50, {"class": "format:long", "n": "f"})
    episodes.append({"class": "turn_cap", "n": "t"})
    picked = round_robin(episodes, 6)
    assert [e["n"] for e in picked] == [0, 1, 2, 3, "f", "t"]
    assert round_robin(episodes[:3], 6) == episodes[:3]


def test_many_long_episodes_are_sampled_to_fit_the_budget():
    """12 steps x 32 episodes of 4 turns x 3,000 characters: about 4.6 MB of text to embed."""
    text = "step by step " * 230
    kinds = ["correct"] * 20 + ["wrong"] * 10 + ["format:long", "budget"]
    groups = [Group(f"step-{s}", f"RL step {s}", "rl",
                    [{"class": kind, "turns": [{"text": text}] * 4, "n": i} for i, kind in enumerate(kinds)])
              for s in range(1, 13)]
    shown, k = sample_groups(groups, max_per_group=64, max_bytes=1_000_000)
    size = sum(len(json.dumps(e)) for episodes in shown.values() for e in episodes)
    assert size <= 1_000_000 and 1 <= k < 32
    assert all(len(episodes) == k for episodes in shown.values())
    bigger, _ = sample_groups(groups, max_per_group=k + 1, max_bytes=10**12)
    assert sum(len(json.dumps(e)) for episodes in bigger.values() for e in episodes) > 1_000_000  # k is the most
    assert {"format:long", "budget"} <= {e["class"] for e in shown["step-1"]}  # rare outcomes stay visible


def test_a_long_turn_keeps_its_start_and_end():
    episode = hand_built_episode(0, "correct").to_dict()
    episode["turns"][0]["text"] = "A" * 5000 + "B" * 5000
    text = view_of_episode(episode)["turns"][0]["text"]
    assert text.startswith("A" * 100) and text.endswith("B" * 100) and "4,000 characters not shown" in text
    assert len(text) < TURN_CHARS + 100


def test_outcome_classes():
    assert [outcome_class(r, c) for r, c in [("answered", True), ("answered", False), ("format:long", False),
                                             ("budget", False)]] == ["correct", "wrong", "format:long", "budget"]


def test_page_states_the_rule_with_the_limit_it_used(tmp_path):
    run = load_run(hand_built_run(tmp_path / "run", kinds=("correct",) * 6 + ("wrong",)))
    data = browser_data(run, max_per_group=3)
    assert [len(g["episodes"]) for g in data["groups"]] == [3, 3, 3]
    assert data["groups"][0]["counts"] == {"correct": 6, "wrong": 1} and "at most 3 per RL step" in data["rule"]


# ------------------------------------------------------------------------------------- the commands


def test_cli_writes_the_page_and_errors_in_one_line(tmp_path, capsys):
    run = hand_built_run(tmp_path / "run")
    assert report_main([str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file() and capsys.readouterr().out.strip() == str(tmp_path / "r.html")
    assert report_main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    (tmp_path / "empty").mkdir()
    assert report_main([str(tmp_path / "empty")]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_evaluate_command_writes_the_report(tmp_path, monkeypatch, capsys):
    from longshort import evaluate as evaluate_cli

    def fake_benchmarks(config, *, out_dir, **kwargs):  # the real evaluation, on toy problems and fake engines
        problems = [Problem(id=f"q{i}", prompt=f"What is {i} plus {i}?", answer=str(2 * i)) for i in range(2)]
        engines = {"long": FakeEngine(lambda prompt: "<think>add</think>"), "short": FakeEngine(short_reply)}
        return evaluate(config, {"toy": problems}, out_dir=out_dir, engines=engines, progress=False,
                        system=kwargs.get("system"))

    import longshort.evaluation

    monkeypatch.setattr(longshort.evaluation, "evaluate_benchmarks", fake_benchmarks)  # evaluate imports it lazily
    assert evaluate_cli.main(["recipe=tiny", f"out={tmp_path / 'ev'}"]) == 0
    assert (tmp_path / "ev" / REPORT_NAME).is_file()
    assert f"report: {tmp_path / 'ev' / REPORT_NAME}" in capsys.readouterr().err


# --------------------------------------------------------------------------------- in a real browser


@needs_chromium
def test_a_person_opens_an_rl_episode_in_the_browser(pipeline_run):
    on_disk = [json.loads(line) for line in (pipeline_run / "rl" / "episodes" / "step_0002.jsonl").open()]
    with Chromium() as browser:
        browser.open((pipeline_run / REPORT_NAME).as_uri())
        assert browser.evaluate("document.querySelectorAll('#curves svg.chart').length") >= 8
        # pick step 2, filter to the long agent's format failures, click the second episode
        browser.evaluate("(() => { const s = document.getElementById('ep-group'); s.value = 'step-2'; "
                         "s.dispatchEvent(new Event('change')); })()")
        browser.evaluate("(() => { const s = document.getElementById('ep-outcome'); s.value = 'format:long'; "
                         "s.dispatchEvent(new Event('change')); })()")
        listed = browser.visible_text("#ep-list")
        failing = [e for e in on_disk if e["outcome"]["reason"] == "format:long"]
        assert len(failing) >= 2 and f"showing {len(failing)} of {len(failing)}" in browser.visible_text(".controls")
        browser.evaluate("document.querySelectorAll('#ep-list tr.episode')[1].click()")
        shown = browser.visible_text("#ep-detail")
    episode = failing[1]
    assert episode["problem_id"] in listed
    assert f"Episode {episode['problem_id']}, sample {episode['sample_index']}" in shown
    assert episode["prompt"] in shown and "format failure: long" in shown and "not graded" in shown
    first = episode["turns"][0]
    assert (f"turn 1 long · {len(first['action_ids'])} tokens · finish: {first['finish_reason']} · "
            f"format: failed ({first['format_reason']})") in shown
    assert "collaboration" in shown and "correctness" in shown  # each agent's reward terms


@needs_chromium
def test_a_link_opens_an_evaluation_episode_with_its_turns_in_order(eval_run):
    page = write_report(eval_run)
    with Chromium() as browser:
        browser.open(page.as_uri() + "#group=evaluation/toy&episode=q1~0")
        shown = browser.visible_text("#ep-detail")
        assert browser.evaluate("document.querySelector('#ep-list tr.open').innerText").startswith("q1")
        colours = browser.evaluate("[...document.querySelectorAll('#ep-detail .turn')]"
                                   ".map(t => getComputedStyle(t).borderLeftColor)")
        assert browser.evaluate("document.querySelector('#evaluation img.plot').naturalWidth") > 0
    assert "Episode q1, sample 0" in shown and "What is 1 plus 1?" in shown
    assert "wrong answer" in shown and "wrong (reason: wrong)" in shown
    assert re.search(r"gold answer\s+2\s+extracted\s+3", shown)
    long_at, short_at = shown.index("turn 1 long"), shown.index("turn 2 short")
    assert long_at < shown.index("<think>add the two numbers</think>") < short_at < shown.index("\\boxed{3}")
    assert len(set(colours)) == 2  # each agent in its own colour
