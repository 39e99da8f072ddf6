"""The Env contract: who acts next, when an episode ends, and how many tokens a turn may spend.

An env owns the transcript (the list of turns), the turn order, the turn cap and the token budgets.
It never generates: the rollout runner asks ``budget(role)``, lets the agent's engine act, and hands
the resulting turn to ``step``. Everything an env returns is plain data, so the same env runs inside
the embedded runner and inside OpenRLHF's agent executor.

Bad output is data, not a crash: a turn that fails its agent's format check (missing or unclosed
tags, empty, truncated at its budget, no ``\\boxed{}``) ends the episode as a format failure, and an
episode that never finishes is cut by the turn cap.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from agents.base import Agent, FormatResult
from longshort.episode import Outcome, Turn
from longshort.registry import ENVS


def register_env(name: str):
    """Class decorator: make an env available to recipes as ``env.name: name``."""
    return ENVS.register(name)


@dataclass
class StepResult:
    next_role: str | None  # who acts next; None when done
    done: bool
    info: dict = field(default_factory=dict)


class Env:
    """Base environment. Subclasses name their ``roles`` and define ``first_role`` and ``next_role``."""

    roles: ClassVar[tuple[str, ...]] = ()

    def __init__(self, agents: Mapping[str, Agent], *, max_turns: int = 8, max_total_tokens: int = 8192):
        missing = [role for role in self.roles if role not in agents]
        if missing:
            raise ValueError(f"{type(self).__name__} needs agents for roles {', '.join(self.roles)}; "
                             f"missing: {', '.join(missing)} (define agents.<role> in the recipe)")
        self.agents = dict(agents)
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.question = ""
        self.turns: list[Turn] = []
        self.outcome = Outcome(reason="running")

    # ------------------------------------------------------------------ what subclasses define
    def first_role(self) -> str:
        raise NotImplementedError

    def next_role(self, turn: Turn, result: FormatResult) -> str:
        """Who acts after a well-formed, non-final turn."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the contract
    def reset(self, question: str) -> str:
        self.question = question
        self.turns = []
        self.outcome = Outcome(reason="running")
        return self.first_role()

    def tokens_left(self) -> int:
        return self.max_total_tokens - sum(turn.num_tokens for turn in self.turns)

    def budget(self, role: str) -> int:
        """New tokens the next turn of ``role`` may generate: its own cap, within the episode's budget."""
        return max(0, min(self.agents[role].sampling.max_new_tokens, self.tokens_left()))

    def step(self, turn: Turn) -> StepResult:
        """Record a turn and decide what happens next."""
        result = self.agents[turn.role].check_format(turn.text, turn.finish_reason)
        turn.format_ok, turn.format_reason = result.ok, result.reason
        self.turns.append(turn)
        if not result.ok:
            out_of_budget = turn.finish_reason == "length" and self.tokens_left() <= 0
            return self._finish("budget" if out_of_budget else f"format:{turn.role}", turn, result)
        if result.kind == "final":
            self.outcome = Outcome(reason="answered", answer_text=turn.text, answer_role=turn.role)
            return StepResult(None, True, {"kind": result.kind})
        if len(self.turns) >= self.max_turns:
            return self._finish("turn_cap", turn, result)
        if self.tokens_left() <= 0:
            return self._finish("budget", turn, result)
        return StepResult(self.next_role(turn, result), False, {"kind": result.kind})

    def _finish(self, reason: str, turn: Turn, result: FormatResult) -> StepResult:
        self.outcome = Outcome(reason=reason)
        return StepResult(None, True, {"kind": result.kind, "reason": result.reason})
