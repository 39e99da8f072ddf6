"""Long chains of thought with known redundancy: a model organism for efficient-reasoning methods.

Both methods this framework implements exploit one property of reasoning-model (R1-style) chains:
most of their thinking is not needed for the answer. They restate the question, re-derive a step
they already did ("Wait, let me double-check: 3 * 4 = 12. Yes."), try another route and drop it,
summarise what they know, and hesitate before answering. The synthetic problems' gold solutions
have none of that (every step computes a number the next one needs), so pruning them can only hurt,
and on real R1 chains nobody knows which steps were dispensable.

``long_chain(problem)`` writes such a chain for any problem with gold solution steps
(``meta["steps"]``: the synthetic problems, GSM8K): the gold steps in order, interleaved with
redundant steps of five kinds (``restate``, ``recheck``, ``detour``, ``summary``, ``hesitate``),
one paragraph per step, separated by blank lines, so ``longshort.analysis.steps`` cuts it into
exactly these steps. It always ends in the right answer, boxed after ``</think>``. Which steps are
redundant is recorded per chain (``LongChain.kinds``), so a method that claims to remove redundancy
(step-entropy pruning, Long-Short's thought importance) can be scored against the truth. This is
a model organism, not a model of R1: its redundancy is templated and its gold steps are simple.

Redundant here means "adds nothing the gold steps do not already say": a recheck repeats a gold
step's arithmetic, a summary or a hesitation may repeat results, a detour computes something the
problem does not ask for. Dropping every redundant step leaves the gold solution; dropping a gold
step may still be survivable when a later recheck or summary repeats its result, as in real chains.

``redundancy`` is the share of steps that are redundant. The default, 0.8, follows what the two
papers find in R1-distilled chains: the step-entropy paper replaces 80% of the steps by ``[SKIP]``
with almost no loss, and Long-Short cuts over 80% of the tokens. Wording varies by seed: the chain
of a problem depends only on ``(seed, problem.id, redundancy)``, in every process.

``label_step`` recognises the redundant kinds in text a model wrote after learning from these chains
(their openers are distinctive); on a model's own chains that label is an approximation, on the
chains written here it is exact (a test checks that it agrees with the recorded kinds).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from longshort.data.problem import Problem

GOLD = "gold"
REDUNDANT_KINDS = ("restate", "recheck", "detour", "summary", "hesitate")
KINDS = (GOLD, *REDUNDANT_KINDS)
DEFAULT_REDUNDANCY = 0.8
DELIMITER = "\n\n"  # the step boundary both methods cut at (longshort.analysis.steps.DELIMITER)
FINAL_ANSWER = "The final answer is $\\boxed{{{answer}}}$."  # analysis.chains.FORCED_ANSWER_PREFIX continues it

_EQUATION = re.compile(r"(?P<lhs>\d[\d.]*(?:\s*[-+*/x×]\s*\d[\d.]*)+)\s*=\s*\$?(?P<rhs>\d[\d,]*(?:\.\d+)?)")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}

# Openers of each redundant kind; every template below starts with one of them, and no gold step does.
_OPENERS = {
    "recheck": ("Wait, let me double-check", "Let me verify", "Checking once more", "Let me check it backwards",
                "Let me re-read that step"),
    "restate": ("Let me restate the question", "The question asks", "Let me re-read the problem",
                "To recap the question"),
    "detour": ("Alternatively", "What if I", "Maybe there is a shortcut", "Another way to think about it"),
    "summary": ("So far", "Let me summarise", "To sum up where I am"),
    "hesitate": ("Hmm", "Before I answer", "Wait...", "Am I sure"),
}
_LABELS = sorted(((opener, kind) for kind, openers in _OPENERS.items() for opener in openers),
                 key=lambda item: -len(item[0]))


@dataclass(frozen=True)
class LongChain:
    """One chain: ``steps[i]`` is a paragraph of kind ``kinds[i]`` (``"gold"`` or a redundant kind)."""

    problem_id: str
    answer: str
    steps: tuple[str, ...]
    kinds: tuple[str, ...]

    @property
    def redundant(self) -> list[bool]:
        return [kind != GOLD for kind in self.kinds]

    @property
    def redundancy_share(self) -> float:
        """Share of the steps that are redundant (by count; ``char_share`` weighs them by length)."""
        return sum(self.redundant) / len(self.steps)

    @property
    def char_share(self) -> float:
        return sum(len(s) for s, r in zip(self.steps, self.redundant) if r) / sum(len(s) for s in self.steps)

    @property
    def thinking(self) -> str:
        """The thinking, steps separated by blank lines (what goes between ``<think>`` and ``</think>``)."""
        return DELIMITER.join(self.steps)

    @property
    def final(self) -> str:
        return FINAL_ANSWER.format(answer=self.answer)

    def response(self) -> str:
        """The whole reply in the R1 layout the analysis' ``ChainFormat`` uses: think, close, answer."""
        return f"<think>\n{self.thinking}\n</think>\n\n{self.final}"

    def to_dict(self) -> dict:
        return {"id": self.problem_id, "answer": self.answer, "steps": list(self.steps), "kinds": list(self.kinds)}


