"""A scripted engine for tests: replays fixed texts as token ids, so transcripts are built by hand."""
from __future__ import annotations

from longshort.engines.base import Generation, SamplingParams


class ScriptedEngine:
    """Replays texts in call order (truncated at the budget); logprobs are distinct per token so a
    misaligned mask or position shows up in the comparison."""

    def __init__(self, tokenizer, texts: list[str]):
        self.tokenizer = tokenizer
        self.texts = list(texts)
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self.prompts.append(list(prompt_ids))
        ids = self.tokenizer.encode(self.texts.pop(0), add_special_tokens=False)
        finish = "stop"
        if len(ids) > sampling.max_new_tokens:
            ids, finish = ids[: sampling.max_new_tokens], "length"
        logprobs = [-(len(self.prompts) + i / 1000) for i in range(len(ids))]
        return Generation(ids, logprobs, self.tokenizer.decode(ids), finish)
