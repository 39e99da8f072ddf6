"""The training pipeline end to end on a tiny model: every stage runs, writes its outputs, and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def _overrides(tiny_dir: Path, out: Path) -> list[str]:
    return [f"output_dir={out}", f"agents.long.model.name_or_path={tiny_dir}",
            f"agents.short.model.name_or_path={tiny_dir}", "agents.long.model.dtype=fp32",
            "agents.short.model.dtype=fp32", "data.train.limit=8", "data.eval.limit=4", "sft.examples=8",
            "sft.epochs=1", "sft.batch_size=4", "sft.max_length=2048", "sft.save_every=1", "trainer.steps=2", "trainer.phase_steps=1",
            "trainer.save_every=1", "rollout.problems_per_step=2", "rollout.group_size=2",
            "agents.long.sampling.max_new_tokens=8", "agents.short.sampling.max_new_tokens=8",
            "eval.max_new_tokens=8", "eval.max_turns=2"]


def test_pipeline_runs_every_stage_and_writes_a_summary(tiny_dir, tmp_path):
    config = load_config("tiny", _overrides(tiny_dir, tmp_path / "run"))
    run = run_pipeline(config)
    for stage in ("data", "sft", "rl", "eval"):
        assert (run / stage / "DONE").is_file()
    assert {p.name for p in (run / "sft" / "coldstart").iterdir()} == {"long.jsonl", "short.jsonl"}
    assert (run / "sft" / "long" / "final" / "config.json").is_file()
    assert len((run / "rl" / "metrics.jsonl").read_text().splitlines()) == 2
    finals = json.loads((run / "rl" / "final.json").read_text())
    assert set(finals) == {"long", "short"} and stage_models(config, run, "rl") == finals
    summary = (run / "summary.md").read_text()
    assert [line.split("|")[1].strip() for line in summary.splitlines()[2:]] == ["base", "sft", "rl"]


def test_a_finished_stage_is_skipped_when_the_run_starts_again(tiny_dir, tmp_path, capsys):
    overrides = _overrides(tiny_dir, tmp_path / "run") + ["stages=[data,sft]"]
    assert main(["recipe=tiny", *overrides]) == 0
    final = tmp_path / "run" / "sft" / "short" / "final" / "model.safetensors"
    stamp = final.stat().st_mtime_ns
    assert main(["recipe=tiny", *overrides]) == 0
    assert final.stat().st_mtime_ns == stamp
    assert "done already" in capsys.readouterr().err
