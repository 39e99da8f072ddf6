"""Named registries: the extension points of longshort.

Extending the framework means adding a class or a function and decorating it, never editing the
trainer. Every registry resolves names the same way and, for a name it does not know, raises one
error that names the closest registered entry, so a typo in a recipe fails with a fix, not a trace.

    from longshort.registry import ENVS

    @ENVS.register("planner_solver")
    class PlannerSolverEnv(Env): ...
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from longshort.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """A registry lookup for a name nobody registered."""

    def __str__(self) -> str:  # KeyError quotes its message; a user wants it plain.
        return str(self.args[0])


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """The candidate most similar to ``name``, or None when nothing is close enough."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: list[str] | tuple[str, ...]) -> str:
    """A short hint for error messages: ``" (did you mean 'x'?)"`` or an empty string."""
    best = closest(name, candidates)
    return f" (did you mean '{best}'?)" if best else ""


class Registry(Generic[T]):
    """A name -> object map filled by a decorator.

    ``kind`` is only used in messages ("unknown env 'x'"), so errors read naturally.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is already registered to {self._entries[name]!r}")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = sorted(self._entries)
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, known)}; registered: {', '.join(known) or 'none'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


# The framework's extension points. Built-ins register themselves when their package is imported
# (agents/, envs/, longshort.rewards, longshort.engines, longshort.data, longshort.coldstart).
AGENTS: Registry = Registry("agent")
ENVS: Registry = Registry("env")
REWARDS: Registry = Registry("reward term")
ENGINES: Registry = Registry("engine")
BENCHMARKS: Registry = Registry("benchmark")
COLDSTART: Registry = Registry("cold-start builder")
# Filled by longshort.algos (which needs torch); the built-in names are listed here so that a config can
# be checked without importing it.
ADVANTAGE_ESTIMATORS: Registry = Registry("advantage estimator")
BUILTIN_ESTIMATORS = ("group_norm", "reinforce_baseline", "rloo")
