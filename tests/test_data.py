"""Data loaders: local JSONL, Hub mapping (through the real ``datasets`` package on local files),
synthetic generator, registered benchmarks (the package's copies, project-written GPQA-layout fixtures,
and ../shared/data where a maintainer has it), and the error messages."""
from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longshort.data import (
    BENCHMARKS, CHOICE_LETTERS, DataError, Fields, Problem, load_benchmark, load_hub, load_jsonl, load_problems,
    row_to_problem, save_jsonl, split_gpqa_options, split_seed, synthetic_problems,
)
from longshort.registry import UnknownNameError

EXPECTED_ROWS = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gpqa_diamond": 198, "gsm8k": 1319,
                 "gsm8k_train": 7473}
PACKAGED = ("math500", "aime24", "aime25", "amc23", "gsm8k")
EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def raw_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------- local JSONL


def test_load_jsonl_maps_fields_and_skips_blank_lines(tmp_path):
    path = write_lines(tmp_path / "set.jsonl", [
        json.dumps({"id": "a", "problem": "1+1?", "answer": "2", "solution": "1+1=2"}),
        "",
        json.dumps({"id": 7, "problem": "2+2?", "answer": 4}),
        json.dumps({"problem": "half of 5?", "answer": 2.5}),
    ])
    problems = load_jsonl(path)
    assert [p.id for p in problems] == ["a", "7", "set-0002"]
    assert [p.answer for p in problems] == ["2", "4", "2.5"]
    assert problems[0].meta == {"source": str(path), "kind": "math", "solution": "1+1=2"}
    assert "solution" not in problems[1].meta
    assert [p.id for p in load_jsonl(path, limit=2)] == ["a", "7"]


def test_load_jsonl_reads_the_chunked_long_cot_data(shared_data):
    (problem,) = load_jsonl(shared_data / "longcot" / "r1_example_chunked.jsonl")
    assert problem.prompt.startswith("Let $x,y$ and $z$")
    assert problem.answer == "33"  # stored as an integer there


def test_load_jsonl_accepts_aliases(tmp_path):
    path = write_lines(tmp_path / "n.jsonl", [json.dumps({"question": "Q?", "answer": 33})])
    assert load_jsonl(path)[0].answer == "33"  # integers become text
    path = write_lines(tmp_path / "q.jsonl", [json.dumps({"unique_id": "u1", "question": "Q?", "final_answer": "7"})])
    assert load_jsonl(path)[0] == Problem("u1", "Q?", "7", {"source": str(path), "kind": "math"})


def test_load_jsonl_custom_keys(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"key": "k1", "text": "Q?", "gold": "5", "why": "because"})])
    (problem,) = load_jsonl(path, prompt_key="text", answer_key="gold", id_key="key", solution_key="why")
    assert (problem.id, problem.prompt, problem.answer, problem.meta["solution"]) == ("k1", "Q?", "5", "because")


def test_mapping_does_not_mutate_or_share_the_source_row(gpqa_fixture):
    raw = raw_rows(gpqa_fixture / "benchmarks" / "gpqa_diamond.jsonl")[0]
    row = {**raw, "meta": {"tags": ["x"]}}
    before = copy.deepcopy(row)
    spec = BENCHMARKS.get("gpqa_diamond")
    problem = row_to_problem(row, Fields(), default_id="i", source="s", postprocess=spec.postprocess)
    problem.meta["tags"].append("y")
    problem.meta["choices"].reverse()
    assert row == before
    assert problem.meta["tags"] == ["x", "y"] and problem.meta["kind"] == "choice"


def test_save_and_load_round_trip(tmp_path, gpqa_fixture):
    problems = synthetic_problems(5, seed=1) + load_benchmark("gpqa_diamond", limit=3)
    path = save_jsonl(problems, tmp_path / "out" / "p.jsonl")
    assert load_jsonl(path) == problems
    assert [Problem.from_dict(p.to_dict()) for p in problems] == problems


