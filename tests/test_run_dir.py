"""The run folder: held by one live run at a time (a killed run leaves no stale lock), and a full disk
reported in one line naming ``output_dir``, with nothing half-written trusted by the next attempt."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longshort.jsonl import complete_lines
from longshort.paths import write_text_atomically
from longshort.run_dir import hold_run_dir
from longshort.train import main

ROOT = Path(__file__).resolve().parents[1]


def _train(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "longshort.train", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_a_second_run_on_a_folder_a_live_run_holds_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    with hold_run_dir(run):
        done = _train(["recipe=tiny", f"output_dir={run}", "stages=[data]"])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: output_dir={run} is in use by another running longshort.train; wait for it to finish "
        "(or stop it), or pass another output_dir")
    assert not (run / "data").exists()


def test_a_killed_run_leaves_no_stale_lock(tmp_path, capsys):
    run = tmp_path / "run"
    code = (f"import os, signal\nfrom pathlib import Path\nfrom longshort.run_dir import hold_run_dir\n"
            f"with hold_run_dir(Path({str(run)!r})):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -9 and (run / ".lock").is_file()
    assert main(["recipe=tiny", f"output_dir={run}", "stages=[data]", "data.train.limit=4", "data.eval.limit=2"]) == 0
    assert (run / "data" / "DONE").is_file()


def _disk_full_at(monkeypatch, fragment: str) -> list[str]:
    """``os.fsync`` fails with ENOSPC for every file whose path contains ``fragment`` (what a full disk
    answers once the page cache has to reach it); returns the paths it failed on."""
    failed: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        where = os.readlink(f"/proc/self/fd/{fd}")
        if fragment in where:
            failed.append(where)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return failed


def _argv(tiny_dir: Path, run: Path) -> list[str]:
    per_role = [f"agents.{role}.{key}" for role in ("long", "short") for key in
                (f"model.name_or_path={tiny_dir}", "model.dtype=fp32", "sampling.max_new_tokens=8")]
    return ["recipe=tiny", f"output_dir={run}", *per_role, "data.train.limit=4", "data.eval.limit=2",
            "sft.examples=4", "sft.epochs=1", "sft.batch_size=2", "sft.max_length=2048", "sft.save_every=1",
            "trainer.steps=2", "trainer.phase_steps=1", "trainer.save_every=1", "rollout.problems_per_step=2",
            "rollout.group_size=2", "eval.max_new_tokens=8", "eval.max_turns=2", "eval.weights=[rl]"]


@pytest.mark.parametrize("fragment, stage", [
    ("data/.eval.jsonl.tmp", "data"),            # an atomic file write
    ("sft/short/.checkpoint-1.tmp", "sft"),      # a checkpoint folder (save_pretrained + optimiser state)
    ("rl/checkpoints/.step_0001.tmp", "rl"),     # an RL checkpoint
    ("rl/metrics.jsonl", "rl"),                  # an appended log line
    ("eval/rl/records/heldout.jsonl", "eval"),   # an evaluation record
])
def test_a_full_disk_stops_in_one_line_naming_output_dir_and_the_next_attempt_trusts_nothing_half_written(
        tiny_dir, tmp_path, capsys, monkeypatch, fragment, stage):
    run = tmp_path / "run"
    failed = _disk_full_at(monkeypatch, fragment)
    assert main(_argv(tiny_dir, run)) == 2
    assert failed, f"no write under {fragment}"
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert "Traceback" not in err and last.startswith("error: ") and str(run) in last and "run complete" not in err
    assert "full" in last or "No space left" in last, last
    assert not (run / stage / "DONE").exists()
    assert not list(run.rglob(".*.tmp"))  # what the failed write began is gone, not waiting to be trusted
    monkeypatch.undo()
    assert main(_argv(tiny_dir, run)) == 0  # space freed: the same command finishes the run
    for path in run.rglob("*.jsonl"):
        assert len(complete_lines(path)) == len([line for line in path.read_text().splitlines() if line.strip()])
    metrics = [json.loads(line) for line in (run / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [1, 2]


def test_an_atomic_write_that_fails_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "final.json"
    write_text_atomically(target, '{"long": "a"}\n')
    _disk_full_at(monkeypatch, str(tmp_path))
    with pytest.raises(OSError):
        write_text_atomically(target, '{"long": "b"}\n')
    assert target.read_text() == '{"long": "a"}\n' and not list(tmp_path.glob(".*.tmp"))
