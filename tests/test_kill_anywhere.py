"""Killed at any moment: the pipeline (data, SFT, RL, eval on a tiny random model) run in a subprocess,
SIGKILLed again and again, restarted each time with the same command, ends exactly as an uninterrupted run.

Kills come from the write-point hook (``$LONGSHORT_KILL_AT_WRITE``, ``longshort.paths.fault_point``):
just before the rename of an atomic write (a checkpoint, an episodes file, a DONE marker, ...) or
halfway through an appended line (``metrics.jsonl``, the SFT log, evaluation records); the slow test
adds kills at random moments in between. The run is the one-agent step-entropy recipe, whose rollouts
are reproducible (one engine; ``longshort.trainers.grpo``), evaluated greedily on one request at a time.

What must be equal to the uninterrupted run: every file a stage or a resume reads (data, cold-start
transcripts, SFT and RL weights, RL episodes and checkpoints, metrics and the SFT log, evaluation
records, results and tables, summaries, DONE markers), after taking out what is not the run's result:
wall-clock figures (``time/*`` metrics, ``seconds``, ``generation_seconds``, ``tokens_per_second``,
and ``generated_tokens``, which counts the tokens the last process generated), the output folder's
path, the order of appended evaluation records, and the global Python and torch RNG states in the RL
checkpoint (they differ between two uninterrupted runs as well; the training step draws from its own
seeded generators, so nothing it computes depends on them). Not compared: TensorBoard event files
(named by host and time; a resume purges events past its step) and ``report.html`` (renders times).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from longshort.paths import KILL_AT_WRITE_ENV

ROOT = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL
TIMINGS = ("seconds", "generation_seconds", "tokens_per_second", "generated_tokens")
KINDS = {"checkpoint": r"rename \S*(checkpoint-\d+|checkpoints/step_\d+|/final)$", "metrics": r"append \S*metrics.jsonl",
         "sft log": r"append \S*log.jsonl", "episodes": r"rename \S*episodes/", "DONE": r"rename \S*/DONE$",
         "eval record": r"append \S*records/", "eval results": r"rename \S*eval/\w+/(results.json|table.md)"}


def _command(tiny_dir: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "longshort.train", "recipe=step_entropy_tiny", f"output_dir={run}",
            f"agents.single.model.name_or_path={tiny_dir}", "agents.single.model.dtype=fp32",
            "agents.single.sampling.max_new_tokens=16", "env.max_total_tokens=16", "data.train.limit=8",
            "data.eval.limit=3", "sft.examples=8", "sft.epochs=1", "sft.batch_size=4", "sft.max_length=512",
            "sft.save_every=1", "trainer.steps=3", "trainer.save_every=1", "rollout.problems_per_step=2",
            "rollout.group_size=2", "rollout.max_batch_size=1", "eval.max_new_tokens=16", "eval.temperature=0.0"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != KILL_AT_WRITE_ENV}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}", **extra}


@dataclass
class Survived:
    """What a run with kills went through: each kill (its write point, or the moment it came) and the time."""

    kills: list[str] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0

    def kinds(self) -> set[str]:
        return {kind for label in self.kills for kind, pattern in KINDS.items() if re.search(pattern, label)}


def _attempt(command: list[str], env: dict[str, str], *, kill_after: float | None = None) -> tuple[int, str]:
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def run_with_kills(command: list[str], plan) -> Survived:
    """Run ``command`` until it exits 0; ``plan(attempt)`` gives each attempt's kill: ("write", N[:TEXT]),
    ("moment", seconds) or None for none. Every attempt ends killed or complete, never with an error."""
    survived, began = Survived(), time.perf_counter()
    while True:
        kill = plan(survived.attempts)
        survived.attempts += 1
        if kill is not None and kill[0] == "write":
            status, err = _attempt(command, _env(**{KILL_AT_WRITE_ENV: kill[1]}))
        else:
            status, err = _attempt(command, _env(), kill_after=kill[1] if kill else None)
        if status == 0:
            break
        assert status == KILLED, f"attempt {survived.attempts} ended with {status}, not a kill:\n{err[-3000:]}"
        found = re.findall(r"fault injection: SIGKILL at write point \d+ \((.*)\)", err)
        survived.kills.append(found[-1] if found else f"at {kill[1]:.1f} s")
        assert survived.attempts < 80, "the run makes no progress between kills"
    survived.seconds = time.perf_counter() - began
    return survived


# ---------------------------------------------------------------------------------- comparing runs


def snapshot(run: Path) -> dict[str, object]:
    """Every file of ``run`` a stage or a resume reads, normalised as the module docstring says."""
    out: dict[str, object] = {}
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run).as_posix()
        if not path.is_file() or "tensorboard/" in rel or rel in ("report.html", ".lock") or rel.endswith("/.lock"):
            continue
        if path.name == "trainer_state.pt" and rel.startswith("rl/"):
            state = torch.load(path, weights_only=True)
            out[rel] = {k: _digest(v) for k, v in state.items() if k not in ("python_rng", "torch_rng")}
        elif path.suffix in (".json", ".jsonl", ".md", ".yaml") or path.name == "DONE":
            text = path.read_text().replace(str(run), "<run>")
            if path.suffix == ".jsonl" or path.name == "DONE":
                rows = [_untimed(json.loads(line)) for line in text.splitlines()]
                out[rel] = sorted(rows, key=json.dumps) if "/records/" in rel else rows
            elif path.suffix == ".json":
                out[rel] = _untimed(json.loads(text))
            else:
                out[rel] = text
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMINGS and not k.startswith("time/")}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _digest(value) -> str:
    if isinstance(value, torch.Tensor):
        return hashlib.sha256(value.numpy().tobytes()).hexdigest()
    return json.dumps(value, sort_keys=True, default=str)


def assert_nothing_partial(run: Path) -> None:
    """No temporary file left behind, every JSONL line complete, every JSON file whole."""
    leftovers = [p for p in run.rglob(".*.tmp")]
    assert not leftovers, leftovers
    for path in run.rglob("*.jsonl"):
        if "tensorboard" not in path.parts:
            data = path.read_bytes()
            assert not data or data.endswith(b"\n"), path
            [json.loads(line) for line in data.splitlines()]
    for path in [*run.rglob("*.json"), *run.rglob("DONE")]:
        json.loads(path.read_text())


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = snapshot(run), snapshot(reference)
    assert sorted(got) == sorted(want)
    differing = [name for name in want if got[name] != want[name]]
    assert not differing, differing


@pytest.fixture(scope="module")
def reference(tiny_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    status, err = _attempt(_command(tiny_dir, run), _env())
    assert status == 0, err[-3000:]
    return run


# ------------------------------------------------------------------------------------------- tests

# One kill inside each kind of write a resume trusts, in pipeline order; then a run to the end.
TARGETED = [("write", "1:checkpoint-"), ("write", "2:episodes/"), ("write", "2:metrics.jsonl"),
            ("write", "2:records/"), ("write", "1:eval/DONE")]


def test_killed_inside_each_kind_of_write_the_run_ends_as_an_uninterrupted_one(tiny_dir, tmp_path, reference):
    run = tmp_path / "run"
    survived = run_with_kills(_command(tiny_dir, run), lambda i: TARGETED[i] if i < len(TARGETED) else None)
    print(f"\nkilled {len(survived.kills)} times in {survived.attempts} attempts, {survived.seconds:.1f} s: "
          f"{survived.kills}")
    assert len(survived.kills) == len(TARGETED)
    assert survived.kinds() >= {"checkpoint", "episodes", "metrics", "eval record", "DONE"}
    assert_nothing_partial(run)
    assert_same_run(run, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [30, 31, 32, 33])
def test_killed_at_many_random_moments_the_run_ends_as_an_uninterrupted_one(tiny_dir, tmp_path, reference, seed):
    """Kills at random write points (N uniform in 1..30) and, every third attempt, at a random moment
    (0.5-9 s after the start: imports, model loading, SFT and RL steps, generation), until it finishes;
    four seeds, each a run of its own."""
    rng = random.Random(seed)

    def plan(attempt: int):
        if attempt % 3 == 2:
            return "moment", rng.uniform(0.5, 9.0)
        return "write", str(rng.randint(1, 30))

    run = tmp_path / "run"
    survived = run_with_kills(_command(tiny_dir, run), plan)
    print(f"\nseed {seed}: killed {len(survived.kills)} times in {survived.attempts} attempts, "
          f"{survived.seconds:.1f} s; kinds {sorted(survived.kinds())}: {survived.kills}")
    assert survived.kills
    assert_nothing_partial(run)
    assert_same_run(run, reference)
