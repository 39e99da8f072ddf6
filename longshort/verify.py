"""Answer extraction and equivalence: the correctness signal behind every reward and benchmark score.

The answer is the last ``\\boxed{}`` of a response; a recipe may allow fallbacks (an "answer is X"
phrase, then the last number) for models that do not box. Equivalence is decided by math-verify, in
a worker process with a hard time bound (``longshort.verify_pool``), because its own signal-based
timeouts fail off the main thread and rollout workers grade from threads. Obvious cases (the same
normalised string, two plain numbers) are settled in-process first, so most calls never pay IPC.

Measured cost of one ``is_equivalent`` call (2-core CPU, warm pool, medians): the in-process fast
path ~0.01 ms; the worker round trip adds ~0.03 ms of IPC to math-verify's own work, which is 10-40 ms
for numbers, fractions, radicals and short polynomials and ~200 ms for tuples. A new worker costs
~1.5 s to start (interpreter, sympy and math-verify imports, warm-up), once per worker and outside
the time bound.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from decimal import Decimal

from longshort.verify_pool import JobTimeout, WorkerPool

WORKERS_ENV = "LONGSHORT_VERIFY_WORKERS"


@dataclass(frozen=True)
class Verdict:
    """The outcome of grading one response.

    ``reason`` is machine-readable for logs and reward terms: ``ok``, ``wrong``, ``no_answer``,
    ``timeout``, ``unparsable_gold`` (math-verify could not read the gold, so only an exact
    normalised match could count; the reward may be a false negative) or ``error: ...``.
    """

    correct: bool
    extracted: str | None
    reason: str


# ---------------------------------------------------------------------------------------- extraction

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PHRASE = re.compile(
    r"(?:final\s+answer[\s*]*(?:is|:)|the\s+answer\s+is|\banswer\s*:)[\s*:]*(.+)", re.IGNORECASE
)
_LAST_NUMBER = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced; None if absent or unclosed.

    An unclosed last box (a truncated response) gives None rather than an earlier box: the model may
    have changed its mind, and a truncated answer should not be credited. ``\\{`` and ``\\}`` are
    literal braces and do not count towards the balance.
    """
    opens = list(_BOX_OPEN.finditer(text))
    if not opens:
        return None
    start = opens[-1].end()
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None


def extract_answer(text: str, *, fallbacks: bool = True) -> str | None:
    """The final answer of a response: the last box, else (``fallbacks``) a phrase, else the last number.

    An empty box counts as a given, empty answer (None), not as a reason to go looking elsewhere.
    """
    boxed = extract_boxed(text)
    if boxed is not None:
        return _strip_delimiters(boxed) or None
    if not fallbacks:
        return None
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        value = _SENTENCE_END.split(match.group(1), maxsplit=1)[0]
        value = _strip_delimiters(value.strip().strip("*").strip())
        if value:
            return value
    numbers = _LAST_NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _strip_delimiters(s: str) -> str:
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):-len(right)].strip()
    return s


# ---------------------------------------------------------------------------------------- fast path

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:left|right|displaystyle)(?![a-zA-Z])|\\[!,;: ]|~|\s")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|°")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")


def _normalise(s: str) -> str:
    """A canonical spelling for exact matching: drops only what math-verify ignores too (spacing,
    ``\text{}`` wrappers, degree, percent and dollar signs, thousands separators)."""
    s = _TEXT_WRAPPER.sub(r"\1", _strip_delimiters(s))
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = _DEGREES.sub("", _SPACING.sub("", s))
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").rstrip(".")
    return s.replace(",", "") if _THOUSANDS.fullmatch(s) else s


def _fast_reason(pred: str, gold: str) -> str | None:
    """Settle the obvious cases in-process: equal normalised strings, or two plain numbers.

    Unequal decimals are left to math-verify, which accepts agreement to 6 decimal places.
    """
    p, g = _normalise(pred), _normalise(gold)
    if p and p == g:
        return "ok"
    if _PLAIN_NUMBER.fullmatch(p) and _PLAIN_NUMBER.fullmatch(g):
        if Decimal(p) == Decimal(g):
            return "ok"
        if "." not in p + g:
            return "wrong"
    return None


# ---------------------------------------------------------------------------------- worker side
# These run inside the pool's worker processes, where no signal-based timeout is wanted: the pool
# kills a worker that overruns.


def _warm_up() -> None:
    """Import math-verify and run one comparison so the first real job is not slowed by lazy imports."""
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" is deliberate here
    _mv_equivalent("\\frac{1}{2}", "0.5")


def _mv_parse(expr: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        f"\\boxed{{{_strip_delimiters(expr)}}}",
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=None,
    )


def _mv_verify(gold: list, pred: list) -> bool:
    from math_verify import verify

    return verify(gold, pred, timeout_seconds=None)


def _mv_equivalent(pred: str, gold: str) -> str:
    gold_parsed = _mv_parse(gold)
    if all(isinstance(x, str) for x in gold_parsed):
        return "unparsable_gold"
    return "ok" if _mv_verify(gold_parsed, _mv_parse(pred)) else "wrong"


