"""``python -m longshort.reproduce``: the tiny table end to end on tiny models, resuming, and the paper's plan."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from longshort.reproduce import run as reproduce
from longshort.models import tiny_model
from longshort.reproduce.tables import TableError, load_table, parse_table, table_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_model")
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _agents(roles: tuple[str, ...], model: Path | None = None) -> list[str]:
    """Toy agents: fp32, 12 tokens a turn, and the tiny model where the spec names no other run's weights."""
    keys = ["model.dtype=fp32", "sampling.max_new_tokens=12"] + ([f"model.name_or_path={model}"] if model else [])
    return [f"agents.{role}.{key}" for role in roles for key in keys]


ROLES = {"longcot_tiny": ("single",), "skip_longcot_tiny": ("single",), "longshort_longcot_tiny": ("long", "short")}


def toy_tiny_spec(tiny_dir: Path, out: Path) -> Path:
    """recipes/tables/tiny.yaml at toy sizes on the tiny random model: the same runs, rows and links
    (two seeds where the spec has more)."""
    spec = yaml.safe_load((table_dir() / "tiny.yaml").read_text())
    spec["output_dir"] = str(out)
    toy = ["data.train.limit=8", "data.eval.limit=4", "sft.examples=8", "sft.epochs=1", "sft.batch_size=4",
           "sft.max_length=2048", "sft.save_every=1", "trainer.steps=2", "trainer.save_every=1",
           "rollout.problems_per_step=2", "rollout.group_size=2", "eval.max_new_tokens=12", "eval.max_turns=2"]
    for run in spec["runs"].values():  # toy sizes after each run's own sizes, so they win
        linked = any("{runs." in o and ".model.name_or_path=" in o for o in run["overrides"])
        run["overrides"] += [*toy, *_agents(ROLES[run["recipe"]], None if linked else tiny_dir)]
        if run["recipe"] == "longshort_longcot_tiny":
            # A random model's rollouts never reach the gold answer, so the synthesis builder would keep no
            # transcript; the toy table cold-starts the pair from gold steps instead (synthesis has its own test).
            run["overrides"].append("sft.coldstart=long_short")
        if run.get("seeds"):
            run["seeds"] = run["seeds"][:2]
    args = spec["analyses"]["step_entropy"]["args"]
    for flag, value in (("--limit", "4"), ("--chain-tokens", "12"), ("--answer-tokens", "4")):
        args[args.index(flag) + 1] = value
    path = out.parent / "toy_tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_tiny_table_runs_end_to_end_resumes_without_redoing_rows_and_writes_table_and_plot(tiny_dir, tmp_path):
    path = toy_tiny_spec(tiny_dir, tmp_path / "table")
    spec = load_table(str(path))
    done: list[str] = []

    def killed_after_skip_training(command, layout):
        done.append(command.key)
        seconds = reproduce.execute(command, layout)
        if command.key == "train_skip":  # dies after the run's own work, before reproduce marks it done
            raise RuntimeError("simulated kill")
        return seconds

    with pytest.raises(RuntimeError, match="simulated kill"):
        reproduce.run_table(spec, tmp_path / "table", runner=killed_after_skip_training)
    trained = ["train_longcot", "train_longcot_len3", "train_longshort_s1", "train_longshort_s2",
               "train_longshort_ungated", "train_longshort_gold", "train_skip"]
    assert done == trained
    finished = tmp_path / "table" / "runs" / "longcot" / "eval" / "sft" / "results.json"
    skip_weights = tmp_path / "table" / "runs" / "skip" / "sft" / "single" / "final" / "model.safetensors"
    stamps = finished.stat().st_mtime_ns, skip_weights.stat().st_mtime_ns

    again: list[str] = []

    def counting(command, layout):
        again.append(command.key)
        return reproduce.execute(command, layout)

    table = reproduce.run_table(spec, tmp_path / "table", runner=counting)
    assert again == ["train_skip", "train_skip_body", "train_longcot_more", "analysis_step_entropy"]  # not redone
    assert (finished.stat().st_mtime_ns, skip_weights.stat().st_mtime_ns) == stamps  # nor the skip run's stages
    text = table.read_text()
    main = text.split("### ")[0]
    for row in spec.rows:
        label = f"{row.label}, mean of 2 seeds" if spec.runs.get(row.run) and spec.runs[row.run].seeds else row.label
        assert f"| {label} |" in main
    assert "Not measured yet" not in text and "Δ Acc. (points) [paired 95% CI]" in main
    lines = {line.split(" | ")[0][2:]: line.split(" | ") for line in main.splitlines() if line.startswith("| ")}
    assert lines["Long-Short RL, mean of 2 seeds"][5] == "long-CoT SFT"  # paired with the baseline
    assert lines["80% random steps -> [SKIP]"][5] == "long-CoT own chains, answer after thinking"  # its own 'versus'
    assert lines["long-CoT SFT"][5] == ""  # the baseline is not compared with itself
    seeds = text.split("### Seeds")[1].split("###")[0]
    assert "| Long-Short RL | 1 |" in seeds and "| Long-Short RL | 2 |" in seeds and "mean ± SD of 2" in seeds
    assert "### Accuracy (%) by number of gold steps" in text
    budgets = text.split("### Starting weights and training budget")[1].split("##")[0]
    assert "| long-CoT + length penalty, weight 3 | single: runs/longcot/sft/single/final | - | 2 x 8 |" in budgets
    assert (tmp_path / "table" / "plot.png").stat().st_size > 0
    rows = json.loads((tmp_path / "table" / "table.json").read_text())["rows"]
    pruned = {row["system"]: row["redundancy"] for row in rows if "redundancy" in row}
    assert set(pruned) == {r.label for r in spec.rows if r.analysis}
    assert all(0 <= r["removed_redundant"] <= r["removed"] for r in pruned.values())
    assert set(json.loads((tmp_path / "table" / "timings.json").read_text())) == {
        *trained, "train_skip_body", "train_longcot_more", "analysis_step_entropy"}
    # where the time went: every command, and a training command split into its stages and RL steps
    breakdown = text.split("## Where the time went")[1]
    for key in ("train_longcot", "train_longshort_s1", "train_skip", "analysis_step_entropy"):
        assert f"| {key} | " in breakdown
    assert re.search(r"\| train_longcot \| [\d.]+ \|( [\d.]+ \|){5} 2 \(\d+ s\) \|", breakdown)
    assert re.search(r"\| \*\*total\*\* \| \*\*[\d.]+\*\* \([\d.]+ h\) \|", breakdown)
    assert reproduce.main([f"table={path}"]) == 0  # everything done: only the table is written again
    runs = tmp_path / "table" / "runs"
    longcot = [json.loads(line) for line in (runs / "longcot" / "sft" / "coldstart" / "single.jsonl").open()]
    for record in longcot:  # the long-CoT model learns long chains whose redundant steps are recorded
        text, kinds = record["turns"][0]["text"], record["meta"]["kinds"]
        assert text.startswith("<think>\n") and text.endswith(f"\\boxed{{{record['answer']}}}$.")
        assert text.split("</think>")[0].count("\n\n") == len(kinds) - 1 and kinds.count("gold") < len(kinds)
    skip = [json.loads(line) for line in (runs / "skip" / "sft" / "coldstart" / "single.jsonl").open()]
    for record in skip:  # the [SKIP] cold start prunes the long chains, and knows which steps were redundant
        meta = record["meta"]
        assert len(meta["kinds"]) == len(meta["step_entropy"])
        assert len(meta["pruned"]) == int(0.8 * len(meta["kinds"]) + 1e-9)


