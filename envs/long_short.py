"""Long-Short: long, short, long, short ... until the short agent closes with ``</answer>`` or the cap."""
from __future__ import annotations

from agents.base import FormatResult
from envs.base import Env, register_env
from longshort.episode import Turn


@register_env("long_short")
class LongShortEnv(Env):
    roles = ("long", "short")

    def first_role(self) -> str:
        return "long"

    def next_role(self, turn: Turn, result: FormatResult) -> str:
        # The long agent always hands to the short one; the short one hands back with </rethink>.
        return "short" if turn.role == "long" else "long"
