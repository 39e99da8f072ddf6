"""A model's own chains of thought: the prompts around them and their batched generation.

Both analyses continue a chain at some point (after a prefix of thoughts, after a pruned thinking)
and read off an answer, so the prompt layout is defined once, in ``ChainFormat``: the chat-templated
question, ``<think>\\n`` opening the reply, the thinking, then ``\\n</think>\\n\\n`` after which the model
answers (the R1 layout the step-entropy code uses to force an answer after a pruned thinking).

``answer_prefix`` optionally starts the answer for the model (``The final answer is $\\boxed{``), the
forced-answer readout Long-Short's rollouts call for. A model trained to think and box its answer
(R1) needs none; a small chat model (SmolLM2) rambles after ``</think>`` without it, so the answer
it "gives" would measure its formatting, not what the thinking contains.

Generation goes through any ``Engine``: all chains are requested concurrently, so the embedded
``HFEngine`` decodes them as one batch.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

from longshort.analysis.steps import THINK_CLOSE, THINK_OPEN, StepSegmenter
from longshort.data import Problem
from longshort.engines.base import Engine, SamplingParams

# For a chat model that was not trained to think: ask for blank-line-separated steps, since steps are
# what both methods cut and score. R1-style models need no system prompt.
THINK_SYSTEM_PROMPT = (
    "Solve the problem step by step. Write each step as its own short paragraph, separated by a blank "
    "line. Then give the final answer in \\boxed{}."
)
FORCED_ANSWER_PREFIX = "The final answer is $\\boxed{"


def chat_ids(tokenizer, user: str, system: str | None = None) -> list[int]:
    """The user message rendered with the model's chat template, up to the start of the reply."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))
    text = f"{system}\n\n{user}\n\n" if system else f"{user}\n\n"
    return list(tokenizer.encode(text, add_special_tokens=True))


@dataclass(frozen=True)
class ChainFormat:
    """Where the thinking and the answer sit in the prompt (see the module docstring)."""

    system: str | None = THINK_SYSTEM_PROMPT
    open: str = THINK_OPEN + "\n"
    close: str = "\n" + THINK_CLOSE + "\n\n"
    answer_prefix: str = ""

    def thinking_prompt_ids(self, tokenizer, question: str) -> list[int]:
        """Where a chain of thought starts: the question, then the opening of the thinking. The
        DeepSeek-R1-Distill chat templates open it themselves (``<｜Assistant｜><think>\n``): not twice."""
        ids = chat_ids(tokenizer, question, self.system)
        if tokenizer.decode(ids[-8:]).rstrip().endswith(THINK_OPEN):
            return ids
        return ids + list(tokenizer.encode(self.open, add_special_tokens=False))

    def answer_prompt_ids(self, tokenizer, question: str, thinking: str) -> list[int]:
        """A (pruned, partial or empty) thinking, closed: the model answers next."""
        tail = thinking + self.close + self.answer_prefix
        return self.thinking_prompt_ids(tokenizer, question) + list(tokenizer.encode(tail, add_special_tokens=False))

    def answer_sampling(self, temperature: float, max_new_tokens: int) -> SamplingParams:
        """A forced ``$\\boxed{`` answer ends at ``}$``; a free answer runs to end-of-sequence."""
        stop = ("}$",) if self.answer_prefix.endswith("\\boxed{") else ()
        return SamplingParams(temperature=temperature, top_p=0.95 if temperature > 0 else 1.0,
                              max_new_tokens=max_new_tokens, stop=stop)

    def graded(self, answer: str) -> str:
        """The text to grade: the forced prefix belongs to the answer."""
        return self.answer_prefix + answer


R1_FORMAT = ChainFormat(system=None)
FORCED_FORMAT = ChainFormat(answer_prefix=FORCED_ANSWER_PREFIX)


@dataclass
class Chain:
    """One generated chain: ``ids`` are the thinking tokens only (cut at ``</think>``), as sampled."""

    problem_id: str
    question: str
    gold: str
    prompt_ids: list[int]
    ids: list[int]
    text: str
    closed: bool  # the model wrote </think> itself (False: end-of-sequence or out of tokens)
    choices: list[str] | None = None


async def generate_chains(engine: Engine, problems: Sequence[Problem], sampling: SamplingParams,
                          fmt: ChainFormat = ChainFormat()) -> list[Chain]:
    """One chain per problem, all requested at once; sampling stops at ``</think>``."""
    tokenizer = engine.tokenizer
    segmenter = StepSegmenter(tokenizer)
    sampling = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                              max_new_tokens=sampling.max_new_tokens, stop=(THINK_CLOSE,))
    prompts = [fmt.thinking_prompt_ids(tokenizer, p.prompt) for p in problems]
    generations = await asyncio.gather(*(engine.generate(ids, sampling) for ids in prompts))
    chains = []
    for problem, prompt, generation in zip(problems, prompts, generations):
        generated = generation.token_ids[:-1] if generation.stop_reason == "eos" else generation.token_ids
        cut = segmenter.thinking_length(generated)
        ids = list(generated[:cut])
        chains.append(Chain(problem.id, problem.prompt, problem.answer, prompt, ids, tokenizer.decode(ids),
                            closed=cut < len(generated), choices=problem.meta.get("choices")))
    return chains