def label_step(text: str) -> str:
    """The redundant kind a step's opener shows, else ``"gold"`` (see the module docstring)."""
    stripped = text.strip()
    for opener, kind in _LABELS:
        if stripped.startswith(opener):
            return kind
    return GOLD


def redundant_count(gold_steps: int, redundancy: float) -> int:
    """How many redundant steps make them ``redundancy`` of all steps (rounded to the nearest count)."""
    if not 0.0 <= redundancy < 1.0:
        raise ValueError(f"redundancy must lie in [0, 1), got {redundancy}")
    return round(redundancy / (1.0 - redundancy) * gold_steps)


def long_chain(problem: Problem, *, redundancy: float = DEFAULT_REDUNDANCY, seed: int = 0) -> LongChain:
    """The long chain of one problem (raises ValueError when it has no gold steps)."""
    gold = [s.strip() for s in problem.meta.get("steps") or [] if s.strip()]
    if not gold:
        raise ValueError(f"problem {problem.id} has no gold solution steps (meta['steps']); long chains are "
                         "written for synthetic and GSM8K-style problems")
    rng = random.Random(f"longshort-longchain:{seed}:{problem.id}:{redundancy}")
    writer = _Writer(rng, problem, gold)
    n_redundant = redundant_count(len(gold), redundancy)
    # slots[p]: the redundant kinds written after p gold steps (p = 0: before the first one)
    slots: list[list[str]] = [[] for _ in range(len(gold) + 1)]
    framed = min(n_redundant, 2)  # an opening restatement and a closing hesitation, when there is room
    for _ in range(n_redundant - framed):
        position = rng.choices(range(len(gold) + 1), [0.5] + [1.0] * len(gold))[0]
        kinds, weights = (("restate", "detour"), (1, 2)) if position == 0 else (REDUNDANT_KINDS, (1, 4, 2, 2, 1))
        slots[position].insert(rng.randint(0, len(slots[position])), rng.choices(kinds, weights)[0])
    if framed >= 1:
        slots[-1].append("hesitate")  # reasoning models hesitate before they answer
    if framed >= 2:
        slots[0].insert(0, "restate")  # ... and start by restating the question
    steps, kinds = [], []
    for position, slot in enumerate(slots):
        if position > 0:
            steps.append(gold[position - 1])
            kinds.append(GOLD)
        for kind in slot:
            steps.append(writer.write(kind, done=position, avoid=steps))
            kinds.append(kind)
    return LongChain(problem.id, problem.answer, tuple(steps), tuple(kinds))


def long_chains(problems: Sequence[Problem], *, redundancy: float = DEFAULT_REDUNDANCY, seed: int = 0) -> list[LongChain]:
    """Chains for the problems that have gold steps, in order (problems without steps are left out)."""
    return [long_chain(p, redundancy=redundancy, seed=seed) for p in problems if any(
        s.strip() for s in p.meta.get("steps") or [])]


