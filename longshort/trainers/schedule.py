"""Which agents learn at which RL step, and which problems each step draws.

Both are pure functions of the step number (plus the seed), so a resumed run needs nothing but the
step to be back in the same phase and at the same place in the data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from longshort.data import Problem


@dataclass(frozen=True)
class Schedule:
    """``joint``: every trainable agent learns from the same episodes at every step.
    ``alternating`` (the paper's): one agent learns for ``phase_steps`` steps while the others are
    frozen (they still act in the rollouts), then the next one, starting with ``first_agent``."""

    kind: str
    trainable: tuple[str, ...]  # roles with trainable: true, in config order
    first_agent: str
    phase_steps: int

    def __post_init__(self):
        if self.kind not in ("joint", "alternating"):
            raise ValueError(f"unknown schedule {self.kind!r}; choose joint or alternating")
        if self.kind == "alternating":
            if self.first_agent not in self.trainable:
                raise ValueError(f"trainer.first_agent '{self.first_agent}' is not a trainable agent; "
                                 f"trainable agents: {', '.join(self.trainable) or 'none'}")
            if self.phase_steps < 1:
                raise ValueError(f"trainer.phase_steps must be >= 1, got {self.phase_steps}")

    @property
    def order(self) -> tuple[str, ...]:
        """Trainable roles in training order: ``first_agent`` first, then the rest in config order."""
        i = self.trainable.index(self.first_agent) if self.first_agent in self.trainable else 0
        return self.trainable[i:] + self.trainable[:i]

    def trained(self, step: int) -> tuple[str, ...]:
        """Roles updated at RL step ``step`` (0-based)."""
        if self.kind == "joint" or not self.trainable:
            return self.trainable
        return (self.order[(step // self.phase_steps) % len(self.order)],)

    def updates_of(self, role: str, steps: int) -> int:
        """How many of the first ``steps`` RL steps update ``role`` (sizes its learning-rate schedule)."""
        return sum(role in self.trained(s) for s in range(steps))


class ProblemStream:
    """Cycles through the training problems in a fresh seeded order every epoch.

    ``cursor`` counts the problems drawn so far; the problem at position ``c`` is fixed by the seed, so
    a stream restored with the same cursor continues exactly where it stopped.
    """

    def __init__(self, problems: Sequence[Problem], seed: int, cursor: int = 0):
        if not problems:
            raise ValueError("no training problems")
        self.problems = list(problems)
        self.seed = seed
        self.cursor = cursor
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.problems)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._orders = {epoch: order}  # one epoch at a time is all a draw needs
        return self._orders[epoch]

    def take(self, n: int) -> list[Problem]:
        drawn = []
        for _ in range(n):
            epoch, index = divmod(self.cursor, len(self.problems))
            drawn.append(self.problems[self._order(epoch)[index]])
            self.cursor += 1
        return drawn
