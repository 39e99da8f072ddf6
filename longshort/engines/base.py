"""The engine contract: asynchronous, token-in/token-out generation.

Engines never see chat messages or transcripts, only prompt token ids, and they return the exact
token ids they sampled. Staying at the token level across turns is what keeps the trained tokens
identical to the generated ones (re-rendering a conversation and re-tokenising it can merge or split
tokens at turn boundaries, which silently breaks the PPO ratio; verl documents this).

An engine may serve any number of agents and episodes at once: callers simply ``await generate``
concurrently and the engine batches what is pending.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How one turn is sampled. ``stop`` strings end the turn and are kept in the output."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()


@dataclass
class Generation:
    """One finished request.

    ``logprobs[i]`` is the log-probability of ``token_ids[i]`` under the distribution it was sampled
    from (temperature applied; top-p/top-k truncation not applied), which is what the trainer's
    forward pass recomputes for the PPO ratio. ``finish_reason`` is ``"stop"`` (a stop string or the
    end-of-sequence token) or ``"length"`` (the token budget ran out).
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    stop_reason: str | None = field(default=None)  # the stop string or "eos" that ended it


@runtime_checkable
class Engine(Protocol):
    """Anything that turns prompt token ids into a Generation, concurrently.

    ``tokenizer`` is the Hugging Face tokenizer of the served model: agents render their prompts
    with it, so two agents bound to two models each see tokens of their own vocabulary.
    """

    tokenizer: object

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation: ...


@runtime_checkable
class SessionEngine(Engine, Protocol):
    """An engine that keeps a session's state between its requests (the HF engine: its KV cache).

    The rollout runner opens one session per episode and agent, passes it with every turn of that
    agent, and ends it when the episode is over, so the engine can free what it kept. Engines without
    ``end_session`` are called without sessions.
    """

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *,
                       session: Hashable | None = None) -> Generation: ...

    def end_session(self, session: Hashable) -> None: ...
