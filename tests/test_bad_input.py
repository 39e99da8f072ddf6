"""Every input a user controls either works or fails in one line, exit status 2, naming the file and
line or the key and what to do: data files, recipes, overrides, table specs, models and output folders."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from longshort.data import load_jsonl
from longshort.train import main

ROW = {"problem": "What is 2 + 3?", "answer": "5"}


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``python -m longshort.train argv`` in-process; it must fail with one ``error:`` line."""
    status = _main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 2, err
    assert "Traceback" not in err and "run complete" not in captured.err + captured.out
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err
    for needle in needles:
        assert needle in last, last
    return last


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # config errors exit from cli.load
        return exit.code


def _data_stage(tmp_path: Path, train: Path, *extra: str) -> list[str]:
    return ["recipe=tiny", f"output_dir={tmp_path / 'run'}", "stages=[data]", f"data.train.source={train}", *extra]


# ----------------------------------------------------------------------------- what the readers accept


def test_byte_order_mark_crlf_blank_lines_and_numeric_answers_load(tmp_path):
    path = tmp_path / "windows.jsonl"
    rows = [ROW, {"problem": "What is 10 / 4?", "answer": 2.5}, {"problem": "What is 3 * 3?", "answer": 9.0}]
    path.write_bytes(b"\xef\xbb\xbf" + b"\r\n\r\n".join(json.dumps(r).encode() for r in rows) + b"\r\n\r\n")
    problems = load_jsonl(path)
    assert [p.answer for p in problems] == ["5", "2.5", "9"]
    assert problems[0].prompt == ROW["problem"]


def test_a_recipe_with_a_byte_order_mark_and_crlf_loads(tmp_path, capsys):
    from longshort.config import recipe_dir

    recipe = tmp_path / "mine.yaml"
    recipe.write_bytes(b"\xef\xbb\xbf" + (recipe_dir() / "tiny.yaml").read_bytes().replace(b"\n", b"\r\n"))
    assert _main([f"recipe={recipe}", "--print-config"]) == 0
    assert "name: tiny" in capsys.readouterr().out


# ----------------------------------------------------------------------------- one line per class


def test_a_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(ROW).encode() + b'\n{"problem": "caf\xe9?", "answer": "1"}\n')
    _one_line_error(capsys, _data_stage(tmp_path, path), f"{path}:2: byte 0xe9", "not UTF-8", "iconv")


def test_a_recipe_byte_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(b"inherit: tiny\nname: caf\xe9\n")
    _one_line_error(capsys, [f"recipe={recipe}", "--print-config"], f"{recipe}:2: byte 0xe9 at column 10")


def test_an_empty_training_file_is_refused_before_the_run_completes(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    _one_line_error(capsys, _data_stage(tmp_path, path), "data.train.source=", "holds no problems")
    assert not (tmp_path / "run" / "data" / "DONE").exists()


def test_held_out_problems_all_filtered_out_are_refused(tmp_path, capsys):
    path = tmp_path / "same.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    argv = ["recipe=tiny", f"output_dir={tmp_path / 'run'}", "stages=[data,eval]", f"data.train.source={path}",
            f"data.eval.source={path}"]
    _one_line_error(capsys, argv, "data.eval.source=", "all 1 also occur in the training set", "drop 'eval'")


def test_a_turn_budget_beyond_the_models_context_is_refused_at_load(tiny_dir, tmp_path, capsys):
    argv = ["recipe=tiny", f"output_dir={tmp_path / 'run'}", *[f"agents.{r}.model.name_or_path={tiny_dir}"
                                                                for r in ("long", "short")],
            "agents.short.sampling.max_new_tokens=100000000"]
    _one_line_error(capsys, argv, "agents.short.sampling.max_new_tokens=100000000", "4096 tokens", "below 4096")
    assert not (tmp_path / "run").exists()  # refused before anything ran
    argv[-1] = "eval.max_new_tokens=5000"
    _one_line_error(capsys, argv, "eval.max_new_tokens=5000")


def test_an_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    _one_line_error(capsys, ["recipe=tiny", f"output_dir={afile}", "stages=[data]"], f"output_dir={afile} is a file")
    _one_line_error(capsys, ["recipe=tiny", f"output_dir={afile}/run", "stages=[data]"], f"{afile} is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: permissions cannot refuse it")
def test_an_output_dir_that_is_not_writable_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _one_line_error(capsys, ["recipe=tiny", f"output_dir={locked}/run", "stages=[data]"], "output_dir=")
        _one_line_error(capsys, ["recipe=tiny", f"output_dir={locked}", "stages=[data]"], "not writable")
    finally:
        locked.chmod(0o700)


