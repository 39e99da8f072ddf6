"""The arithmetic a chain of thought states: its equations, which of them repeat, and whether what a
transcript keeps leads to the gold answer.

Long-Short's short agent writes "the rest, compressed". What has to survive compression is the
derivation: the results the next steps use. On arithmetic word problems (the synthetic set, GSM8K)
a step's results are its equations, ``a op b = c`` (or ``x - 2 = 3``); everything else in a redundant step (a
restatement of the question, a hesitation, a detour with no equation) says nothing a later step
needs. A recheck, a summary or a backwards check repeats an earlier equation: the same numbers,
in any order (``111 / 3 = 37`` after ``37 * 3 = 111``), so it adds no result either.

The consistency rule (IMPL-CHOICE, ours; the paper has no such check), on the text a transcript
keeps before its final answer:

- it reaches the gold answer: some kept step reads ``= gold`` (an equation's result, or an
  assignment such as ``x = 5``); text with no ``=`` at all must at least state the gold answer;
- it never computes with a value it did not derive: every operand of every kept equation is a
  number of the question, a number stated earlier in the kept text (earlier results included), or
  a small integer (at most ``SMALL``), because word problems state those in words ("triples",
  "half"). A transcript that opens with the last operation of a derivation it deleted fails this.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_OPERATOR = r"(?:[-+*/×÷x]|\\times|\\cdot|\\div)"
_TERM = rf"\(?\s*(?:{_NUMBER}|\b[a-z]\b)\s*\)?"  # a number or a one-letter unknown (x - 2 = 3)
EQUATION = re.compile(rf"(?P<lhs>{_TERM}(?:\s*{_OPERATOR}\s*{_TERM})+)\s*=\s*\$?\s*(?P<rhs>-?{_NUMBER})")
_OPERAND = re.compile(_NUMBER)
_RESULT = re.compile(rf"=\s*\$?\s*(-?{_NUMBER})")
SMALL = 10  # multipliers and divisors that problems state in words ("triples", "half")


def number(text: str) -> float | None:
    """A number as written (thousands commas allowed), or None."""
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


@dataclass(frozen=True)
class Equation:
    """``lhs = rhs`` as written in a step (``text``), with its operands and result as numbers."""

    text: str
    operands: tuple[float, ...]
    result: float

    @property
    def key(self) -> tuple[float, ...]:
        """The numbers it relates, in any order: a recheck or a backwards check has the same key."""
        return tuple(sorted((*self.operands, self.result)))


def equations(text: str) -> list[Equation]:
    """The equations ``a op b (op c ...) = r`` in ``text``, in order (a term may be a one-letter unknown,
    an equation needs one number on its left)."""
    found = []
    for match in EQUATION.finditer(text):
        operands = tuple(n for n in (number(m) for m in _OPERAND.findall(match.group("lhs"))) if n is not None)
        result = number(match.group("rhs"))
        if result is not None and operands:
            text = f"{match.group('lhs').strip()} = {match.group('rhs').rstrip(',.')}"
            found.append(Equation(text, operands, result))
    return found


def new_equations(text: str, seen: set[tuple[float, ...]]) -> list[Equation]:
    """The equations of ``text`` that repeat none in ``seen`` (nor one before them in ``text``);
    ``seen`` gains their keys."""
    fresh = []
    for equation in equations(text):
        if equation.key not in seen:
            seen.add(equation.key)
            fresh.append(equation)
    return fresh


def inconsistency(kept_text: str, question: str, gold: str) -> str | None:
    """Why the arithmetic in ``kept_text`` does not lead to ``gold`` (the module docstring's rule),
    or None when it does."""
    target = number(gold.strip().strip("$"))
    results = [number(m.group(1)) for m in _RESULT.finditer(kept_text)]
    if results:
        if target is None or not any(r is not None and abs(r - target) < 1e-9 for r in results):
            return f"no kept step gives the answer {gold} (nothing kept reads '= {gold}')"
    elif gold.strip() not in kept_text:
        return f"nothing kept states the answer {gold}"
    known = set(_numbers(question))
    position = 0
    for match in EQUATION.finditer(kept_text):
        known.update(_numbers(kept_text[position:match.start()]))
        for operand in (number(m) for m in _OPERAND.findall(match.group("lhs"))):
            if operand is not None and operand not in known and not (operand.is_integer() and 0 <= operand <= SMALL):
                return (f"{match.group(0).strip()} uses {_show(operand)}, which neither the question nor any kept "
                        "step before it states")
        position = match.start()
    return None


def _numbers(text: str) -> Iterable[float]:
    return (n for n in (number(m) for m in _OPERAND.findall(text)) if n is not None)


def _show(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def render(found: Sequence[Equation]) -> str:
    """Equations as a short turn writes them: one sentence each."""
    return " ".join(f"{e.text}." for e in found)
