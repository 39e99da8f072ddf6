"""Shared test helpers: a scripted engine that replays fixed texts as token ids (transcripts built by hand),
and a tiny model with varied weights."""
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


def varied_tiny_model():
    """tiny_model with larger random weights: at the default init scale a tied-embedding model repeats
    its input token forever, and a constant output would hide padding and position bugs."""
    import torch

    from longshort.models import tiny_model

    model, tokenizer = tiny_model(seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
    return model, tokenizer
