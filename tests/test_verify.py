"""Answer extraction, equivalence on real benchmark answers, multiple choice, and the time bound."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from longshort.verify import (
    Verdict,
    Verifier,
    extract_answer,
    extract_boxed,
    grade,
    is_equivalent,
    worker_pool,
)
from longshort.verify_pool import JobError, JobTimeout, WorkerDied, WorkerPool

# A power tower: sympy tries to decide 9^(9^(9^(9^9))) == 1 and runs for minutes (over 10 min measured).
PATHOLOGICAL = r"9^{9^{9^{9^{9}}}}"


def _respond(answer: str) -> str:
    """A realistic response that ends with the boxed answer."""
    return f"Let me work through this step by step.\nAfter simplifying, we get the result.\nTherefore the answer is $\\boxed{{{answer}}}$."


# (id, prediction, expected) for real MATH-500 answers: equivalent rewrites, then wrong ones.
MATH500_CASES = [
    ("math500-0000", r"(3, \pi/2)", True),
    ("math500-0000", r"\left(3, \frac{\pi}{3}\right)", False),
    ("math500-0002", r"\dfrac{14}{3}", True),
    ("math500-0002", r"14/3", True),
    ("math500-0002", r"\frac{28}{6}", True),
    ("math500-0002", r"\frac{13}{3}", False),
    ("math500-0004", r"Evelyn", True),
    ("math500-0004", r"\text{Emily}", False),
    ("math500-0007", r"90", True),
    ("math500-0007", r"90^{\circ}", True),
    ("math500-0007", r"91^\circ", False),
    ("math500-0008", r"\sqrt{117}", True),
    ("math500-0008", r"3\sqrt{12}", False),
    ("math500-0015", r"-5i + 6", True),
    ("math500-0015", r"6 + 5i", False),
    ("math500-0023", r"5", True),
    ("math500-0023", r"x = 6", False),
    ("math500-0025", r"-2, 1", True),
    ("math500-0025", r"1, 2", False),
    ("math500-0031", r"\sqrt{242}", True),
    ("math500-0036", r"7, 5, 3", True),
    ("math500-0044", r"\frac{5}{4}", True),
    ("math500-0044", r"5/4", True),
    ("math500-0044", r"1.2", False),
    ("math500-0048", r"1.5", True),
    ("math500-0051", r"-1 + x - x^2 + x^3 - x^4 + x^5", True),
    ("math500-0051", r"x^5 - x^4 + x^3 - x^2 + x + 1", False),
    ("math500-0053", r"-\pi/6", True),
    ("math500-0053", r"\frac{\pi}{6}", False),
    ("math500-0054", r"\frac{3}{20}", True),
    ("math500-0054", r"15\%", True),
    ("math500-0060", r"\left(6, 31, -1\right)", True),
    ("math500-0060", r"(6, 31, 1)", False),
    ("math500-0073", r"\frac{3}{4}\sqrt{3}", True),
    ("math500-0074", r"\frac{\cos x}{\sin x}", True),
    ("math500-0096", r"1+\sqrt{19}, 1-\sqrt{19}", True),
    ("math500-0098", r"2(k+1)", True),
    ("math500-0099", r"\begin{pmatrix} -\frac{1}{3} \\ \frac{2}{3} \\ \frac{5}{3} \end{pmatrix}", True),
    ("math500-0099", r"\begin{pmatrix} 1/3 \\ 2/3 \\ 5/3 \end{pmatrix}", False),
    ("math500-0102", r"ab + 2a + 5b + 10", True),
    ("math500-0103", r"(3, 4]", True),
    ("math500-0103", r"[3, 4]", False),
    ("math500-0106", r"\frac{4}{3}", True),
    ("math500-0162", r"0.34", True),
    ("math500-0166", r"\frac{270}{7}", True),
    ("math500-0176", r"6.72 \times 10^{-5}", True),
    ("math500-0179", r"-5x + 7y - 11z - 4 = 0", True),
    ("math500-0184", r"(2, \infty)", True),
    ("math500-0184", r"[2, \infty)", False),
    ("math500-0198", r"10080", True),
    ("math500-0198", r"10,080", True),
    ("math500-0198", r"10,081", False),
]

# Rewrites of a plain integer gold N: (template, expected); "{M}" is N + 1, an off-by-one.
NUMERIC_FORMS = [
    ("{N}", True),
    ("{N}.0", True),
    ("x = {N}", True),
    (r"{N} \text{{ units}}", True),
    (r"\dfrac{{{D}}}{{2}}", True),
    ("{M}", False),
    ("x = {M}", False),
]
GSM8K_LARGE = ["gsm8k-test-00002", "gsm8k-test-00017", "gsm8k-test-00061", "gsm8k-test-00119"]


def _answers(packaged_data: Path, relative: str) -> dict[str, str]:
    with open(packaged_data / relative) as f:
        return {row["id"]: row["answer"] for row in map(json.loads, f)}


def _numeric_cases(packaged_data: Path) -> list[tuple[str, str, bool]]:
    """Every AIME24 and AMC23 answer in one rewrite (cycling through the forms), plus commas for GSM8K."""
    golds = {**_answers(packaged_data, "benchmarks/aime24.jsonl"), **_answers(packaged_data, "benchmarks/amc23.jsonl")}
    cases = []
    for i, (gold_id, gold) in enumerate(sorted(golds.items())):
        template, expected = NUMERIC_FORMS[i % len(NUMERIC_FORMS)]
        n = int(gold)
        cases.append((gold, template.format(N=n, M=n + 1, D=2 * n), expected))
    gsm = _answers(packaged_data, "gsm8k/test.jsonl")
    for gold_id in GSM8K_LARGE:
        n = int(gsm[gold_id])
        cases += [(gsm[gold_id], f"{n:,}", True), (gsm[gold_id], f"\\${n:,}", True), (gsm[gold_id], f"{n + 1:,}", False)]
    return cases


def test_math500_rewrites(packaged_data):
    golds = _answers(packaged_data, "benchmarks/math500.jsonl")
    failures = []
    for gold_id, pred, expected in MATH500_CASES:
        verdict = grade(_respond(pred), golds[gold_id])
        if verdict.correct != expected or verdict.extracted != pred:
            failures.append((gold_id, golds[gold_id], pred, expected, verdict))
    assert not failures, failures


def test_numeric_rewrites(packaged_data):
    cases = _numeric_cases(packaged_data)
    assert len(cases) + len(MATH500_CASES) >= 100
    failures = [(gold, pred, expected) for gold, pred, expected in cases if grade(_respond(pred), gold).correct != expected]
    assert not failures, failures


def test_is_equivalent_fast_path_and_reasons():
    assert is_equivalent("1,000", "1000") and is_equivalent("18.00", "18") and is_equivalent(r"$\dfrac{1}{2}$", r"\frac{1}{2}")
    assert not is_equivalent("17", "18")
    assert grade(r"\boxed{19}", "18") == Verdict(False, "19", "wrong")
    assert grade("no answer here", "18", fallbacks=False) == Verdict(False, None, "no_answer")


def test_unparsable_gold_is_reported_and_only_exact_match_counts():
    assert grade(r"\boxed{???}", "???") == Verdict(True, "???", "ok")
    assert grade(r"\boxed{!!!}", "???") == Verdict(False, "!!!", "unparsable_gold")


# ---------------------------------------------------------------------------------------- extraction


def test_extract_boxed():
    assert extract_boxed(r"so \boxed{\frac{a}{b^{2}}} done") == r"\frac{a}{b^{2}}"
    assert extract_boxed(r"\boxed{1} then \boxed{2} and \fbox{3}") == "3"
    assert extract_boxed(r"first \boxed{1}, finally \boxed {\{1, 2\}}") == r"\{1, 2\}"
    assert extract_boxed(r"\boxed{7} and then \boxed{\frac{1}{2}") is None
    assert extract_boxed("no box at all: 42") is None


def test_extract_answer_fallbacks():
    assert extract_answer(r"\boxed{ $5$ }") == "5"
    assert extract_answer(r"\boxed{}  the answer is 3") is None
    phrase = "We add 2 and 3.\nThe final answer is $\\frac{1}{2}$. Done, 7 steps."
    assert extract_answer(phrase) == r"\frac{1}{2}"
    assert extract_answer("**Final Answer:** 3.5 cm.") == "3.5 cm"
    assert extract_answer("Answer: (B)") == "(B)"
    assert extract_answer("So 8-5 gives 3, and the total is 1,250 apples") == "1,250"
    assert extract_answer("the temperature drops to -4") == "-4"
    for text in (phrase, "the total is 1,250 apples", "The answer is 3."):
        assert extract_answer(text, fallbacks=False) is None
    assert grade("the total is 1,250 apples", "1250", fallbacks=False).reason == "no_answer"
    assert Verifier(fallbacks=True).grade("the total is 1,250 apples", "1250").correct


# ---------------------------------------------------------------------------------------- multiple choice


def _gpqa_item(fixtures: Path, item_id: str) -> tuple[list[str], str]:
    """The options of a GPQA-layout fixture item (option (1) is the correct one in the file)."""
    with open(fixtures / "benchmarks/gpqa_diamond.jsonl") as f:
        row = next(r for r in map(json.loads, f) if r["id"] == item_id)
    listing = row["problem"].split("Candidate answer:")[1]
    options = [o.strip().rstrip(",") for o in re.split(r"\(\d\)|,\s*or\s*", listing) if o.strip(" ,\n")]
    return options, row["answer"]


def test_multiple_choice_letters(gpqa_fixture):
    options, answer = _gpqa_item(gpqa_fixture, "gpqa_diamond-0001")
    assert options[0] == answer == "11" and len(options) == 4
    choices = [options[1], options[2], options[0], options[3]]  # the right answer moved to C
    for form in ["C", "(C)", "C)", r"\text{C}", r"\textbf{(C)}", "option C", "(C) 11"]:
        assert grade(_respond(form), "C", choices=choices).correct, form
    assert grade("The answer is (C).", "C", choices=choices).correct
    for form in ["A", "(B)", "option D"]:
        assert grade(_respond(form), "C", choices=choices) == Verdict(False, form, "wrong")
    assert not grade(_respond("E"), "C", choices=choices).correct  # not an option
    with pytest.raises(ValueError):
        grade(_respond("C"), "11", choices=choices)


def test_multiple_choice_option_text(gpqa_fixture):
    options, _ = _gpqa_item(gpqa_fixture, "gpqa_diamond-0002")
    assert options == ["-0.7", "0.85", "-1.4", "1.65"]
    choices = [options[2], options[1], options[3], options[0]]  # -0.7 is D
    assert grade(_respond("-0.7"), "D", choices=choices).correct
    assert grade(_respond(r"-\frac{7}{10}"), "D", choices=choices).correct  # math-verify match
    assert grade(_respond("0.85"), "D", choices=choices) == Verdict(False, "0.85", "wrong")
    assert not grade(_respond("0.7"), "D", choices=choices).correct
    prose = ["Alpha helix", "Beta sheet", "Random coil", "Triple helix"]
    assert grade(_respond(r"\text{beta sheet}"), "B", choices=prose).correct


# ---------------------------------------------------------------------------------------- time bound


def test_math_verify_own_timeout_fails_off_the_main_thread():
    """Why the pool exists: math-verify's signal-based timeout cannot be used from a thread."""
    from math_verify import parse

    errors: list[BaseException] = []

    def run() -> None:
        try:
            parse(r"$\frac{1}{2}$", parsing_timeout=5)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "thread" in str(errors[0])


