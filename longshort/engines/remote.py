"""The remote engine: the Engine contract over an OpenAI-compatible completions server.

Typical use: a frozen partner agent served by ``vllm serve`` (on another GPU or machine) while the
trained agent runs embedded or inside OpenRLHF. Requests go to ``POST {base_url}/v1/completions``
with the prompt as a list of token ids, so the server never re-tokenises text. The generated token
ids come back through vLLM's extensions (``return_token_ids``, or ``return_tokens_as_token_ids``
in the logprobs); a server that offers neither cannot keep a turn token-exact, and is refused
rather than silently re-tokenised.

Start vLLM with ``--logprobs-mode processed_logprobs`` so the returned log-probabilities are
temperature-scaled, as the contract asks. Only the standard library is used (urllib in a thread
pool sized for many concurrent requests: the server batches them, so the client must not
serialise them).
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from longshort.engines.base import Generation, SamplingParams
from longshort.registry import ENGINES

_TOKEN_ID_PREFIX = "token_id:"


@ENGINES.register("remote")
class RemoteEngine:
    """Generates through an OpenAI-compatible server (vLLM's ``/v1/completions``).

    ``model`` is the served model name; ``tokenizer`` is the same model's Hugging Face tokenizer
    (agents render prompts with it). ``max_concurrency`` bounds the requests in flight at once.
    """

    def __init__(self, base_url: str, model: str, tokenizer, api_key: str | None = None, *,
                 timeout: float = 600.0, max_concurrency: int = 256, seed: int | None = None):
        self.url = base_url.rstrip("/").removesuffix("/v1") + "/v1/completions"
        self.model = model
        self.tokenizer = tokenizer
        self.api_key = api_key
        self.timeout = timeout
        self.seed = seed
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="longshort-remote")

    def payload(self, prompt_ids: list[int], sampling: SamplingParams) -> dict[str, Any]:
        """The JSON body of one completions request."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "logprobs": 0,
            # vLLM extensions: exact token ids out, stop strings kept, top_k
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "include_stop_str_in_output": True,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.top_k > 0:
            body["top_k"] = sampling.top_k
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: an engine continues a prompt, it cannot start from nothing")
        if sampling.max_new_tokens <= 0:
            return Generation([], [], "", "length")
        body = self.payload(prompt_ids, sampling)
        response = await asyncio.get_running_loop().run_in_executor(self._pool, self._post, body)
        return self.to_generation(response["choices"][0])

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise RuntimeError(f"{self.url} answered HTTP {error.code}: {detail}") from error

    def to_generation(self, choice: dict[str, Any]) -> Generation:
        """One completion choice as a Generation (token ids from the server, never re-tokenised)."""
        logprobs = choice.get("logprobs") or {}
        token_ids = choice.get("token_ids")
        if token_ids is None:
            tokens = logprobs.get("tokens") or []
            if not all(isinstance(t, str) and t.startswith(_TOKEN_ID_PREFIX) for t in tokens):
                raise RuntimeError(
                    f"{self.url} returned no generated token ids; the remote engine needs a server with "
                    "vLLM's return_token_ids or return_tokens_as_token_ids (e.g. `vllm serve`)"
                )
            token_ids = [int(t[len(_TOKEN_ID_PREFIX):]) for t in tokens]
        token_logprobs = logprobs.get("token_logprobs")
        if token_logprobs is None or len(token_logprobs) != len(token_ids):
            raise RuntimeError(f"{self.url} returned {len(token_logprobs or [])} logprobs for {len(token_ids)} tokens")
        finish_reason = choice.get("finish_reason")
        if finish_reason not in ("stop", "length"):
            raise RuntimeError(f"{self.url} ended a request with finish_reason={finish_reason!r}")
        stop_reason = None
        if finish_reason == "stop":
            server_reason = choice.get("stop_reason")
            stop_reason = server_reason if isinstance(server_reason, str) else "eos"
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return Generation(list(token_ids), [float(x) for x in token_logprobs], text, finish_reason, stop_reason)

    def close(self) -> None:
        """Stop the request threads (idle ones are reclaimed at exit anyway)."""
        self._pool.shutdown(wait=False)
