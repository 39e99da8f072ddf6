"""Cold-start transcripts for the two Long-Short agents, synthesised from scored thoughts.

The paper builds D_long and D_short "directly from scored thoughts" but its rules are not published
(reviewers asked how ``</rethink>`` is assigned). The rules here (IMPL-CHOICE):

- A thought's score is its marginal gain ``S_i = (A_i - A_(i-1)) * delta(y_i)`` (``importance``).
  Important thoughts are the top ``top_fraction`` of the chain's thoughts by score (at least one),
  or all with ``S_i >= threshold`` when a threshold is given, and only those with a positive score:
  a thought that adds nothing to the rollouts' accuracy is never written in full. With none, the
  long turn holds the derivation's equations alone.
  ``keep_first`` makes the first thought important too (off by default: the chains open with
  restatements, and the derivation is kept without it, below).
- Important thoughts go verbatim into long turns, ``<think>`` + thoughts + ``</think>``. The others
  are compressed into short turns: ``<answer> ... </rethink>`` when another long turn follows, and
  the last turn is always ``<answer> ... \\boxed{gold} ... </answer>``.
- Compression (rule, the default) keeps the equations the thoughts state (``3 * 4 = 12``) that repeat
  no earlier equation of the transcript (``equations``): restatements, hesitations and detours state
  none, rechecks, summaries and backwards checks only repeat one, so all of them vanish. A stretch
  that compresses to nothing is dropped, and the long turns around it join. Prose-only reasoning
  (no ``a op b = c``) therefore survives only in long turns. ``LLMCompressor`` asks a model to
  rewrite instead and falls back to the rule on bad output.
- The derivation is never deleted: the thoughts before the first important one are compressed like
  any other, and since the long agent speaks first, their equations open the first long turn.
- A chain is used up to its last prefix whose rollouts reach the gold answer (``A_i > 0``); what
  follows led away from it and is dropped, and a chain that never reaches it gives no transcript
  (``never_reaches_gold``). ``end_at="first"`` stops at the first prefix with the chain's best
  ``A_i`` instead (not the first with ``A_i > 0``, which would cut a derivation whose first step
  lifts the accuracy a little).
- Every turn must fit its agent's ``max_new_tokens`` (``TurnCaps``, counted with the agents'
  tokenizer, one token kept for the end of the turn). A long turn that does not fit is split at its
  thoughts, and a thought that does not fit alone at its steps (blank lines), with a short
  ``Continue.`` hand-back between the parts; a step or a short turn that still does not fit drops
  the transcript (``turn_too_long``), and so does one with more turns or tokens than an episode
  allows (``episode_too_long``): SFT must not teach what the cap cuts off.
- The kept arithmetic must lead to the gold answer (``equations.inconsistency``), else the
  transcript is dropped (``inconsistent``); the final turn states the gold answer, so no transcript
  teaches a wrong result, and none states one its kept steps do not derive.
- ``</overthink>`` is never emitted: its meaning is unconfirmed.

Protocol tags inside thought texts (R1's own ``<think>``) are removed, and every turn is checked
with the agents' own ``check_format`` before a transcript is kept (by the callers).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Sequence

from agents.long_short import PROTOCOL_TAGS, LongThoughtAgent, ShortThoughtAgent
from longshort.analysis.chains import chat_ids
from longshort.analysis.equations import inconsistency, new_equations, render
from longshort.config import SYNTHESIS_END_AT
from longshort.engines.base import Engine, SamplingParams

_PARAGRAPH = re.compile(r"\n\s*\n")


def clean(text: str) -> str:
    """Remove the protocol's tags from a thought, so it cannot break a turn's format."""
    for tag in PROTOCOL_TAGS:
        text = text.replace(tag, "")
    return text.strip()


def rule_compress(text: str, seen: set[tuple[float, ...]]) -> str:
    """The equations ``text`` states that repeat none in ``seen`` (which gains them), one sentence each;
    empty when it states none (see the module docstring)."""
    return render(new_equations(clean(text), seen))


Compressor = Callable[[str, str], Awaitable[str]]  # (question, text) -> compressed text

COMPRESS_PROMPT = (
    "Rewrite the following reasoning as briefly as possible. Keep every intermediate result and the "
    "numbers it depends on; drop hesitation, repetition and checks. Reply with the rewritten reasoning only."
    "\n\nProblem: {question}\n\nReasoning:\n{text}"
)


class LLMCompressor:
    """Compression by a model (any ``Engine``); output that is empty, longer than ``max_chars`` or holds
    a protocol tag is refused, and the caller falls back to the rule (an empty reply here)."""

    def __init__(self, engine: Engine, *, max_new_tokens: int = 160, max_chars: int = 300):
        self.engine = engine
        self.sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
        self.max_chars = max_chars

    async def __call__(self, question: str, text: str) -> str:
        prompt = chat_ids(self.engine.tokenizer, COMPRESS_PROMPT.format(question=question, text=clean(text)))
        out = (await self.engine.generate(prompt, self.sampling)).text.strip()
        if len(out) > self.max_chars or any(tag in out for tag in PROTOCOL_TAGS):
            return ""
        return out


END_AT = SYNTHESIS_END_AT  # where a chain is cut: its last prefix reaching the answer / first at its best


@dataclass(frozen=True)
class SynthesisConfig:
    top_fraction: float = 0.3
    threshold: float | None = None
    max_chars: int = 300  # longest rewrite the LLM compressor may return
    keep_first: bool = False  # the first thought is always the long agent's
    end_at: str = "last"

    def __post_init__(self):
        if self.end_at not in END_AT:
            raise ValueError(f"end_at must be one of {', '.join(END_AT)}, got {self.end_at!r}")


@dataclass(frozen=True)
class TurnCaps:
    """Each agent's ``max_new_tokens``, the episode's turn cap and token budget (``env.max_turns``,
    ``env.max_total_tokens``; None: unbounded), and the tokenizer's count of a turn's tokens."""

    count: Callable[[str], int]
    long: int
    short: int
    turns: int | None = None
    total: int | None = None

    @classmethod
    def of(cls, tokenizer, long: int, short: int, turns: int | None = None, total: int | None = None) -> "TurnCaps":
        return cls(lambda text: len(tokenizer.encode(text, add_special_tokens=False)) + 1, long, short, turns, total)


# Why a scored chain gives no transcript here (coldstart_builder.DROP_REASONS describes them).
DROPS = ("never_reaches_gold", "turn_too_long", "episode_too_long", "inconsistent")


@dataclass
class Synthesis:
    """A transcript, or the reason there is none (one of ``DROPS``) and what went wrong; ``thoughts``
    counts the chain's thoughts by fate: ``long`` (verbatim), ``compressed`` (an equation kept in a
    short turn or the derivation), ``dropped`` (nothing of it kept, the ones after the cut included)."""

    transcript: dict | None
    drop: str | None = None
    detail: str = ""
    thoughts: dict[str, int] = field(default_factory=dict)


def important_thoughts(scores: Sequence[float], config: SynthesisConfig) -> set[int]:
    """Indices of the important thoughts (with the first when ``keep_first``, see the module docstring)."""
    if config.threshold is not None:
        chosen = {i for i, s in enumerate(scores) if s >= config.threshold and s > 0}
    else:
        k = max(1, math.ceil(config.top_fraction * len(scores)))
        chosen = {i for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k] if scores[i] > 0}
    return chosen | {0} if scores and config.keep_first else chosen


def runs(important: set[int], n: int) -> list[tuple[bool, list[int]]]:
    """Maximal runs of thought indices that are all important or all not: ``(is_important, indices)``."""
    out: list[tuple[bool, list[int]]] = []
    for i in range(n):
        flag = i in important
        if out and out[-1][0] == flag:
            out[-1][1].append(i)
        else:
            out.append((flag, [i]))
    return out


def check_transcript(turns: Sequence[Mapping[str, str]]) -> list[str]:
    """Format problems of a transcript under the agents' own checks; empty when every turn passes."""
    agents = {"long": LongThoughtAgent("long"), "short": ShortThoughtAgent("short")}
    problems = []
    for i, turn in enumerate(turns):
        result = agents[turn["role"]].check_format(turn["text"], "stop")
        if not result.ok:
            problems.append(f"turn {i} ({turn['role']}): {result.reason}")
        expected = "final" if i == len(turns) - 1 else ("think" if turn["role"] == "long" else "handback")
        if result.ok and result.kind != expected:
            problems.append(f"turn {i} ({turn['role']}): {result.kind}, expected {expected}")
    return problems