def test_pathological_answer_is_bounded_off_the_main_thread():
    assert is_equivalent(r"\sqrt{12}", r"2\sqrt{3}")  # warm the pool so start-up is not timed
    result: dict[str, object] = {}

    def run() -> None:
        start = time.perf_counter()
        result["verdict"] = grade(_respond(PATHOLOGICAL), "1", timeout=1.0)
        result["elapsed"] = time.perf_counter() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["verdict"] == Verdict(False, PATHOLOGICAL, "timeout")
    assert 1.0 <= result["elapsed"] < 10.0  # gave up at its 1 s timeout, not when the job ended
    assert is_equivalent(r"\sqrt{12}", r"2\sqrt{3}") and not is_equivalent(r"\sqrt{13}", r"2\sqrt{3}")


def test_concurrent_calls_from_threads(packaged_data):
    golds = _answers(packaged_data, "benchmarks/math500.jsonl")
    cases = [(golds[i], p, e) for i, p, e in MATH500_CASES] + _numeric_cases(packaged_data)[:30]
    verifier = Verifier(timeout=10.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = list(pool.map(lambda c: verifier.grade(_respond(c[1]), c[0]), cases))
    assert [v.correct for v in verdicts] == [expected for _, _, expected in cases]
    assert 1 <= worker_pool().size <= worker_pool().max_workers


def test_pool_survives_job_errors_crashes_and_timeouts():
    pool = WorkerPool(max_workers=2, warmup="os:getpid")
    try:
        pid = pool.call("os:getpid", (), timeout=30)
        with pytest.raises(JobError, match="ValueError"):
            pool.call("math:sqrt", (-1.0,), timeout=5)
        assert pool.call("os:getpid", (), timeout=5) == pid  # a job's exception keeps the worker
        with pytest.raises(WorkerDied):
            pool.call("os:_exit", (3,), timeout=5)
        start = time.perf_counter()
        with pytest.raises(JobTimeout):
            pool.call("time:sleep", (30,), timeout=0.5)
        assert time.perf_counter() - start < 10.0  # returned at its timeout, long before the 30 s job
        assert pool.size == 0
        assert pool.call("math:hypot", (3, 4), timeout=30) == 5.0
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.call("os:getpid", (), timeout=5)


def _grade_in_forked_child(conn) -> None:
    worker_parent = worker_pool().call("os:getppid", (), timeout=30)
    conn.send((is_equivalent(r"\sqrt{12}", r"2\sqrt{3}"), worker_parent == os.getpid()))


def test_forked_child_gets_its_own_workers():
    """A fork (e.g. a DataLoader worker) must not talk to the parent's workers over shared pipes."""
    import multiprocessing

    assert is_equivalent(r"\sqrt{8}", r"2\sqrt{2}")
    parent_pool = worker_pool()
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_grade_in_forked_child, args=(send,))
    child.start()
    assert receive.poll(60) and receive.recv() == (True, True)  # graded, by a worker of its own
    child.join(10)
    assert child.exitcode == 0
    assert worker_pool() is parent_pool and parent_pool.size >= 1
    assert is_equivalent(r"\sqrt{18}", r"3\sqrt{2}")


def test_clean_exit_of_an_unguarded_script_that_grades(tmp_path):
    """A script with no ``__main__`` guard is not re-run by the workers (as multiprocessing's spawn
    would), the workers never write into its stdout, and they are stopped when it exits."""
    script = tmp_path / "grade_once.py"
    script.write_text(
        "from longshort.verify import is_equivalent, worker_pool\n"
        "print(is_equivalent(r'\\sqrt{12}', r'2\\sqrt{3}'), worker_pool().size)\n"
        "print(worker_pool().call('os:getpid', (), timeout=30))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    verdict, worker_pid = done.stdout.splitlines()
    assert verdict == "True 1"
    with pytest.raises(ProcessLookupError):  # stopped and reaped by the script's atexit hook
        os.kill(int(worker_pid), 0)