@pytest.mark.parametrize("line, expected", [
    ('{"id": "b", "problem": "Q?", "answer": "1"', r"set\.jsonl:3: invalid JSON"),
    ('{"id": "b", "problem": "Q?"}', r"set\.jsonl:3: missing field 'answer' \(fields present: id, problem\); "
                                     r"pass answer_key=\.\.\."),
    ('{"id": "b", "answer": "1"}', r"set\.jsonl:3: missing field 'problem' .*pass prompt_key="),
    ('{"id": "b", "problem": "Q?", "answer": ["1"]}', r"set\.jsonl:3: answer must be a string or a number"),
    ('{"id": "b", "problem": "Q?", "answer": true}', r"set\.jsonl:3: answer must be a string or a number"),
    ('["Q?", "1"]', r"set\.jsonl:3: expected a JSON object"),
    ('{"id": "a", "problem": "Q?", "answer": "1"}', r"set\.jsonl:3: duplicate id 'a' \(first at .*set\.jsonl:1\)"),
])
def test_malformed_rows_name_file_and_line(tmp_path, line, expected):
    path = write_lines(tmp_path / "set.jsonl", [json.dumps({"id": "a", "problem": "Q?", "answer": "1"}), "", line])
    with pytest.raises(DataError, match=expected):
        load_jsonl(path)


def test_missing_jsonl_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- Hub mapping through `datasets`


def test_load_hub_maps_rows_like_load_jsonl(packaged_data, tmp_path):
    source = packaged_data / "benchmarks" / "math500.jsonl"
    local = load_jsonl(source, limit=10, source="math500")
    copy = write_lines(tmp_path / "math500.jsonl", source.read_text(encoding="utf-8").splitlines()[:10])
    hub = load_hub("json", split="train", id_key="id", solution_key="solution", source="math500",
                   data_files=str(copy), cache_dir=str(tmp_path / "cache"))
    assert hub == local


def test_load_hub_reports_bad_rows(tmp_path):
    path = write_lines(tmp_path / "h.jsonl", [json.dumps({"problem": "Q?", "answer": "1"}),
                                              json.dumps({"problem": "Q?", "answer": None})])
    with pytest.raises(DataError, match=r"json \[train\] row 2: missing field 'answer'"):
        load_hub("json", split="train", data_files=str(path), cache_dir=str(tmp_path / "cache"))


def test_gsm8k_hub_layout_matches_local_copy(packaged_data, tmp_path):
    rows = raw_rows(packaged_data / "gsm8k" / "test.jsonl")[:20]
    hub_rows = [{"question": r["problem"], "answer": f"{r['solution']}\n#### {r['answer']}"} for r in rows]
    path = write_lines(tmp_path / "gsm8k.jsonl", [json.dumps(r) for r in hub_rows])
    spec = BENCHMARKS.get("gsm8k")
    fake = dataclasses.replace(spec, hub_id="json", hub_config=None, hub_split="train")
    from_hub = fake.load_from_hub(data_files=str(path), cache_dir=str(tmp_path / "cache"))
    assert from_hub == load_benchmark("gsm8k", limit=20)


def test_gpqa_hub_layout_matches_local_copy(gpqa_fixture, tmp_path):
    rows = raw_rows(gpqa_fixture / "benchmarks" / "gpqa_diamond.jsonl")[:25]
    hub_rows = []
    for row in rows:
        stem, options = split_gpqa_options(row["problem"])
        hub_rows.append({"Question": stem, "Correct Answer": options[0], "Incorrect Answer 1": options[1],
                         "Incorrect Answer 2": options[2], "Incorrect Answer 3": options[3],
                         "Explanation": row["solution"], "Record ID": f"rec{len(hub_rows)}"})
    path = write_lines(tmp_path / "gpqa.jsonl", [json.dumps(r) for r in hub_rows])
    spec = BENCHMARKS.get("gpqa_diamond")
    fake = dataclasses.replace(spec, hub_id="json", hub_config=None, hub_split="train")
    from_hub = fake.load_from_hub(data_files=str(path), cache_dir=str(tmp_path / "cache"))
    assert from_hub == load_benchmark("gpqa_diamond", limit=25)


