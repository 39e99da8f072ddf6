"""The problem record every source, rollout, trainer and evaluation shares."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Problem:
    """One question with its gold answer.

    ``prompt`` is the full text shown to the model (for multiple choice: stem, lettered options and
    the instruction); ``answer`` is the gold answer (the option letter for multiple choice). ``meta``
    holds what is known besides: source, kind ("math" | "choice"), solution, steps, difficulty,
    choices, answer_text.
    """

    id: str
    prompt: str
    answer: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Problem:
        meta = copy.deepcopy(dict(data.get("meta") or {}))
        return cls(id=str(data["id"]), prompt=data["prompt"], answer=str(data["answer"]), meta=meta)
