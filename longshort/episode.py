"""Episode records: what a rollout produced, in a form the trainer, the evaluator and JSONL share.

A ``Turn`` is one agent's action: the exact prompt token ids it saw and the token ids it sampled.
An ``Episode`` is the ordered turns of one problem sample plus its outcome, per-agent reward terms
and token counts. An agent turns an episode into its ``TrainingSample`` (``Agent.training_sample``):
one sequence in which its own tokens are trained and everything else (prompt, partner turns,
separators) is masked context, so every agent learns from exactly the tokens it generated.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from longshort.paths import write_text_atomically


@dataclass
class Turn:
    role: str
    prompt_ids: list[int]
    action_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    vocab: str  # which tokenizer produced action_ids; partners with another vocabulary re-tokenise `text`
    format_ok: bool = True
    format_reason: str = "ok"

    @property
    def num_tokens(self) -> int:
        return len(self.action_ids)


@dataclass
class Outcome:
    """How an episode ended: ``reason`` is "answered", or the failure ("format:<role>", "turn_cap", "budget")."""

    reason: str
    answer_text: str | None = None  # the turn that closed the episode with a final answer
    answer_role: str | None = None
    extracted: str | None = None  # the answer pulled out of answer_text
    correct: bool = False
    verdict: str | None = None  # the grader's reason (ok, wrong, no_answer, timeout, ...); None if ungraded

    @property
    def finished(self) -> bool:
        return self.reason == "answered"

    def set_verdict(self, verdict) -> None:
        """Keep a grader's ``longshort.verify.Verdict`` on the answer: what it extracted, whether it
        is correct, and why (evaluation records count the reasons)."""
        self.extracted, self.correct, self.verdict = verdict.extracted, verdict.correct, verdict.reason


@dataclass
class TrainingSample:
    """One agent's view of one episode as a single sequence.

    ``action_mask[i]`` is 1 where ``input_ids[i]`` was sampled by this agent; ``logprobs[i]`` is the
    rollout log-probability there (0 elsewhere). The trainer predicts token i from positions < i.
    """

    role: str
    input_ids: list[int]
    action_mask: list[int]
    logprobs: list[float]
    advantage: float = 0.0


@dataclass
class Episode:
    problem_id: str
    sample_index: int
    prompt: str  # the problem as shown to the agents (agents re-render their view from it)
    gold: str
    turns: list[Turn] = field(default_factory=list)
    outcome: Outcome = field(default_factory=lambda: Outcome(reason="running"))
    rewards: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> term -> value
    totals: dict[str, float] = field(default_factory=dict)  # role -> weighted sum
    meta: dict = field(default_factory=dict)

    def roles(self) -> list[str]:
        return sorted({t.role for t in self.turns})

    def tokens(self, role: str | None = None) -> int:
        """Generated tokens of one agent (or of all agents): the paper's efficiency measure."""
        return sum(t.num_tokens for t in self.turns if role is None or t.role == role)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Episode":
        data = dict(data)
        data["turns"] = [Turn(**t) for t in data.get("turns", [])]
        data["outcome"] = Outcome(**data["outcome"])
        return cls(**data)


def save_episodes(episodes: Iterable[Episode], path: str | Path) -> None:
    """One episode a line, written atomically: a resumed run rewrites a step's file, never half of it."""
    write_text_atomically(Path(path), "".join(json.dumps(episode.to_dict()) + "\n" for episode in episodes))


def load_episodes(path: str | Path) -> list[Episode]:
    with open(path) as handle:
        return [Episode.from_dict(json.loads(line)) for line in handle if line.strip()]
