"""Off a terminal, SFT, RL and evaluation print one plain untruncated line per step (or chunk); on a
terminal they keep their live bars and print no such lines."""
from __future__ import annotations

import re
import sys

import pytest

from longshort.plain_progress import PlainProgress
from longshort.train import main


def _argv(tiny_dir, out) -> list[str]:
    per_role = [f"agents.{role}.{key}" for role in ("long", "short") for key in
                (f"model.name_or_path={tiny_dir}", "model.dtype=fp32", "sampling.max_new_tokens=8")]
    return ["recipe=tiny", f"output_dir={out}", *per_role, "data.train.limit=8", "data.eval.limit=3",
            "sft.examples=8", "sft.epochs=1", "sft.batch_size=4", "sft.max_length=2048", "sft.save_every=10",
            "trainer.steps=2", "trainer.phase_steps=1", "trainer.save_every=10", "rollout.problems_per_step=2",
            "rollout.group_size=2", "rollout.max_batch_size=1", "eval.max_new_tokens=8", "eval.max_turns=2",
            "eval.weights=[rl]"]


def test_off_a_terminal_every_step_and_chunk_is_one_plain_line(tiny_dir, tmp_path, capsys):
    assert main(_argv(tiny_dir, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    sft = [line for line in err.splitlines() if line.startswith("sft ") and " step " in line]
    assert [re.match(r"sft (long|short) step (\d)/2 ", line).groups() for line in sft] == [
        ("long", "1"), ("long", "2"), ("short", "1"), ("short", "2")]
    assert all(re.search(r"loss \d+\.\d{4}  lr \d\.\d\de-\d\d  elapsed \d+:\d\d  left ", line) for line in sft)
    rl = [line for line in err.splitlines() if line.startswith("RL step ")]
    assert [line.split()[2] for line in rl] == ["1/2", "2/2"]
    for line in rl:  # every figure of the bar's summary, none cut at 80 columns
        assert re.search(r"acc \d\.\d\d  fin \d\.\d\d  R\(long\) [+-]\d\.\d\d  R\(short\) [+-]\d\.\d\d  "
                         r"train [a-z,]+  \d+s\+\d+s  elapsed \d+:\d\d  left ", line), line
    ev = [line for line in err.splitlines() if line.startswith("eval heldout ")]
    assert [line.split()[2] for line in ev] == ["2/3", "3/3"]  # chunks of 2 in-flight episodes, then the last
    assert all(re.search(r"acc \d+\.\d%  \d[\d,]* tok/s  elapsed", line) for line in ev)


def test_on_a_terminal_the_live_bars_stay_and_no_plain_lines_are_printed(tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(_argv(tiny_dir, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert not re.search(r"^(sft \w+ step|RL step|eval heldout) \d+/", err, re.MULTILINE)


def test_time_left_extrapolates_this_process_own_steps(capsys, monkeypatch):
    monkeypatch.setattr("longshort.plain_progress.time.perf_counter", lambda: 160.0)
    PlainProgress("RL step", total=10, start=4, began=100.0).line(6, "acc 0.50")
    assert capsys.readouterr().err == "RL step 6/10  acc 0.50  elapsed 1:00  left 2:00\n"


@pytest.mark.parametrize("seconds, text", [(59.6, "1:00"), (3725, "1:02:05")])
def test_long_runs_show_hours(seconds, text):
    from longshort.plain_progress import _clock

    assert _clock(seconds) == text
