"""``data.<split>.answer_from: boxed``: MATH-layout rows whose answer field is a whole solution."""
from __future__ import annotations

import json

import pytest

from longshort.config import load_config
from longshort.data import DataError, load_source

ROWS = [
    {"problem": "What is $1+1$?", "level": "Level 1", "type": "Algebra",
     "solution": "We add: $1+1=\\boxed{2}$."},
    {"problem": "Simplify $\\frac{4}{6}$.", "level": "Level 2", "type": "Algebra",
     "solution": "First $\\boxed{\\frac{4}{6}}$ is not simplest. Dividing by 2 gives $\\boxed{\\frac{2}{3}}$."},
]


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_qwen7b_takes_the_last_box_and_keeps_the_solution(tmp_path):
    path = write(tmp_path / "math.jsonl", ROWS)
    config = load_config("qwen7b", [f"data.train.source={path}"])
    first, second = load_source(config.data.train, config.seed)
    assert (first.answer, second.answer) == ("2", "\\frac{2}{3}")
    assert second.meta["solution"] == ROWS[1]["solution"]
    # the field as given is still available for sources whose answer field is the answer
    as_given = load_source(load_config("qwen7b", [f"data.train.source={path}", "data.train.answer_from=field"]
                                       ).data.train, 0)
    assert as_given[0].answer == ROWS[0]["solution"]


def test_a_row_without_a_box_fails_naming_the_row(tmp_path):
    path = write(tmp_path / "math.jsonl", [ROWS[0], {"problem": "Say hi.", "solution": "Hi."}])
    config = load_config("qwen7b", [f"data.train.source={path}"])
    with pytest.raises(DataError, match=r"math.jsonl:2: answer_from=boxed but the answer has no \\boxed"):
        load_source(config.data.train, config.seed)
