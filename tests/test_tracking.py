"""Weights & Biases as an optional logger: a real offline W&B run of the embedded trainer holds the
metrics of metrics.jsonl and a table of each step's episodes; wandb is never imported unless asked
for; the OpenRLHF backend gets OpenRLHF's own logger flags.

The offline run is read back from its ``.wandb`` file (a LevelDB-style log of protobuf records,
which wandb itself has no public reader for), so the test sees what ``wandb sync`` would upload.
"""
from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import longshort.config as config_module
from longshort.config import ConfigError, load_config
from longshort.data import load_source
from longshort.models import tiny_model


def wandb_history(run_dir: Path) -> list[dict]:
    """The ``history`` records (one per logged step) of an offline W&B run folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full, first | middle, last
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """wandb offline, silent, with its settings and caches inside the test's folder."""
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'longshort[wandb]'; .ci/run installs it)")
    for name, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / folder))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_offline_wandb_run_holds_the_metrics_and_episode_tables(tmp_path, wandb_env):
    from longshort.trainers import GRPOTrainer

    model, tokenizer = tiny_model(seed=0)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    per_role = [f"agents.{role}.{key}" for role in ("long", "short") for key in
                (f"model.name_or_path={tmp_path / 'model'}", "model.dtype=fp32", "sampling.max_new_tokens=6")]
    overrides = [f"output_dir={tmp_path / 'run'}", *per_role, "data.train.limit=8", "rollout.problems_per_step=2",
                 "rollout.group_size=2", "trainer.save_every=1", "logging.wandb.project=longshort-test",
                 "logging.wandb.mode=offline", "logging.wandb.episodes_per_step=3", "logging.wandb.tags=[tiny]"]
    config = load_config("tiny", [*overrides, "trainer.steps=3"])
    problems = load_source(config.data.train, config.seed)
    out = tmp_path / "run" / "rl"
    interrupted = GRPOTrainer(config, problems, out, progress=False)
    real_step = interrupted.step

    def killed_in_the_third_step(index: int) -> dict:
        if index == 2:
            raise KeyboardInterrupt
        return real_step(index)

    interrupted.step = killed_in_the_third_step
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    GRPOTrainer(config, problems, out, progress=False).train()  # resume from step 2

    runs = sorted((out / "wandb").glob("offline-run-*"))
    run_id = (out / "wandb_run_id").read_text().strip()
    # the resumed run continues the first (wandb adds "-1" to the folder when both start in the same second)
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", run.name) for run in runs)
    history = wandb_history(runs[0]) + wandb_history(runs[1])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["_step"] for row in history] == [1, 2, 3]
    for row, line in zip(history, metrics, strict=True):
        scalars = {k: v for k, v in line.items() if isinstance(v, (int, float)) and k != "step"}
        assert {k: row[k] for k in scalars} == pytest.approx(scalars)  # what TensorBoard gets, nothing left out
        assert row["episodes/_type"] == "table-file" and row["episodes/nrows"] == 3
    table = json.loads((runs[1] / "files" / history[2]["episodes/path"]).read_text())
    assert table["columns"] == ["step", "problem", "sample", "outcome", "verdict", "tokens/long", "tokens/short",
                                "reward/long", "reward/short", "transcript"]
    episodes = {(e["problem_id"], e["sample_index"]): e for e in
                map(json.loads, (out / "episodes" / "step_0003.jsonl").read_text().splitlines())}
    for step, problem, sample, *_, transcript in table["data"]:
        episode = episodes[(problem, sample)]
        assert step == 3 and all(turn["text"] in transcript for turn in episode["turns"])


def test_wandb_is_imported_only_when_enabled():
    code = ("import sys, longshort, agents, envs, longshort.train, longshort.evaluate, longshort.report, "
            "longshort.trainers.grpo, longshort.trainers.tracking, longshort.trainers.openrlhf.commands; "
            "print('wandb' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_a_missing_wandb_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setattr(config_module, "module_available", lambda name: name != "wandb")
    with pytest.raises(ConfigError, match=r"wandb is not installed: pip install 'longshort\[wandb\]'"):
        load_config("tiny", ["logging.wandb.project=p"])
    load_config("tiny", ["logging.wandb.project=p", "stages=[data,eval]"])  # no RL stage: nothing to log
    load_config("tiny")  # off by default


def test_openrlhf_backend_gets_openrlhfs_wandb_flags(monkeypatch):
    pytest.importorskip("openrlhf", reason="openrlhf not installed (pip install --no-deps openrlhf==0.11.2)")
    from longshort.trainers.openrlhf import commands as launcher, preflight

    config = load_config("qwen7b", ["logging.wandb.project=lsq", "logging.wandb.mode=offline",
                                    "logging.wandb.entity=team"])
    commands = [command for command in launcher.plan(config) if command.module]
    for command in commands:
        args = preflight.parse_flags(command.module, command.flags)
        assert (args.logger.wandb.project, args.logger.wandb.org, args.logger.wandb.group) == ("lsq", "team", "qwen7b")
        assert args.logger.wandb.key == "env"  # switches OpenRLHF's W&B on; the secret stays in the environment
        assert dict(command.env)["WANDB_MODE"] == "offline"
    names = [preflight.parse_flags(c.module, c.flags).logger.wandb.run_name for c in commands]
    assert len(set(names)) == len(names) == 4  # each SFT and each RL phase is its own W&B run
    plain = [c for c in launcher.plan(load_config("qwen7b")) if c.module]
    assert not any(flag.startswith("--logger.wandb") for c in plain for flag in c.flags)
    assert not any(key == "WANDB_MODE" for c in plain for key, _ in c.env)