# ---------------------------------------------------------------- synthetic


MULTIPLIER_WORDS = {"doubles": 2, "triples": 3, "quadruples": 4}


def numbers_in(sentence: str) -> set[int]:
    words = {value for word, value in MULTIPLIER_WORDS.items() if word in sentence}
    return {int(n) for n in re.findall(r"\d+", sentence)} | words


def check_synthetic(problem: Problem) -> None:
    """Re-derive the answer: each step is one true equation on the previous result, using the
    numbers of its own sentence of the story."""
    steps = problem.meta["steps"]
    assert problem.meta["difficulty"] == len(steps) >= 1
    *story, question = re.split(r"(?<=[.?])\s+", problem.prompt)
    assert question.startswith("How many") and question.endswith("?")
    if len(story) == len(steps) + 1:  # an opening sentence that only states the starting amount
        (previous,) = numbers_in(story.pop(0))
    else:
        previous = None
    assert len(story) == len(steps)
    for sentence, step in zip(story, steps):
        (a, op, b, result), = EQUATION.findall(step)
        a, b, result = int(a), int(b), int(result)
        expected = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
        assert result == expected and result > 0, step
        assert op != "/" or a % b == 0, step
        assert a == previous or (previous is None and a in numbers_in(sentence)), (problem.prompt, step)
        assert b in numbers_in(sentence), (sentence, step)
        previous = result
    assert problem.answer == str(previous)
    assert problem.meta["solution"] == "\n".join(steps) + f"\nThe answer is {previous}."


def test_synthetic_problems_are_correct():
    problems = synthetic_problems(2000, min_steps=1, max_steps=5, seed=3)
    for problem in problems:
        check_synthetic(problem)
    assert set(collections.Counter(p.meta["difficulty"] for p in problems)) == {1, 2, 3, 4, 5}
    assert len({p.prompt for p in problems}) > 1900
    assert problems[0].id == "synthetic-s3-00000" and problems[0].meta["source"] == "synthetic"


def test_synthetic_difficulty_range():
    assert {p.meta["difficulty"] for p in synthetic_problems(200, min_steps=2, max_steps=2)} == {2}
    with pytest.raises(ValueError, match="min_steps"):
        synthetic_problems(1, min_steps=3, max_steps=2)


def test_synthetic_is_seeded():
    assert synthetic_problems(50, seed=7) == synthetic_problems(50, seed=7)
    assert synthetic_problems(20, seed=7) == synthetic_problems(50, seed=7)[:20]
    other = synthetic_problems(50, seed=8)
    assert sum(a.prompt == b.prompt for a, b in zip(synthetic_problems(50, seed=7), other)) < 3


def test_split_seeds_are_disjoint():
    seeds = {(seed, split): split_seed(seed, split) for seed in range(100) for split in ("train", "eval", "dev")}
    assert len(set(seeds.values())) == len(seeds)
    with pytest.raises(ValueError, match="unknown split"):
        split_seed(0, "test")


def test_synthetic_has_no_algorithmic_blow_up():
    """10,000 problems take ~0.4 s on one core; the bound is 25x that, so only a blow-up (e.g. a
    quadratic duplicate check) fails it, not a loaded machine. Timings belong in benchmarks/."""
    start = time.perf_counter()
    synthetic_problems(10_000)
    assert time.perf_counter() - start < 10.0


# ---------------------------------------------------------------- benchmarks