def _mv_matching_options(pred: str, options: list[str]) -> list[int]:
    pred_parsed = _mv_parse(pred)
    return [i for i, option in enumerate(options) if _mv_verify(_mv_parse(option), pred_parsed)]


# ---------------------------------------------------------------------------------------- the pool

_pool: WorkerPool | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def worker_pool() -> WorkerPool:
    """The process-wide pool, started on first use; ``$LONGSHORT_VERIFY_WORKERS`` caps its size.

    The default cap is the CPU count (2..16): grading is CPU-bound, and a cap below the number of
    threads that grade at once makes callers queue for a worker.
    """
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():  # a forked child must not share our workers' pipes
            default = min(16, max(2, os.cpu_count() or 2))
            _pool = WorkerPool(int(os.environ.get(WORKERS_ENV, default)), warmup=f"{__name__}:_warm_up")
            _pool_pid = os.getpid()
        return _pool


def _bounded(job: str, args: tuple, timeout: float) -> tuple[object, str | None]:
    """Run a worker-side job; return (result, None) or (None, failure reason)."""
    try:
        return worker_pool().call(f"{__name__}:{job}", args, timeout), None
    except JobTimeout:
        return None, "timeout"
    except (RuntimeError, OSError) as exc:  # a failed job, a dead worker, a closed pool, no fork
        return None, f"error: {exc}"


# ---------------------------------------------------------------------------------------- public API


def _equivalence_reason(pred: str, gold: str, timeout: float) -> str:
    reason = _fast_reason(pred, gold)
    if reason is None:
        result, failure = _bounded("_mv_equivalent", (pred, gold), timeout)
        reason = failure or str(result)
    return reason


def is_equivalent(pred: str, gold: str, *, timeout: float = 5.0) -> bool:
    """Whether ``pred`` states the same answer as ``gold``; False if undecided within ``timeout`` s."""
    return _equivalence_reason(pred, gold, timeout) == "ok"


_CHOICE_PREFIX = re.compile(r"^(?:the\s+)?(?:correct\s+)?(?:option|choice|answer)\s*(?:is)?\s*[:\-]?\s*", re.I)
_BARE_LETTER = re.compile(r"\(?([A-Z])\)?[.:]?")
_LETTER_THEN_TEXT = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.):])\s+\S.*")


def _choice_letter(answer: str, n_choices: int) -> str | None:
    """The option letter an answer names: ``B``, ``(B)``, ``B)``, ``\\text{B}``, ``option B``, ``(B) text``."""
    s = _TEXT_WRAPPER.sub(r"\1", _strip_delimiters(answer)).strip().strip("*").strip()
    s = _CHOICE_PREFIX.sub("", s)
    match = _BARE_LETTER.fullmatch(s) or _LETTER_THEN_TEXT.fullmatch(s)
    if match is None:
        return None
    letter = match.group(1) or match.group(2)
    return letter if ord(letter) - ord("A") < n_choices else None


def _chosen_option(answer: str, choices: list[str], timeout: float) -> tuple[str | None, str | None]:
    """The letter of the option an answer picks, or (None, failure reason) when the bound ran out.

    An answer equivalent to several options picks none: crediting the first would reward ambiguity.
    """
    letter = _choice_letter(answer, len(choices))
    if letter is not None:
        return letter, None
    key = _normalise(answer).casefold()
    hits = [i for i, option in enumerate(choices) if key and _normalise(option).casefold() == key]
    if not hits:
        result, failure = _bounded("_mv_matching_options", (answer, list(choices)), timeout)
        if failure:
            return None, failure
        hits = list(result)
    return (chr(ord("A") + hits[0]), None) if len(hits) == 1 else (None, None)


def grade(
    response: str,
    gold: str,
    *,
    choices: list[str] | None = None,
    fallbacks: bool = True,
    timeout: float = 5.0,
) -> Verdict:
    """Grade a response against the gold answer, or against the gold option letter when ``choices`` given.

    With ``choices``, ``choices[i]`` is the text of option ``chr(65 + i)`` and the answer may name a
    letter or restate an option's text.
    """
    extracted = extract_answer(response, fallbacks=fallbacks)
    if choices is None:
        if extracted is None:
            return Verdict(False, None, "no_answer")
        reason = _equivalence_reason(extracted, gold, timeout)
        return Verdict(reason == "ok", extracted, reason)
    gold_letter = _choice_letter(gold, len(choices))
    if gold_letter is None:
        raise ValueError(f"gold must be an option letter among {len(choices)} choices, got {gold!r}")
    if extracted is None:
        return Verdict(False, None, "no_answer")
    letter, failure = _chosen_option(extracted, choices, timeout)
    if failure:
        return Verdict(False, extracted, failure)
    return Verdict(letter == gold_letter, extracted, "ok" if letter == gold_letter else "wrong")


@dataclass(frozen=True)
class Verifier:
    """The grading settings a recipe controls (``verify.fallbacks``, ``verify.timeout``), kept together
    so that rewards and evaluation grade the same way."""

    fallbacks: bool = True
    timeout: float = 5.0

    def grade(self, response: str, gold: str, choices: list[str] | None = None) -> Verdict:
        return grade(response, gold, choices=choices, fallbacks=self.fallbacks, timeout=self.timeout)
