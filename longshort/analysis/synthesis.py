"""Cold-start transcripts for the two Long-Short agents, synthesised from scored thoughts.

The paper builds D_long and D_short "directly from scored thoughts" but its rules are not published
(reviewers asked how ``</rethink>`` is assigned). The rules here (IMPL-CHOICE):

- Important thoughts are the top ``top_fraction`` by joint score S_i (at least one), or those with
  ``S_i >= threshold`` when a threshold is given. The first thought is important too
  (``keep_first``, default), because the long agent speaks first and front thoughts (problem
  understanding) score highest in the paper. Without it, the thoughts before the first important
  one (restating the question, hesitating) are left out, and the long agent opens with that one.
- A maximal run of important thoughts becomes one long turn, ``<think>`` + the thoughts verbatim +
  ``</think>``. A maximal run of the others becomes one short turn carrying them compressed:
  ``<answer> ... </rethink>`` when another long turn follows, and the last turn is always
  ``<answer> ... \\boxed{gold} ... </answer>`` (appended when the chain ends on an important thought).
  Maximal runs alternate by construction, which is exactly the turn order of ``LongShortEnv``.
- Compression is rule-based by default (keep the sentences that state results, within a character
  budget); ``LLMCompressor`` asks a model to rewrite instead and falls back to the rule on bad output.
- A chain is used up to its last prefix whose rollouts reach the gold answer (A_i > 0); thoughts after
  it led away from the answer and are dropped, and a chain that never reaches it gives no transcript.
  ``end_at="first"`` stops at the first such prefix instead: once the rollouts answer right, what
  follows (re-checks, summaries) is left out rather than compressed. The final turn states the gold
  answer, so no transcript teaches a wrong result.
- ``</overthink>`` is never emitted: its meaning is unconfirmed.

Protocol tags inside thought texts (R1's own ``<think>``) are removed, and every turn is checked
with the agents' own ``check_format`` before a transcript is kept.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Sequence

from agents.long_short import PROTOCOL_TAGS, LongThoughtAgent, ShortThoughtAgent
from longshort.analysis.chains import chat_ids
from longshort.config import SYNTHESIS_END_AT
from longshort.engines.base import Engine, SamplingParams

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_RESULT = re.compile(r"=|\\boxed|\d")


def clean(text: str) -> str:
    """Remove the protocol's tags from a thought, so it cannot break a turn's format."""
    for tag in PROTOCOL_TAGS:
        text = text.replace(tag, "")
    return text.strip()


def rule_compress(text: str, max_chars: int = 300) -> str:
    """The sentences of ``text`` that state results (an ``=``, a number, a box), last ones first
    within ``max_chars``, in their original order; the last sentence when none does."""
    sentences = [s.strip() for s in _SENTENCE.split(clean(text)) if s.strip()]
    if not sentences:
        return ""
    results = [i for i, s in enumerate(sentences) if _RESULT.search(s)] or [len(sentences) - 1]
    kept, used = [], 0
    for i in reversed(results):
        if kept and used + len(sentences[i]) > max_chars:
            break
        kept.append(i)
        used += len(sentences[i]) + 1
    return " ".join(sentences[i] for i in sorted(kept))[: max(max_chars, 1)]


Compressor = Callable[[str, str], Awaitable[str]]  # (question, text) -> compressed text

COMPRESS_PROMPT = (
    "Rewrite the following reasoning as briefly as possible. Keep every intermediate result and the "
    "numbers it depends on; drop hesitation, repetition and checks. Reply with the rewritten reasoning only."
    "\n\nProblem: {question}\n\nReasoning:\n{text}"
)


class LLMCompressor:
    """Compression by a model (any ``Engine``); empty or tag-bearing output falls back to ``rule_compress``."""

    def __init__(self, engine: Engine, *, max_new_tokens: int = 160, max_chars: int = 300):
        self.engine = engine
        self.sampling = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
        self.max_chars = max_chars

    async def __call__(self, question: str, text: str) -> str:
        prompt = chat_ids(self.engine.tokenizer, COMPRESS_PROMPT.format(question=question, text=clean(text)))
        out = (await self.engine.generate(prompt, self.sampling)).text.strip()
        if not out or any(tag in out for tag in PROTOCOL_TAGS):
            return rule_compress(text, self.max_chars)
        return out


END_AT = SYNTHESIS_END_AT  # where a chain is cut: its last / first prefix whose rollouts reach the answer


@dataclass(frozen=True)
class SynthesisConfig:
    top_fraction: float = 0.3
    threshold: float | None = None
    max_chars: int = 300  # budget of the rule compressor per short turn
    keep_first: bool = True  # the first thought is always the long agent's
    end_at: str = "last"

    def __post_init__(self):
        if self.end_at not in END_AT:
            raise ValueError(f"end_at must be one of {', '.join(END_AT)}, got {self.end_at!r}")


def important_thoughts(scores: Sequence[float], config: SynthesisConfig) -> set[int]:
    """Indices of the important thoughts (with the first when ``keep_first``, see the module docstring)."""
    if config.threshold is not None:
        chosen = {i for i, s in enumerate(scores) if s >= config.threshold}
    else:
        k = max(1, math.ceil(config.top_fraction * len(scores)))
        chosen = set(sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k])
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


async def synthesize(record: Mapping, config: SynthesisConfig = SynthesisConfig(),
                     compressor: Compressor | None = None) -> dict | None:
    """One transcript ``{"id", "question", "answer", "turns"}`` from a scored record (the rows of
    ``importance``'s ``scores.jsonl``), or None when no prefix of the chain reaches the gold answer."""
    reaching = [i for i, t in enumerate(record["thoughts"]) if t["accuracy"] > 0]
    if not reaching:
        return None
    thoughts = record["thoughts"][: (reaching[0] if config.end_at == "first" else reaching[-1]) + 1]
    question, gold = record["question"], str(record["answer"])

    async def compress(indices: list[int]) -> str:
        text = "\n\n".join(thoughts[i]["text"] for i in indices)
        return clean(await compressor(question, text)) if compressor else rule_compress(text, config.max_chars)

    final = f"The final answer is \\boxed{{{gold}}}."
    important = important_thoughts([t["score"] for t in thoughts], config) or {0}
    start = min(important)  # 0 with keep_first; else what precedes the first important thought is left out
    thoughts, important = thoughts[start:], {i - start for i in important}
    turns = []
    parts = runs(important, len(thoughts))
    for position, (is_long, indices) in enumerate(parts):
        if is_long:
            body = "\n\n".join(clean(thoughts[i]["text"]) for i in indices)
            turns.append({"role": "long", "text": f"<think>\n{body}\n</think>"})
        elif position < len(parts) - 1:
            turns.append({"role": "short", "text": f"<answer>\n{await compress(indices) or 'Continue.'}\n</rethink>"})
        else:
            turns.append({"role": "short", "text": f"<answer>\n{await compress(indices)}\n{final}\n</answer>"})
    if turns[-1]["role"] == "long":
        turns.append({"role": "short", "text": f"<answer>\n{final}\n</answer>"})
    return {"id": str(record["id"]), "question": question, "answer": gold, "turns": turns}


def sft_sets(transcripts: Sequence[Mapping]) -> dict[str, list[dict]]:
    """The two SFT sets: every transcript once per role, tagged with the ``role`` to train."""
    return {role: [{**t, "role": role} for t in transcripts if any(x["role"] == role for x in t["turns"])]
            for role in ("long", "short")}