@pytest.mark.parametrize("name, rows", sorted(EXPECTED_ROWS.items()))
def test_registered_benchmarks_load_from_shared_data(shared_data, name, rows, monkeypatch):
    problems = load_benchmark(name, data_dir=shared_data)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.prompt.strip() and p.answer and p.meta["source"] == name for p in problems)
    assert {p.meta["kind"] for p in problems} == {BENCHMARKS.get(name).kind}
    assert BENCHMARKS.get(name).kind == ("choice" if name == "gpqa_diamond" else "math")
    monkeypatch.setenv("LONGSHORT_DATA_DIR", str(shared_data))
    assert load_benchmark(name, limit=3) == problems[:3]
    if name in PACKAGED:  # the package's copy is the same set
        monkeypatch.delenv("LONGSHORT_DATA_DIR")
        assert load_benchmark(name) == problems


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_benchmarks_load_offline(name):
    """No data dir, no Hub (conftest): the package's own copy answers."""
    problems = load_benchmark(name)
    assert len(problems) == EXPECTED_ROWS[name] == len({p.id for p in problems})
    assert all(p.prompt.strip() and p.answer and p.meta["source"] == name for p in problems)
    assert load_benchmark(name, limit=3) == problems[:3]


def test_data_dir_wins_over_the_packaged_copy(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    write_lines(tmp_path / "benchmarks" / "aime24.jsonl", [json.dumps({"id": "mine", "problem": "Q?", "answer": "1"})])
    assert [p.id for p in load_benchmark("aime24", data_dir=tmp_path)] == ["mine"]
    monkeypatch.setenv("LONGSHORT_DATA_DIR", str(tmp_path))
    assert [p.id for p in load_benchmark("aime24")] == ["mine"]
    assert len(load_benchmark("aime25")) == 30  # not in the data dir: the packaged copy


def test_gpqa_is_not_packaged_and_never_silently_missing(tmp_path, monkeypatch):
    from longshort import paths

    assert not (paths.packaged_data_dir() / "benchmarks" / "gpqa_diamond.jsonl").exists()
    with pytest.raises(FileNotFoundError, match="gpqa_diamond.jsonl"):
        load_benchmark("gpqa_diamond", data_dir=tmp_path)
    with pytest.raises(DataError, match="Idavidrein/gpqa from the Hub failed.*LONGSHORT_DATA_DIR"):
        load_benchmark("gpqa_diamond")  # offline (conftest): fails in one message that says what to do


def test_write_atomically_replaces_files_and_folders_whole_and_leaves_nothing_of_a_failed_write(tmp_path):
    from longshort.paths import write_atomically

    def folder(text):
        def write(tmp):
            tmp.mkdir()
            (tmp / "weights").write_text(text)
        return write

    target = write_atomically(tmp_path / "out" / "final", folder("old"))
    assert (target / "weights").read_text() == "old"
    write_atomically(target, folder("new"))
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_text() == "new"

    def dies_halfway(tmp):
        tmp.mkdir()
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, dies_halfway)
    assert (target / "weights").read_text() == "new"  # the previous save is intact ...
    assert sorted(p.name for p in target.parent.iterdir()) == ["final"]  # ... and no temporary is left
    record = write_atomically(tmp_path / "records.jsonl", lambda tmp: tmp.write_text("1\n"))
    write_atomically(record, lambda tmp: tmp.write_text("2\n"))
    assert record.read_text() == "2\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out", "records.jsonl"]


def test_all_benchmarks_registered():
    assert set(EXPECTED_ROWS) <= set(BENCHMARKS.names())


def test_gsm8k_steps_and_answers(packaged_data):
    problems = load_benchmark("gsm8k")
    rows = raw_rows(packaged_data / "gsm8k" / "test.jsonl")
    for problem, row in zip(problems, rows):
        assert "<<" not in problem.meta["solution"] and ">>" not in problem.meta["solution"]
        assert problem.meta["steps"] == [line.strip() for line in problem.meta["solution"].splitlines()]
        assert problem.answer == row["answer"].replace(",", "")
        assert problem.meta["difficulty"] == len(problem.meta["steps"]) >= 1
    assert problems[0].meta["steps"][0] == "Janet sells 16 - 3 - 4 = 9 duck eggs a day."