def cut_end(accuracies: Sequence[float], end_at: str) -> int | None:
    """Index of the last thought used (``end_at``, module docstring), None when no prefix reaches the answer."""
    reaching = [i for i, a in enumerate(accuracies) if a > 0]
    if not reaching:
        return None
    return reaching[-1] if end_at == "last" else accuracies.index(max(accuracies))


def long_text(body: str) -> str:
    return f"<think>\n{body}\n</think>"


HANDBACK = "<answer>\nContinue.\n</rethink>"  # between the parts of a long stretch split to fit


def pack(pieces: Sequence[str], caps: TurnCaps | None) -> list[str] | None:
    """Long turns holding ``pieces`` (thought texts) in order, each within the long cap: a turn ends
    when the next piece would not fit, a piece that alone does not fit is split at its blank lines;
    None when one of those paragraphs does not fit alone."""
    if caps is None:
        return [long_text("\n\n".join(pieces))]
    parts: list[str] = []
    for piece in pieces:
        parts.extend([piece] if caps.count(long_text(piece)) <= caps.long
                     else [p.strip() for p in _PARAGRAPH.split(piece) if p.strip()])
    turns: list[list[str]] = []
    for part in parts:
        if caps.count(long_text(part)) > caps.long:
            return None
        if turns and caps.count(long_text("\n\n".join([*turns[-1], part]))) <= caps.long:
            turns[-1].append(part)
        else:
            turns.append([part])
    return [long_text("\n\n".join(t)) for t in turns]