class _Writer:
    """Writes one redundant step of a kind, from the problem and the gold steps done so far."""

    def __init__(self, rng: random.Random, problem: Problem, gold: list[str]):
        self.rng, self.gold, self.answer = rng, gold, problem.answer
        self.sentences = [s for s in _SENTENCE.split(problem.prompt.strip()) if s]
        self.numbers = [int(n) for n in re.findall(r"\b\d{1,4}\b", problem.prompt)] or [2, 3]

    def write(self, kind: str, done: int, avoid: Sequence[str] = ()) -> str:
        """A step of ``kind``; a few redraws keep it from repeating a step already written word for word."""
        for _ in range(4):
            text = getattr(self, kind)(done)
            if text not in avoid:
                break
        return text

    def _equations(self, done: int) -> list[tuple[str, str]]:
        """(left side, result) of every equation in the first ``done`` gold steps."""
        return [(m.group("lhs").strip(), m.group("rhs").rstrip(",.")) for step in self.gold[:done]
                for m in _EQUATION.finditer(step)]

    def restate(self, done: int) -> str:
        question, first = self.sentences[-1], self.sentences[0]
        return self.rng.choice([
            f"Let me restate the question: {question}",
            f"The question asks: {question}",
            f"Let me re-read the problem. {first} And then: {question}",
            f"To recap the question: {' '.join(self.sentences[:2])}",
        ])

    def recheck(self, done: int) -> str:
        step = self.gold[self.rng.randint(max(0, done - 2), done - 1)]
        found = [(m.group("lhs").strip(), m.group("rhs").rstrip(",.")) for m in _EQUATION.finditer(step)]
        if not found:
            return f"Let me re-read that step: {step}"
        lhs, rhs = self.rng.choice(found)
        options = [f"Wait, let me double-check: {lhs} = {rhs}. Yes, {rhs}.",
                   f"Let me verify that: {lhs} gives {rhs}. That's right.",
                   f"Checking once more: {lhs} = {rhs}. Correct."]
        parts = re.fullmatch(r"(\d+)\s*([-+*/])\s*(\d+)", lhs)
        if parts:
            a, op, b = parts.groups()
            options.append(f"Let me check it backwards: {rhs} {_INVERSE[op]} {b} = {a}. It matches.")
        return self.rng.choice(options)

    def detour(self, done: int) -> str:
        """A route tried and dropped; its number is never one the solution needs (that would be no detour)."""
        options = [
            "Alternatively, I could work backwards from the question. Hmm, no, that is not easier here. "
            "I'll keep going forward.",
            "Maybe there is a shortcut that combines all the numbers at once? No, the order of the events "
            "matters. Step by step, then.",
            "Another way to think about it would be to draw a table of what changes. That seems unnecessary "
            "for this. Let me continue.",
        ]
        x, y = self.rng.choice(self.numbers), self.rng.choice(self.numbers)
        results = {rhs for _, rhs in self._equations(len(self.gold))} | {self.answer}
        if str(x + y) not in results:
            options.append(f"What if I added {x} and {y} instead? That gives {x + y}, but the problem does not "
                           "describe that. Back to the plan.")
        if str(x * y) not in results:
            options.append(f"What if I multiplied {x} by {y}? That would be {x * y}, which is not what happens "
                           "in the story. Never mind.")
        return self.rng.choice(options)

    def summary(self, done: int) -> str:
        facts = ", then ".join(f"{lhs} = {rhs}" for lhs, rhs in self._equations(done))
        if not facts:
            return f"So far I know this: {self.gold[done - 1]}"
        return self.rng.choice([f"So far: {facts}.", f"Let me summarise what I have: {facts}.",
                                f"To sum up where I am: {facts}."])

    def hesitate(self, done: int) -> str:
        options = ["Hmm, let me make sure I haven't missed anything in the question.",
                   "Wait... is there a trick here? No, it seems straightforward.",
                   "Am I sure about this? Let me think for a second. Yes."]
        if done == len(self.gold):
            options.append(f"Before I answer, is {self.answer} really right? I think so.")
        return self.rng.choice(options)
