"""The Agent contract: a role, its system prompt and tags, its view of the transcript, its format check.

Agents hold no model. The rollout runner binds an engine (and so a tokenizer) to each agent, which is
how two agents share one model or use two.

An agent's view of an episode is one chat-templated prompt (its system prompt and the question)
followed by the token ids of every turn so far, separated by ``SEPARATOR``, as one assistant message
that the agent continues. The agent's own turns are the exact ids it sampled and partner turns are
re-tokenised only when the partner speaks another vocabulary. Rendering is therefore append-only:
the prompt of turn k is a prefix of the prompt of turn k+1, and the training sequence of an agent is
exactly its last prompt plus its last action, with its own tokens at the positions where they were
sampled.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Sequence

from longshort.engines.base import SamplingParams
from longshort.episode import TrainingSample, Turn
from longshort.registry import AGENTS

SEPARATOR = "\n\n"  # between turns, as in the paper's transcript (history = L + "\n\n" + S)
PREFIX_CACHE_SIZE = 4096  # questions whose rendered prompt an agent keeps: more than a rollout has in flight


def register_agent(name: str):
    """Class decorator: make an agent type available to recipes as ``agents.<role>.type: name``."""
    return AGENTS.register(name)


def vocab_key(tokenizer) -> str:
    """Identifies a vocabulary, so turns are re-tokenised only between different tokenizers."""
    return f"{getattr(tokenizer, 'name_or_path', '')}:{len(tokenizer)}"


@dataclass(frozen=True)
class FormatResult:
    ok: bool
    kind: str  # what the turn did: e.g. "think", "handback", "final"; "invalid" when not ok
    reason: str = "ok"


@dataclass
class View:
    """Token ids an agent sees, and where each turn sits in them: ``spans[i] = (turn_index, start, end)``."""

    ids: list[int]
    spans: list[tuple[int, int, int]]


class Agent:
    """Base class of every agent. Subclasses set the class attributes and ``check_format``."""

    system_prompt: ClassVar[str] = ""
    stop: ClassVar[tuple[str, ...]] = ()  # strings that end this agent's turn (kept in the output)
    gives_answer: ClassVar[bool] = False  # whether its turns may close the episode with \boxed{}

    def __init__(self, role: str, *, sampling: SamplingParams | None = None, system_prompt: str | None = None):
        self.role = role
        base = sampling or SamplingParams()
        self.sampling = SamplingParams(temperature=base.temperature, top_p=base.top_p, top_k=base.top_k,
                                       max_new_tokens=base.max_new_tokens, stop=tuple(self.stop))
        if system_prompt is not None:
            self.system_prompt = system_prompt
        self._prefix_cache: OrderedDict[tuple[str, str, str], list[int]] = OrderedDict()

    # ------------------------------------------------------------------ the agent's own output
    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        raise NotImplementedError(f"{type(self).__name__} must define check_format")

    # ------------------------------------------------------------------ what the agent sees
    def prefix_ids(self, question: str, tokenizer) -> list[int]:
        """System prompt and question rendered with the model's chat template, up to the reply.

        Cached per vocabulary, chat template and question, never per tokenizer object: OpenRLHF hands
        every ``generate_responses`` call a freshly unpickled tokenizer (and a freed object's id can
        come back as another tokenizer's). The newest ``PREFIX_CACHE_SIZE`` questions are kept.
        """
        key = (vocab_key(tokenizer), getattr(tokenizer, "chat_template", None) or "", question)
        if key in self._prefix_cache:
            self._prefix_cache.move_to_end(key)
        else:
            if getattr(tokenizer, "chat_template", None):
                messages = [{"role": "user", "content": question}]
                if self.system_prompt:
                    messages.insert(0, {"role": "system", "content": self.system_prompt})
                ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=False)
            else:  # a base model without a chat template: plain text blocks
                text = f"{self.system_prompt}\n\n{question}{SEPARATOR}" if self.system_prompt else question + SEPARATOR
                ids = tokenizer.encode(text, add_special_tokens=True)
            self._prefix_cache[key] = list(ids)
            if len(self._prefix_cache) > PREFIX_CACHE_SIZE:
                self._prefix_cache.popitem(last=False)
        return self._prefix_cache[key]

    def view(self, question: str, turns: Sequence[Turn], tokenizer, *, for_generation: bool = True) -> View:
        """Prompt ids after ``turns``; with ``for_generation`` a separator follows the last turn."""
        ids = list(self.prefix_ids(question, tokenizer))
        separator = _encode(tokenizer, SEPARATOR)
        mine = vocab_key(tokenizer)
        spans = []
        for index, turn in enumerate(turns):
            if index:
                ids += separator
            start = len(ids)
            ids += turn.action_ids if turn.vocab == mine else _encode(tokenizer, turn.text)
            spans.append((index, start, len(ids)))
        if turns and for_generation:
            ids += separator
        return View(ids, spans)

    def training_sample(self, question: str, turns: Sequence[Turn], tokenizer) -> TrainingSample | None:
        """This agent's episode as one sequence: its own tokens trained, everything else masked."""
        own = [i for i, turn in enumerate(turns) if turn.role == self.role]
        if not own:
            return None
        view = self.view(question, turns[: own[-1] + 1], tokenizer, for_generation=False)
        mask = [0] * len(view.ids)
        logprobs = [0.0] * len(view.ids)
        for index, start, end in view.spans:
            if turns[index].role == self.role:
                mask[start:end] = [1] * (end - start)
                if len(turns[index].logprobs) == end - start:  # a text-only turn (SFT data) has none
                    logprobs[start:end] = turns[index].logprobs
        return TrainingSample(role=self.role, input_ids=view.ids, action_mask=mask, logprobs=logprobs)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))