def test_gpqa_options_are_shuffled_and_preserved(gpqa_fixture):
    problems = load_benchmark("gpqa_diamond")
    rows = raw_rows(gpqa_fixture / "benchmarks" / "gpqa_diamond.jsonl")
    letters = collections.Counter(p.answer for p in problems)
    assert set(letters) == set(CHOICE_LETTERS) and min(letters.values()) >= 8, letters  # 48 items
    for problem, row in zip(problems, rows):
        choices = problem.meta["choices"]
        assert problem.meta["answer_text"] == row["answer"].strip()
        assert choices[CHOICE_LETTERS.index(problem.answer)] == row["answer"].strip()
        tail = row["problem"].split("Candidate answer:")[1]
        original = [part.strip() for part in re.split(r",\s*or \(\d\)", tail.strip()[len("(1)"):])]
        assert sorted(choices) == sorted(original)
        for letter, choice in zip(CHOICE_LETTERS, choices):
            assert f"({letter}) {choice}" in problem.prompt
        assert "Candidate answer" not in problem.prompt
        assert problem.prompt.endswith("Answer with the letter of the correct option in \\boxed{}.")
    assert load_benchmark("gpqa_diamond") == problems


def test_gpqa_shuffle_is_independent_of_the_process(gpqa_fixture):
    here = [(p.id, p.answer, p.meta["choices"]) for p in load_benchmark("gpqa_diamond")]
    code = ("import json; from longshort.data import load_benchmark; "
            "print(json.dumps([(p.id, p.answer, p.meta['choices']) for p in load_benchmark('gpqa_diamond')]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert [tuple(item) for item in json.loads(out.stdout)] == here


def test_gpqa_bad_row_names_file_and_line(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    good = {"id": "g0", "problem": "Q?\n\n Candidate answer: (1) a, or (2) b, or (3) c, or (4) d", "answer": "a"}
    write_lines(bench / "gpqa_diamond.jsonl", [
        json.dumps(good),
        json.dumps({**good, "id": "g1", "problem": "Q? (1) a (2) b"}),
    ])
    with pytest.raises(DataError, match=r"gpqa_diamond\.jsonl:2: cannot find 'Candidate answer"):
        load_benchmark("gpqa_diamond", data_dir=tmp_path)
    write_lines(bench / "gpqa_diamond.jsonl", [json.dumps({**good, "answer": "b"})])
    with pytest.raises(DataError, match=r"gpqa_diamond\.jsonl:1: option \(1\) 'a' differs from the answer"):
        load_benchmark("gpqa_diamond", data_dir=tmp_path)


def test_missing_local_benchmark_file_names_path_and_env_var(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_benchmark("gpqa_diamond", data_dir=tmp_path)
    assert str(tmp_path / "benchmarks" / "gpqa_diamond.jsonl") in str(err.value)
    assert "LONGSHORT_DATA_DIR" in str(err.value)


def test_unknown_benchmark_suggests_a_name():
    with pytest.raises(UnknownNameError, match="did you mean 'math500'"):
        load_benchmark("math5000")


# ---------------------------------------------------------------- load_problems dispatcher


def test_load_problems_dispatch(tmp_path):
    assert load_problems("synthetic", limit=5, seed=2) == synthetic_problems(5, seed=2)
    train = load_problems("synthetic:train", limit=5, seed=2)
    evaluation = load_problems("synthetic:eval", limit=5, seed=2)
    assert train == synthetic_problems(5, seed=split_seed(2, "train")) and train != evaluation
    assert load_problems("aime24") == load_benchmark("aime24")
    path = save_jsonl(synthetic_problems(3), tmp_path / "x.jsonl")
    assert load_problems(str(path)) == synthetic_problems(3)
    with pytest.raises(UnknownNameError, match="did you mean 'gsm8k'"):
        load_problems("gsm8kk")
