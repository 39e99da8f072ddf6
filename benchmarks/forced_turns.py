"""A Long-Short env for benchmarks that does not stop at format failures.

An untrained SmolLM2 rarely writes the protocol's tags, so the real env ends most of its episodes
after one turn. Benchmarks of multi-turn work (KV reuse across turns, the update's memory on long
sequences) need episodes that run their turns whatever the model writes: this env only stops at
the turn cap or the episode's token budget.
"""
from __future__ import annotations

import time

from envs.base import StepResult, register_env
from envs.long_short import LongShortEnv


@register_env("long_short_forced")
class ForcedTurnsEnv(LongShortEnv):
    """Long, short, long, ... for exactly ``max_turns`` turns (or until ``max_total_tokens`` are spent).

    ``finished[k]`` is when the last episode so far finished its turn k + 1, as ``(time.perf_counter(),
    time.process_time())``, for timing a rollout turn by turn; reset it between rollouts.
    """

    finished: list[tuple[float, float]] = []

    def step(self, turn):
        index = len(self.turns)
        ForcedTurnsEnv.finished += [(0.0, 0.0)] * (index + 1 - len(ForcedTurnsEnv.finished))
        ForcedTurnsEnv.finished[index] = max(ForcedTurnsEnv.finished[index], (time.perf_counter(), time.process_time()))
        result = self.agents[turn.role].check_format(turn.text, turn.finish_reason)
        turn.format_ok, turn.format_reason = result.ok, result.reason
        self.turns.append(turn)
        if len(self.turns) >= self.max_turns or self.tokens_left() <= 0:
            return self._finish("turn_cap", turn, result)
        return StepResult("short" if turn.role == "long" else "long", False)
