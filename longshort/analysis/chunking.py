"""Grouping steps into thoughts: a rule-based chunker and the Long-Short paper's LLM chunker.

A thought is a run of consecutive steps with one purpose (understanding the problem, a derivation, a
verification). Long-Short scores thoughts, not steps, so every step must land in exactly one thought.

- ``RuleChunker`` needs no model: a new thought starts at a discourse marker that changes direction
  ("Wait", "Alternatively", "Let me verify", "So the answer", ...), or when a thought reaches its size
  cap. It is the fallback when the LLM chunker fails and the cheap default for small models.
- ``LLMChunker`` is the paper's: a "math teacher" prompt over numbered ``Step i:`` lines, a JSON
  answer ``{"block k": {"start", "end", "block type"}}`` parsed leniently, and up to five attempts.
  Two upstream bugs are fixed: coverage is enforced (upstream set its failure flag to "ok", so the
  released example leaves the tail of the thought uncovered), and string indices are accepted (the
  prompt's own skeleton invites ``'start': ''``, which failed the integer comparison every time).
  Step indices in blocks are 1-based and inclusive, as the prompt numbers them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from longshort.analysis.chains import chat_ids
from longshort.analysis.lenient_json import LenientJSONError, loads
from longshort.analysis.steps import Step
from longshort.engines.base import Engine, SamplingParams


@dataclass(frozen=True)
class Block:
    """Steps ``start``..``end`` (1-based, inclusive) form one thought of type ``kind``."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Thought:
    """A thought as text: steps ``first``..``last`` (0-based, inclusive) joined with their delimiters."""

    index: int
    first: int
    last: int
    kind: str
    text: str


def thoughts_from_blocks(steps: Sequence[Step], blocks: Sequence[Block]) -> list[Thought]:
    """Cut the step list by validated blocks; each thought's text is its steps' exact texts joined."""
    return [Thought(i, b.start - 1, b.end - 1, b.kind, "".join(s.text for s in steps[b.start - 1:b.end]))
            for i, b in enumerate(blocks)]


def validate_blocks(blocks: Sequence[Block], n_steps: int) -> list[str]:
    """Every problem with ``blocks`` as a partition of steps 1..n_steps; empty when they are valid.

    Valid means: the first block starts at step 1, each block starts right after the previous one ends
    (no gap, no overlap), no block is empty or reversed, and the last one ends at step ``n_steps``.
    """
    if not blocks:
        return ["no blocks"]
    errors = []
    expected = 1
    for i, block in enumerate(blocks, 1):
        if block.end < block.start:
            errors.append(f"block {i} ends (step {block.end}) before it starts (step {block.start})")
        if block.start > expected:
            errors.append(f"gap: steps {expected}..{block.start - 1} before block {i} are in no block")
        elif block.start < expected:
            errors.append(f"overlap: block {i} starts at step {block.start}, inside the previous block")
        expected = max(expected, block.end + 1)
    if expected - 1 > n_steps:
        errors.append(f"blocks run to step {expected - 1}, past the last step {n_steps}")
    elif expected - 1 < n_steps:
        errors.append(f"coverage: steps {expected}..{n_steps} are in no block")
    return errors


_INDEX = re.compile(r"-?\d+")


_STEP_NUMBER = re.compile(r"\s*(?:step\s*)?(\d+)\s*", re.IGNORECASE)


