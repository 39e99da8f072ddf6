"""The training pipeline end to end on a tiny model: every stage runs, writes its outputs, and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longshort.config import load_config
from longshort.models import tiny_model
from longshort.train import main, run_pipeline, stage_models


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_model")
    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _overrides(tiny_dir: Path, out: Path, roles: tuple[str, ...] = ("long", "short")) -> list[str]:
    """A seconds-long run of a recipe: every agent (``roles``) on the tiny model, every stage tiny."""
    per_role = [f"agents.{role}.{key}" for role in roles for key in
                (f"model.name_or_path={tiny_dir}", "model.dtype=fp32", "sampling.max_new_tokens=8")]
    return [f"output_dir={out}", *per_role, "data.train.limit=8", "data.eval.limit=4", "sft.examples=8",
            "sft.epochs=1", "sft.batch_size=4", "sft.max_length=2048", "sft.save_every=1", "trainer.steps=2",
            "trainer.phase_steps=1", "trainer.save_every=1", "rollout.problems_per_step=2", "rollout.group_size=2",
            "eval.max_new_tokens=8", "eval.max_turns=2"]


def test_pipeline_runs_every_stage_and_writes_a_summary(tiny_dir, tmp_path):
    # 32 tokens for the long agent: a random model sometimes stops early, so turn lengths differ within
    # a group and the length reward gives the long agent advantages that are not all 0 (with 8 tokens
    # every turn is cut at 8, every advantage is 0 and no update would ever run); the paper's ungated
    # length term, because a random model is never right and the default gate pays length only then
    extra = ["agents.long.sampling.max_new_tokens=32", "rollout.group_size=4", "rollout.problems_per_step=4",
             "rewards.length_gate=paper"]
    config = load_config("tiny", _overrides(tiny_dir, tmp_path / "run") + extra)
    run = run_pipeline(config)
    for stage in ("data", "sft", "rl", "eval"):
        assert (run / stage / "DONE").is_file()
    assert {p.name for p in (run / "sft" / "coldstart").iterdir()} == {"long.jsonl", "short.jsonl"}
    assert (run / "sft" / "long" / "final" / "config.json").is_file()
    assert len((run / "rl" / "metrics.jsonl").read_text().splitlines()) == 2
    finals = json.loads((run / "rl" / "final.json").read_text())
    assert set(finals) == {"long", "short"} and stage_models(config, run, "rl") == finals
    metrics = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert sum(m["train/long/trained_samples"] for m in metrics) > 0  # an update really ran
    assert any(m["train/long/grad_norm"] > 0 for m in metrics)
    before = load_file(run / "sft" / "long" / "final" / "model.safetensors")
    after = load_file(Path(finals["long"]) / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)  # and moved the weights
    table, *paired, trend_title, trend = (run / "summary.md").read_text().strip().split("\n\n")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == ["base", "sft", "rl"]
    assert all("[" in line.split("|")[3] for line in table.splitlines()[2:])  # accuracy with its interval
    # each checkpoint against the one before, paired on the held-out items
    assert [block.split(":")[1].split("(")[0].strip() for block in paired[0::2]] == ["sft minus base", "rl minus sft"]
    assert all(row.split("|")[1].strip() == "heldout" for row in paired[1::2] for row in row.splitlines()[2:])
    assert trend_title.startswith("RL rollouts")
    assert [line.split("|")[1].strip() for line in trend.splitlines()[2:]] == ["reward (long)", "reward (short)",
                                                                             "accuracy"]


def test_a_finished_stage_is_skipped_when_the_run_starts_again(tiny_dir, tmp_path, capsys):
    overrides = _overrides(tiny_dir, tmp_path / "run") + ["stages=[data,sft]"]
    assert main(["recipe=tiny", *overrides]) == 0
    final = tmp_path / "run" / "sft" / "short" / "final" / "model.safetensors"
    stamp = final.stat().st_mtime_ns
    assert main(["recipe=tiny", *overrides]) == 0
    assert final.stat().st_mtime_ns == stamp
    assert "done already" in capsys.readouterr().err


def test_step_entropy_recipe_prunes_the_lowest_entropy_steps_and_trains_with_one_skip_token(tiny_dir, tmp_path):
    config = load_config("step_entropy_tiny", _overrides(tiny_dir, tmp_path / "run", roles=("single",)))
    run = run_pipeline(config)
    for stage in ("data", "sft", "rl", "eval"):
        assert (run / stage / "DONE").is_file()
    records = [json.loads(line) for line in (run / "sft" / "coldstart" / "single.jsonl").read_text().splitlines()]
    problems = {row["id"]: row for row in map(json.loads, (run / "data" / "train.jsonl").read_text().splitlines())}
    assert len(records) == 8
    for record in records:
        steps = problems[record["id"]]["meta"]["steps"]
        scores, pruned = record["meta"]["step_entropy"], record["meta"]["pruned"]
        assert len(scores) == len(steps) and len(pruned) == int(0.8 * len(steps) + 1e-9)
        assert sorted(pruned) == sorted(sorted(range(len(scores)), key=scores.__getitem__)[:len(pruned)])
        text = record["turns"][0]["text"]
        assert text.count("[SKIP]") == len(pruned) and text.startswith("<think>\n")
        kept = [step.strip() for i, step in enumerate(steps) if i not in pruned]
        positions = [text.index(step) for step in kept]
        assert positions == sorted(positions)  # kept steps stay in their order
        assert text.endswith(f"\\boxed{{{problems[record['id']]['answer']}}}.")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run / "sft" / "single" / "final")
    assert len(tokenizer.encode("[SKIP]", add_special_tokens=False)) == 1
    metrics = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert {"reward/single/skip_ratio", "reward/single/correctness"} <= set(metrics[0])
