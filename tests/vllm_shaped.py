"""OpenRLHF's side of the agent executor, shaped like vLLM without vLLM: the sampling parameters OpenRLHF
builds, and its engine (``RolloutRayActor.generate``) over one of our engines."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from longshort.engines.base import Generation, SamplingParams


@dataclass
class VLLMSampling:
    """The vllm.SamplingParams fields OpenRLHF's samples generator sets, plus those the bridge sets."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int | None = None
    min_tokens: int = 1
    skip_special_tokens: bool = False
    logprobs: int | None = 1
    stop: list[str] | None = None
    include_stop_str_in_output: bool = False


class VLLMShaped:
    """What MultiTurnAgentExecutor calls on ``llm_engine`` (OpenRLHF's RolloutRayActor.generate), over our engine."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[list[int], VLLMSampling, Generation]] = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        sampling = SamplingParams(temperature=sampling_params.temperature, top_p=sampling_params.top_p,
                                  top_k=max(0, sampling_params.top_k), max_new_tokens=sampling_params.max_tokens,
                                  stop=tuple(sampling_params.stop or ()))
        generation = await self.engine.generate(list(prompt_token_ids), sampling)
        self.calls.append((list(prompt_token_ids), sampling_params, generation))
        logprobs = None
        if sampling_params.logprobs is not None:
            logprobs = [{token: SimpleNamespace(logprob=lp)} for token, lp in zip(generation.token_ids,
                                                                                  generation.logprobs)]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=list(generation.token_ids), text=generation.text,
                                                        finish_reason=generation.finish_reason, logprobs=logprobs)])