def test_paper_dry_run_lists_every_rows_commands(capsys, tmp_path):
    assert reproduce.main(["table=paper", f"out={tmp_path}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    spec = load_table("paper")
    assert out.count("python -m longshort.train recipe=") == len(spec.runs)
    for row in spec.rows:
        for group in spec.columns:
            assert f"evaluate '{row.label}' on {', '.join(group.benchmarks)} (k={group.samples})" in out
    assert "[done]" not in out and not any(tmp_path.iterdir())  # a dry run writes nothing


def test_table_specs_fail_in_one_line_with_the_fix(capsys):
    with pytest.raises(TableError, match="did you mean 'tiny'"):
        load_table("tinny")
    base = {"name": "t", "title": "t", "output_dir": "x", "runs": {"a": {"recipe": "tiny"}}}
    with pytest.raises(TableError, match="names run 'b'"):
        parse_table({**base, "rows": [{"label": "r", "run": "b"}]})
    with pytest.raises(TableError, match=r"unknown key 'wieghts'.*did you mean 'weights'"):
        parse_table({**base, "rows": [{"label": "r", "run": "a", "wieghts": "rl"}]})
    with pytest.raises(TableError, match="not an earlier run"):
        parse_table({**base, "runs": {"a": {"recipe": "tiny", "overrides": ["x={runs.b}"]}, "b": {"recipe": "tiny"}},
                     "rows": [{"label": "r", "run": "a"}]})
    analyses = {"analyses": {"e": {"args": ["--model", "{runs.a}/sft/single/final"]}}}
    with pytest.raises(TableError, match="score must be one of mean, sum, body, got 'summ'.*did you mean 'sum'"):
        parse_table({**base, **analyses, "rows": [{"label": "r", "analysis": "e", "score": "summ"}]})
    assert reproduce.main(["table=paper", "bogus"]) == 2
    assert "unknown argument 'bogus'" in capsys.readouterr().err


def test_timings_count_a_command_killed_midway_and_add_its_resumed_attempt(tiny_dir, tmp_path):
    path = toy_tiny_spec(tiny_dir, tmp_path / "table")
    spec = load_table(str(path))
    timings = tmp_path / "table" / "timings.json"
    seen_while_running: list[float] = []

    def killed_inside_the_first_command(command, layout):
        deadline = time.perf_counter() + 5.0
        while not timings.is_file() and time.perf_counter() < deadline:  # the flush thread writes it meanwhile
            time.sleep(0.01)
        seen_while_running.append(json.loads(timings.read_text())[command.key])
        time.sleep(0.2)
        raise KeyboardInterrupt  # no marker: the table would run this command again

    with pytest.raises(KeyboardInterrupt):
        reproduce.run_table(spec, tmp_path / "table", runner=killed_inside_the_first_command, timings_every=0.02)
    first = json.loads(timings.read_text())["train_longcot"]
    assert 0 <= seen_while_running[0] < first and first >= 0.2
    assert not list((tmp_path / "table").glob("steps/*.done"))

    def finishes_quickly_then_stops(command, layout):
        time.sleep(0.3)
        if command.key != "train_longcot":
            raise KeyboardInterrupt
        return 0.3

    with pytest.raises(KeyboardInterrupt):
        reproduce.run_table(spec, tmp_path / "table", runner=finishes_quickly_then_stops, timings_every=60)
    assert json.loads(timings.read_text())["train_longcot"] >= first + 0.25  # both attempts are counted
