"""Per-episode evaluation records and the append-only JSONL file that makes a run resumable.

Each finished episode becomes one ``Record`` line in ``<out>/records/<set>.jsonl`` the moment it
finishes, so a run that is interrupted (Ctrl-C, a killed job, a preempted GPU) loses only the
episodes in flight: started again, it skips every (item, sample) already on disk. A record keeps the
turn texts but not token ids or log-probabilities: enough to recompute every metric and to read why
an answer failed, at a few KB per episode rather than the MBs a full ``Episode`` takes at 16k tokens.

A process killed in the middle of a write leaves a partial last line; ``RecordFile`` drops it (and
cuts it from the file, so the next append starts on a clean line) instead of failing the resume.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from longshort.errors import UserError
from longshort.data import Problem
from longshort.episode import Episode
from longshort.paths import append_line

ERROR = "error"  # the outcome of an episode that raised (engine failure, ungradable gold, ...)


class RecordError(UserError, ValueError):
    """A records file that holds something other than evaluation records; says how to start over."""


@dataclass
class Record:
    """What evaluation keeps of one episode.

    ``outcome`` is the episode's end ("answered", "format:<role>", "turn_cap", "budget") or
    ``"error"`` when playing it raised; ``verdict`` is the grader's reason for an answered episode
    (``ok``, ``wrong``, ``no_answer``, ``timeout``, ``unparsable_gold``, ``error: ...``).
    ``tokens`` maps each role to the tokens it generated.
    """

    id: str
    sample: int
    correct: bool
    outcome: str
    gold: str
    verdict: str | None = None
    extracted: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    turns: list[dict] = field(default_factory=list)
    error: str | None = None
    prompt: str | None = None  # the problem as the agents saw it (for reading the transcript; older records lack it)

    @property
    def key(self) -> tuple[str, int]:
        return self.id, self.sample

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    @classmethod
    def from_episode(cls, episode: Episode) -> Record:
        tokens: dict[str, int] = {}
        for turn in episode.turns:
            tokens[turn.role] = tokens.get(turn.role, 0) + turn.num_tokens
        turns = [{"role": t.role, "text": t.text, "tokens": t.num_tokens, "finish_reason": t.finish_reason,
                  "format": t.format_reason} for t in episode.turns]
        return cls(id=episode.problem_id, sample=episode.sample_index, correct=bool(episode.outcome.correct),
                   outcome=episode.outcome.reason, gold=episode.gold, verdict=episode.outcome.verdict,
                   extracted=episode.outcome.extracted, tokens=tokens, turns=turns, prompt=episode.prompt)

    @classmethod
    def broken(cls, problem: Problem, sample: int, error: BaseException) -> Record:
        """An episode that could not be played or graded: kept, and counted wrong."""
        return cls(id=problem.id, sample=sample, correct=False, outcome=ERROR, gold=problem.answer,
                   error=f"{type(error).__name__}: {error}", prompt=problem.prompt)


class RecordFile:
    """``<set>.jsonl``: records appended one line at a time, read back keyed by (item id, sample)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def load(self) -> dict[tuple[str, int], Record]:
        """Every complete record; a torn last line (a kill mid-write) is cut off the file."""
        if not self.path.is_file():
            return {}
        records: dict[tuple[str, int], Record] = {}
        good_bytes = 0
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):  # torn write: even if it parses, the next append would join it
                    break
                try:
                    record = Record(**json.loads(raw))
                except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
                    raise RecordError(f"{self.path}: line {raw[:80]!r} is not an evaluation record; remove "
                                     "the file (or pass --restart) to evaluate this set again") from None
                records[record.key] = record
                good_bytes += len(raw)
        if good_bytes < self.path.stat().st_size:
            os.truncate(self.path, good_bytes)
        return records

    def append(self, record: Record) -> None:
        """One line per record, fsynced at once (``paths.append_line``): what is on disk is what a resumed
        run skips; an append is not atomic, and ``load`` drops the torn last line a kill can leave."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, json.dumps(asdict(record), ensure_ascii=False))