async def synthesize(record: Mapping, config: SynthesisConfig = SynthesisConfig(),
                     compressor: Compressor | None = None, caps: TurnCaps | None = None) -> Synthesis:
    """A transcript ``{"id", "question", "answer", "turns"}`` from a scored record (the rows of
    ``importance``'s ``scores.jsonl``), or the reason for none. ``caps`` None: turns are not measured."""
    every = record["thoughts"]
    end = cut_end([t["accuracy"] for t in every], config.end_at)
    if end is None:
        return Synthesis(None, "never_reaches_gold", thoughts={"long": 0, "compressed": 0, "dropped": len(every)})
    thoughts = every[: end + 1]
    question, gold = record["question"], str(record["answer"])
    important = important_thoughts([t["score"] for t in thoughts], config)
    fate = {"long": 0, "compressed": 0, "dropped": len(every) - len(thoughts)}
    seen: set[tuple[float, ...]] = set()
    # segments in order: ("long", [thought texts]) or ("short", compressed text)
    segments: list[tuple[str, list[str] | str]] = []
    for is_long, indices in runs(important, len(thoughts)):
        texts = [clean(thoughts[i]["text"]) for i in indices]
        if is_long:
            for text in texts:
                new_equations(text, seen)
            segments.append(("long", texts))
            fate["long"] += len(texts)
            continue
        if compressor is not None:
            body = clean(await compressor(question, "\n\n".join(texts)))
            if body:
                new_equations(body, seen)
                fate["compressed"] += len(texts)
                segments.append(("short", body))
                continue
        parts = [rule_compress(text, seen) for text in texts]
        fate["compressed"] += sum(bool(p) for p in parts)
        fate["dropped"] += sum(not p for p in parts)
        segments.append(("short", " ".join(p for p in parts if p)))

    final = f"The final answer is \\boxed{{{gold}}}."
    kept = " ".join(" ".join(body) if kind == "long" else body for kind, body in segments)
    why = inconsistency(kept, question, gold)
    if why:
        return Synthesis(None, "inconsistent", why, fate)

    # the derivation before the first long stretch opens it (the long agent speaks first)
    if segments[0][0] == "short":
        derivation = segments.pop(0)[1]
        if segments:
            segments[0] = ("long", [derivation, *segments[0][1]] if derivation else segments[0][1])
        else:
            segments = [("long", [derivation])]
    # an empty stretch between two long ones vanishes and they join
    merged: list[tuple[str, list[str] | str]] = []
    for position, (kind, body) in enumerate(segments):
        if kind == "short" and not body and position < len(segments) - 1:
            continue
        if kind == "long" and merged and merged[-1][0] == "long":
            merged[-1] = ("long", [*merged[-1][1], *body])
        else:
            merged.append((kind, body))
    if merged[-1][0] == "long":
        merged.append(("short", ""))

    turns: list[dict[str, str]] = []
    for position, (kind, body) in enumerate(merged):
        if kind == "long":
            packed = pack(body, caps)
            if packed is None:
                return Synthesis(None, "turn_too_long", "a step of an important thought is longer than the long "
                                 "agent's max_new_tokens", fate)
            for i, text in enumerate(packed):
                if i:
                    turns.append({"role": "short", "text": HANDBACK})
                turns.append({"role": "long", "text": text})
        elif position < len(merged) - 1:
            turns.append({"role": "short", "text": f"<answer>\n{body}\n</rethink>"})
        else:
            lines = "\n".join(line for line in (body, final) if line)
            turns.append({"role": "short", "text": f"<answer>\n{lines}\n</answer>"})
    if caps is not None:
        lengths = [caps.count(turn["text"]) for turn in turns]
        for turn, length in zip(turns, lengths):
            cap = caps.long if turn["role"] == "long" else caps.short
            if length > cap:
                return Synthesis(None, "turn_too_long", f"a {turn['role']} turn of {length} tokens exceeds the "
                                 f"agent's max_new_tokens {cap}", fate)
        if ((caps.turns is not None and len(turns) > caps.turns)
                or (caps.total is not None and sum(lengths) > caps.total)):
            return Synthesis(None, "episode_too_long", f"{len(turns)} turns, {sum(lengths)} tokens: over the "
                             f"episode's {caps.turns} turns / {caps.total} tokens", fate)
    return Synthesis({"id": str(record["id"]), "question": question, "answer": gold, "turns": turns}, thoughts=fate)


def sft_sets(transcripts: Sequence[Mapping]) -> dict[str, list[dict]]:
    """The two SFT sets: every transcript once per role, tagged with the ``role`` to train."""
    return {role: [{**t, "role": role} for t in transcripts if any(x["role"] == role for x in t["turns"])]
            for role in ("long", "short")}
