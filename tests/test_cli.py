"""The commands as a user meets them: help and config answers that never import torch, and user
mistakes found at run time reported like config mistakes (one line, exit status 2, no traceback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longshort import train
from longshort.train import main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "ray", "vllm", "openrlhf", "deepspeed", "wandb", "datasets")


def _in_fresh_process(module: str, argv: list[str]) -> dict:
    """Run ``module.main(argv)`` in a new interpreter; its exit status and the heavy modules it imported."""
    code = (f"import json, sys\nfrom {module} import main\n"
            f"try:\n    status = main({argv!r})\nexcept SystemExit as exit:\n    status = exit.code\n"
            f"print(json.dumps({{'status': status, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["longshort.train", "longshort.evaluate"])
@pytest.mark.parametrize("argv, status", [
    (["--help"], 0),
    (["--help-config"], 0),
    (["recipe=tiny", "--print-config"], 0),
    (["recipe=tiny", "env.max_turns=0"], 2),
    (["recipe=tiny", "trainer.lrr=1e-5"], 2),
])
def test_help_and_config_answers_import_no_heavy_package(module, argv, status):
    assert _in_fresh_process(module, argv) == {"status": status, "heavy": []}


def _run(capsys, *argv: str) -> tuple[int, str]:
    status = main(["recipe=tiny", *argv])
    return status, capsys.readouterr().err


def _assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for needle in needles:
        assert needle in last, last


def test_missing_data_file_is_one_line(tmp_path, capsys):
    status, err = _run(capsys, f"output_dir={tmp_path}", "stages=[data]", f"data.train.source={tmp_path}/nope.jsonl")
    _assert_one_line_error(status, err, "data.train.source=", "no JSONL file at", "nope.jsonl")


def test_malformed_jsonl_line_and_row_without_answer_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": \n')
    status, err = _run(capsys, f"output_dir={tmp_path}/a", "stages=[data]", f"data.train.source={bad}")
    _assert_one_line_error(status, err, f"{bad}:2: invalid JSON")
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n')
    status, err = _run(capsys, f"output_dir={tmp_path}/b", "stages=[data]", f"data.train.source={bad}")
    _assert_one_line_error(status, err, f"{bad}:2: missing field 'answer'", "answer_key=")


def test_nonexistent_model_path_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = [f"output_dir={tmp_path}", "stages=[data,rl]", "data.train.limit=4", "data.eval.limit=2",
            f"agents.long.model.name_or_path={tmp_path}/no_model", f"agents.short.model.name_or_path={tmp_path}/no_model"]
    status, err = _run(capsys, *argv)
    _assert_one_line_error(status, err, "no_model' is not a model directory", "model.name_or_path")
    with pytest.raises(Exception, match="is not a model directory"):
        main(["recipe=tiny", *argv, "--debug"])


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    def broken(config, run):
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(train.STAGE_FUNCTIONS, "data", broken)
    with pytest.raises(ZeroDivisionError):
        main(["recipe=tiny", f"output_dir={tmp_path}", "stages=[data]"])


def test_progress_messages_follow_stderr_when_it_is_replaced(monkeypatch):
    """A notebook or a test capture swaps sys.stderr and closes the old one; messages must follow."""
    import io
    import logging

    from longshort.cli import show_progress_messages

    log = logging.getLogger("longshort")
    monkeypatch.setattr(log, "handlers", [])
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    show_progress_messages()
    log.info("resumed from step 2")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("skipped 1 malformed row")
    assert second.getvalue() == "skipped 1 malformed row\n"