def test_sft_data_all_cut_by_max_length_is_one_line(tiny_dir, tmp_path, capsys):
    argv = ["recipe=tiny", f"output_dir={tmp_path / 'run'}", "stages=[data,sft]", "data.train.limit=4",
            "data.eval.limit=2", "sft.examples=4", "sft.max_length=8",
            *[f"agents.{r}.model.name_or_path={tiny_dir}" for r in ("long", "short")]]
    _one_line_error(capsys, argv, "no SFT examples for agent", "sft.max_length=8", "raise it")


def test_an_override_without_a_key_is_one_line(capsys):
    _one_line_error(capsys, ["recipe=tiny", "=3"], "override '=3' is not key=value")


# ----------------------------------------------------------------------------- a folder of malformed files

MALFORMED_DATA = {  # name -> (bytes, what the one line must say besides the file name)
    "truncated.jsonl": (b'{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answer": \n', ":2: invalid JSON"),
    "not_utf8.jsonl": (b'{"problem": "\xff", "answer": "2"}\n', ":1: byte 0xff"),
    "utf16.jsonl": ('{"problem": "1+1?", "answer": "2"}\n'.encode("utf-16"), ":1: byte 0xff"),
    "no_answer.jsonl": (b'{"problem": "1+1?"}\n', ":1: missing field 'answer'"),
    "list_answer.jsonl": (b'{"problem": "1+1?", "answer": [2]}\n', ":1: answer must be a string or a number"),
    "bool_answer.jsonl": (b'{"problem": "1+1?", "answer": true}\n', ":1: answer must be a string or a number"),
    "empty_answer.jsonl": (b'{"problem": "1+1?", "answer": "  "}\n', ":1: answer is empty"),
    "empty_prompt.jsonl": (b'{"problem": "", "answer": "2"}\n', ":1: field 'problem' must be non-empty text"),
    "array_row.jsonl": (b'[1, 2]\n', ":1: expected a JSON object"),
    "bad_meta.jsonl": (b'{"problem": "1+1?", "answer": "2", "meta": 3}\n', ":1: field 'meta' must be an object"),
    "duplicate_id.jsonl": (b'{"id": "a", "problem": "1+1?", "answer": "2"}\n{"id": "a", "problem": "2+2?", '
                           b'"answer": "4"}\n', ":2: duplicate id 'a'"),
    "empty.jsonl": (b"", "holds no problems"),
    "blank_lines.jsonl": (b"\n\r\n  \n", "holds no problems"),
}
MALFORMED_RECIPES = {
    "not_yaml.yaml": (b"inherit: tiny\n  seed: [1\n", "is not valid YAML"),
    "not_utf8.yaml": (b"inherit: tiny\nname: \xff\n", ":2: byte 0xff"),
    "a_list.yaml": (b"- inherit: tiny\n", "must be a mapping of config keys"),
    "unknown_key.yaml": (b"inherit: tiny\ntrainer: {stepz: 3}\n", "stepz"),
    "bad_value.yaml": (b"inherit: tiny\ntrainer: {lr: -1}\n", "trainer.lr"),
    "missing_parent.yaml": (b"inherit: no_such_recipe\n", "no_such_recipe"),
}
MALFORMED_TABLES = {
    "not_utf8.yaml": (b"name: caf\xe9\n", ":1: byte 0xe9"),
    "not_yaml.yaml": (b"name: [x\n", "is not valid YAML"),
}


def test_every_malformed_file_in_a_folder_fails_in_one_line(tmp_path, capsys):
    folder = tmp_path / "malformed"
    folder.mkdir()
    for kind, files in (("data", MALFORMED_DATA), ("recipe", MALFORMED_RECIPES), ("table", MALFORMED_TABLES)):
        (folder / kind).mkdir()
        for name, (content, _) in files.items():
            (folder / kind / name).write_bytes(content)
    seen = 0
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        kind = path.parent.name
        needle = {"data": MALFORMED_DATA, "recipe": MALFORMED_RECIPES, "table": MALFORMED_TABLES}[kind][path.name][1]
        if kind == "data":
            _one_line_error(capsys, _data_stage(tmp_path / path.stem, path), str(path), needle)
        elif kind == "recipe":
            _one_line_error(capsys, [f"recipe={path}", "--print-config"], needle)
        else:
            _table_one_line_error(capsys, path, needle)
        seen += 1
    assert seen == len(MALFORMED_DATA) + len(MALFORMED_RECIPES) + len(MALFORMED_TABLES)


def _table_one_line_error(capsys, path: Path, needle: str) -> None:
    from longshort.reproduce.run import main as reproduce

    try:
        status = reproduce([f"table={path}", "--dry-run"])
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("error: ") and needle in err.splitlines()[-1], err