def _step_index(value: Any) -> int:
    """1-based index from ``5``, ``5.0``, ``"5"`` or ``"Step 5"``; anything else (``"25/8"``, which a
    small model copied from the solution) is not an index."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    match = _STEP_NUMBER.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a step index: {value!r}")
    return int(match.group(1))


_MISSING = object()


def _field(entry: dict, *names: str, default: Any = _MISSING) -> Any:
    """A field by any spelling: "block type", "block_type" and "blockType" are one name."""
    folded = {re.sub(r"[\s_\-]", "", str(k)).lower(): v for k, v in entry.items()}
    for name in names:
        if name in folded:
            return folded[name]
    if default is _MISSING:
        raise ValueError(f"block {entry!r:.80} has none of the fields {', '.join(names)}")
    return default


def blocks_from_json(obj: Any) -> list[Block]:
    """Blocks from the chunker's JSON: ``{"block 1": {...}, ...}`` (ordered by the key's number) or a
    list of block objects. Raises ValueError when the shape is wrong."""
    if isinstance(obj, dict):
        keyed = [(_INDEX.search(str(k)), v) for k, v in obj.items()]
        if all(match for match, _ in keyed):
            keyed.sort(key=lambda kv: int(kv[0].group()))
        entries = [v for _, v in keyed]
    elif isinstance(obj, list):
        entries = obj
    else:
        raise ValueError(f"expected an object of blocks, got {type(obj).__name__}")
    blocks = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"a block must be an object, got {entry!r:.60}")
        blocks.append(Block(_step_index(_field(entry, "start", "startstep")),
                            _step_index(_field(entry, "end", "endstep")),
                            str(_field(entry, "blocktype", "type", "kind", "label", default=""))))
    return blocks


# ------------------------------------------------------------------------------------- rule-based

# (marker at the start of a step, the kind of thought it opens); matched case-sensitively after
# leading whitespace, so "wait" inside a sentence does not cut.
DEFAULT_MARKERS: tuple[tuple[str, str], ...] = (
    ("Wait", "reflection"), ("But wait", "reflection"), ("Hmm, wait", "reflection"),
    ("Alternatively", "alternative approach"), ("Another approach", "alternative approach"),
    ("Let me verify", "verification"), ("Let me check", "verification"), ("Let me double-check", "verification"),
    ("Let me double check", "verification"), ("To verify", "verification"), ("Double-checking", "verification"),
    ("So the answer", "conclusion"), ("So, the answer", "conclusion"), ("Therefore, the answer", "conclusion"),
    ("Thus, the answer", "conclusion"), ("The answer is", "conclusion"), ("Final answer", "conclusion"),
)


@dataclass(frozen=True)
class RuleChunker:
    """Cut at discourse markers, and at ``max_steps`` steps; a marker cuts only once the current
    thought has ``min_steps`` steps, so a burst of "Wait"s does not make one-step thoughts."""

    markers: tuple[tuple[str, str], ...] = DEFAULT_MARKERS
    min_steps: int = 2
    max_steps: int = 12

    def chunk(self, steps: Sequence[Step]) -> list[Block]:
        blocks: list[Block] = []
        start, kind = 1, "problem understanding"
        for number, step in enumerate(steps, 1):
            if number == 1:
                continue
            size = number - start
            marker = next((k for m, k in self.markers if step.text.lstrip().startswith(m)), None)
            if (marker and size >= self.min_steps) or size >= self.max_steps:
                blocks.append(Block(start, number - 1, kind))
                start, kind = number, marker or "derivation"
        if steps:
            blocks.append(Block(start, len(steps), kind))
        return blocks


# -------------------------------------------------------------------------------------- LLM-based

# A paraphrase of the paper's prompt (the released data used a Chinese version). The sentence on
# covering every step is an addition: the upstream run left steps uncovered, which this validator rejects.
TASK_PROFILE = (
    "You are a professional math teacher. When you solve a math problem, you usually first understand the "
    "problem, split the solution into a few major steps, work through them in order to reach the result, and "
    "finally verify the result a second time. I will give you a student's solution to a math problem, split "
    "into numbered steps. Reconstruct the general thinking process the student followed (for example: first "
    "problem understanding, then problem decomposition, and so on).\n\n"
    "Specifically, read the problem and the solution, then summarise the solution's line of thought into "
    "distinct blocks such as problem understanding, and record the step where each block starts and the step "
    "where it ends. Every step must belong to exactly one block: the first block starts at step 1, each block "
    "starts right after the previous one ends, and the last block ends at the last step. Answer in JSON whose "
    "keys are \"block 1\", \"block 2\", ...; each value has the fields start, end and block type. The block "
    "type is a broad category such as problem understanding; do not make categories too fine.\n\n"
)
OUTPUT_FORMAT = (
    "Fill in start and end using step indices, and write block type. Return only the following JSON format "
    "without any explanations: {'block 1': {'start': '', 'end': '', 'block type': ''}, ...}"
)


def chunk_prompt(question: str, steps: Sequence[Step]) -> str:
    """The paper's user message: profile, the problem, the ``Step i:`` lines, the output skeleton."""
    numbered = "\n".join(f"Step {i}: {step.text.strip()}" for i, step in enumerate(steps, 1))
    return (TASK_PROFILE + "Problem：\n\n```\n\n" + question + "\n\n```\n\nSolution：\n\n```\n\n" + numbered
            + "\n\n```\n\n" + OUTPUT_FORMAT)


@dataclass
class ChunkResult:
    """The outcome of one chunking: ``blocks`` are valid when ``valid``; otherwise the last parsable
    attempt's blocks (possibly none). ``errors[i]`` says why attempt i was rejected."""

    blocks: list[Block]
    valid: bool
    attempts: int
    errors: list[list[str]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)


def parse_blocks(text: str, n_steps: int) -> tuple[list[Block], list[str]]:
    """(blocks, problems) of one chunker answer; problems is empty when the answer is usable."""
    try:
        blocks = blocks_from_json(loads(text))
    except (LenientJSONError, ValueError) as error:
        return [], [f"unparsable: {error}"]
    return blocks, validate_blocks(blocks, n_steps)


class LLMChunker:
    """The paper's chunker over any ``Engine`` (temperature 0.1, up to 7120 new tokens, 5 attempts).

    Attempts are sequential per chain (a retry only follows a failure); chunk many chains concurrently
    (``asyncio.gather``) to let a batching engine decode them together.
    """

    def __init__(self, engine: Engine, *, max_attempts: int = 5,
                 sampling: SamplingParams = SamplingParams(temperature=0.1, max_new_tokens=7120)):
        self.engine = engine
        self.max_attempts = max_attempts
        self.sampling = sampling

    async def chunk(self, question: str, steps: Sequence[Step]) -> ChunkResult:
        prompt = chat_ids(self.engine.tokenizer, chunk_prompt(question, steps))
        result = ChunkResult([], False, 0)
        for _ in range(self.max_attempts):
            generation = await self.engine.generate(prompt, self.sampling)
            blocks, errors = parse_blocks(generation.text, len(steps))
            result.attempts += 1
            result.raw.append(generation.text)
            result.errors.append(errors)
            if blocks:
                result.blocks = blocks
            if not errors:
                result.valid = True
                break
        return result
