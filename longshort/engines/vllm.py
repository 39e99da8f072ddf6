"""The vLLM engine: the Engine contract on top of vLLM's asynchronous engine (GPU scale-out).

vLLM batches concurrent requests itself (continuous batching, paged KV cache), so this adapter only
translates: our ``SamplingParams`` into vLLM's, our prompt token ids into a ``TokensPrompt`` (no
re-tokenisation, the turn stays token-exact), and vLLM's final ``RequestOutput`` into a
``Generation``. vLLM is imported inside the constructor, so ``import longshort.engines`` works
without it.

Log-probabilities: the engine is started with ``logprobs_mode="processed_logprobs"`` so vLLM
reports ``log_softmax(logits / T)`` of the sampled token, as the contract asks (its default,
``raw_logprobs``, ignores the temperature). IMPL-CHOICE: when top-k/top-p truncate the distribution,
vLLM's processed values are renormalised over the kept tokens, unlike the embedded engine's; with
the usual RL settings (top_p=1, top_k=0) the two agree.
"""
from __future__ import annotations

import itertools
from typing import Any

from longshort.engines.base import Generation, SamplingParams
from longshort.registry import ENGINES

_INSTALL_HINT = "the vllm engine needs vLLM: pip install 'longshort[openrlhf]' (or pip install vllm)"


@ENGINES.register("vllm")
class VLLMEngine:
    """Serves ``model`` (a Hub id or local directory) with ``vllm.AsyncLLMEngine``.

    ``engine_kwargs`` go to ``vllm.AsyncEngineArgs`` unchanged (``gpu_memory_utilization``,
    ``tensor_parallel_size``, ``max_model_len``, ...); ``tokenizer`` defaults to the model's own.
    ``llm`` accepts an engine that is already running (e.g. built by a launcher), in which case no
    new one is started.
    """

    def __init__(self, model: str, tokenizer=None, *, seed: int | None = None, llm: Any = None,
                 **engine_kwargs: Any):
        try:
            import vllm
            from vllm.sampling_params import RequestOutputKind
        except ImportError as error:
            raise ImportError(_INSTALL_HINT) from error
        self._vllm = vllm
        self._final_only = RequestOutputKind.FINAL_ONLY
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer = tokenizer
        if llm is None:
            engine_kwargs.setdefault("logprobs_mode", "processed_logprobs")
            if seed is not None:
                engine_kwargs.setdefault("seed", seed)
            llm = vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=model, **engine_kwargs))
        self.llm = llm
        self._ids = itertools.count()

    def sampling_params(self, sampling: SamplingParams) -> Any:
        """Our sampling settings as vLLM's: stop strings kept in the output, sampled-token logprobs."""
        return self._vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            logprobs=0,
            output_kind=self._final_only,
        )

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: an engine continues a prompt, it cannot start from nothing")
        if sampling.max_new_tokens <= 0:
            return Generation([], [], "", "length")
        prompt = self._vllm.TokensPrompt(prompt_token_ids=list(prompt_ids))
        final = None
        async for output in self.llm.generate(prompt, self.sampling_params(sampling), f"longshort-{next(self._ids)}"):
            final = output
        if final is None or not final.outputs:
            raise RuntimeError("vLLM returned no output for the request")
        return self.to_generation(final.outputs[0])

    def to_generation(self, completion: Any) -> Generation:
        """vLLM's CompletionOutput as a Generation.

        vLLM says ``finish_reason="stop"`` for stop strings, stop tokens and EOS alike; its
        ``stop_reason`` is the stop string, a stop token id, or None for EOS. Anything but
        stop/length (an abort) is an error here, because a half-finished turn must not be trained on.
        """
        token_ids = list(completion.token_ids)
        if completion.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with finish_reason={completion.finish_reason!r}")
        logprobs = [position[token].logprob for position, token in zip(completion.logprobs, token_ids)]
        stop_reason = None
        if completion.finish_reason == "stop":
            stop_reason = completion.stop_reason if isinstance(completion.stop_reason, str) else "eos"
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return Generation(token_ids, logprobs, text, completion.finish_reason, stop_reason)
