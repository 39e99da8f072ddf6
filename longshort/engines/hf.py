"""The embedded engine: batched generation with plain PyTorch + transformers, CPU or one GPU.

A multi-turn rollout runs many episodes as coroutines; each one ``await``s ``generate`` when its
agent's turn comes. Decoding them one by one would leave the matrix units idle, so the engine
collects every request that is pending once the event loop has run all ready coroutines, and
decodes them as one left-padded batch with a KV cache. Rows leave the batch as they finish, and each
request is answered the moment it finishes, so its episode can move on (e.g. to a partner agent
served by another engine) while the rest decode. Requests pending beyond ``max_batch_size`` when a
batch starts join it as rows leave (prefilled as a small batch, then merged in), so an evaluation of
hundreds of problems decodes full batches instead of waiting each batch out to its longest row (on a
2-core CPU that gained nothing measurable: ``benchmarks/refill.py``, README).
The decoding itself is a generator of steps, advanced by the thread that started the rollout
(``model_thread``: in a worker thread with an OpenMP team of its own, a CPU decode step was 1.5x
slower), or by a worker thread under a plain ``asyncio.run``. Each request samples from its own
random stream, so its tokens do not depend on which rows it shares a batch with.

The decode loop is ours rather than ``model.generate`` because every row carries its own sampling
settings, token budget and stop strings, and because the contract needs the log-probability of each
sampled token under the temperature-scaled (untruncated) distribution, which ``generate`` does not
return in that form.

Multi-turn reuse: a request may name a ``session`` (the rollout runner uses one per episode and
agent). When its turn finishes, the keys and values of everything the model saw in that row are
kept (``kv_reuse.KVStore``), and the session's next request prefills only the tokens past the part
of its prompt they cover (the partner's turn and the separators), batched with the other rows'
new tokens: each row's cached part sits right-aligned in the batch cache, its new tokens
right-aligned after it, and the attention mask hides the gaps. Sampling is unchanged (same rows in
the same order, so the same random numbers; the logits equal the full prefill's to float rounding),
which ``tests/test_kv_reuse.py`` checks.

Identical prompts: the samples of a GRPO group ask for the same prompt, and a batch runs each distinct
prompt (with the same cached start) once; its rows then take copies of that row's keys, values and
logits and sample from their own streams. With ``kv_cache_budget=0`` every row runs its own prompt.

Shared openings: rows with no session cache (an agent's first turn) still share most of their prompt
with each other, the agent's system prompt. The engine encodes such an opening once, as a batch of
one, keeps it (``kv_reuse.PrefixCache``) and places it in those rows' cache the same way, so a first
turn prefills only its question. With ``kv_cache_budget=0`` nothing is reused of either kind.

On CPU a decode step's attention is computed by ``decode_attention`` (two small matmuls) instead of
SDPA's flash kernel, which is built for long queries; prefill and training keep SDPA. Decode steps
append to the cache in place (``decode_cache``) instead of copying it with ``torch.cat``. A bf16 model's
linear layers run, while the engine generates, on copies of their weights laid out once for oneDNN
(``packed_weights``): the same products bit for bit, without re-laying every weight at every step.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Hashable, Iterator

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from longshort.engines import model_thread
from longshort.engines.base import Generation, SamplingParams
from longshort.engines.decode_attention import use_for_decoding
from longshort.engines.decode_cache import GrowingLayer, from_buffers, from_tensors, grow, masks_free_positions
from longshort.engines.kv_reuse import KVEntry, KVStore, PrefixCache, shared_openings
from longshort.engines.hf_cache import cache_kwarg, returned_cache
from longshort.engines.packed_weights import PackedWeights
from longshort.engines.packed_weights import applies as packed_weights_apply
from longshort.registry import ENGINES


@dataclass
class EngineStats:
    """Counters of what the engine did, for tests and throughput reports."""

    batches: int = 0
    requests: int = 0
    joined: int = 0  # requests that joined a running batch as rows left it (of ``requests``)
    prompt_tokens: int = 0
    prefill_tokens: int = 0  # prompt tokens run through the model, openings encoded included (the rest: cached)
    reused_tokens: int = 0  # prompt tokens whose keys and values a cache supplied (a session's or a shared opening)
    opening_tokens: int = 0  # of those, from shared openings
    openings_encoded: int = 0  # tokens run (as batches of one) to encode shared openings; part of prefill_tokens
    duplicate_tokens: int = 0  # prompt tokens of rows whose same prompt another row of the batch ran (a group's samples)
    generated_tokens: int = 0
    forward_passes: int = 0
    forward_rows: int = 0  # rows summed over forward passes: what dropping finished rows saves
    largest_batch: int = 0  # most rows decoded together


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future
    session: Hashable | None = None
    stream: random.Random | None = None  # the request's own random numbers, given when it is admitted
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)


@dataclass
class _Batch:
    """The decoding state of the rows still running; ``positions`` is each row's next position."""

    requests: list[_Request]
    logits: torch.Tensor
    cache: Cache
    mask: torch.Tensor
    positions: torch.Tensor
    sampler: _Sampler


# Tokens of kept keys and values per engine: 1.4 GiB in fp32 for SmolLM2-135M (45 KiB a token), 1.8 GiB in
# bf16 for Qwen2.5-7B (56 KiB). A rollout of 32 tiny-recipe episodes holds at most ~22k per agent.
DEFAULT_KV_CACHE_BUDGET = 32768


class StopStrings:
    """Finds stop strings in generated text without decoding the whole text every step.

    A stop string can end inside a token (``"</think>\\n"`` is one token in many vocabularies) or
    span several tokens, so matching token ids is not enough and the text must be decoded. Decoding
    is only needed when the newest token could complete a stop string, i.e. when its text contains
    the stop string's last character; the set of such token ids is computed once per set of last
    characters. Stop strings ending in whitespace or a non-ASCII character are checked after every
    token, because single-token decoding does not reliably show those characters (leading-space
    markers, partial UTF-8 bytes).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: list[str] | None = None
        self._candidates: dict[frozenset[str], frozenset[int] | None] = {}

    def candidates(self, stops: tuple[str, ...]) -> frozenset[int] | None:
        """Token ids that may complete one of ``stops``; None means every token may."""
        last = frozenset(s[-1] for s in stops)
        if last not in self._candidates:
            if any(c.isspace() or not c.isascii() for c in last):
                self._candidates[last] = None
            else:
                if self._pieces is None:
                    self._pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
                self._candidates[last] = frozenset(
                    i for i, piece in enumerate(self._pieces) if any(c in piece for c in last)
                )
        return self._candidates[last]

    def find(self, token_ids: list[int], stops: tuple[str, ...]) -> str | None:
        """The stop string completed by the last token of ``token_ids``, if any."""
        window = max(len(s.encode()) for s in stops) + 2  # every token holds at least one byte
        tail = self.tokenizer.decode(token_ids[-window:])
        return next((s for s in stops if s in tail), None)


@ENGINES.register("hf")
class HFEngine:
    """Batches concurrent ``generate`` calls onto one Hugging Face causal LM.

    ``max_batch_size`` caps the rows decoded together (more pending requests join as rows leave).
    ``seed`` makes sampling reproducible: the n-th request the engine admits draws from the n-th
    random stream of the seed, whatever else is in its batch. ``kv_cache_budget`` is the most tokens
    of finished turns' keys and values kept for the sessions' next turns (0: no reuse); a model whose
    cache is not plain per-layer keys and values (sliding-window or recurrent layers) never reuses,
    and its waiting requests wait for the batch to end instead of joining it. The model runs in the
    dtype it was loaded in (bf16 or fp32), on ``device`` (default: where its weights are; it is
    moved there otherwise) and in eval mode. Requests come from one event loop at a time (the rollout runner's).
    ``pack_weights`` lets a bf16 model on CPU generate with its linear weights laid out for oneDNN
    (``packed_weights``: same numbers, faster decode steps, the weights' size again in memory until
    ``drop_packed_weights``).
    """

    SETTLE_TICKS = 3  # event-loop ticks without a new request before a batch starts
    JOIN_FRACTION = 4  # waiting requests join when a quarter of the rows are free (benchmarks/refill.py)

    def __init__(self, model, tokenizer, *, max_batch_size: int = 32, device: str | torch.device | None = None,
                 seed: int | None = None, kv_cache_budget: int = DEFAULT_KV_CACHE_BUDGET, pack_weights: bool = True):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)
        use_for_decoding(self.model)
        self._in_place = masks_free_positions(self.model)  # decode steps write the cache in place (decode_cache)
        self._streams = random.Random(seed) if seed is not None else None  # seeds of the requests' own streams
        # waiting requests join once this many rows are free: each join is a prefill and a copy of the cache
        self._join_rows = max(1, max_batch_size // self.JOIN_FRACTION)
        self.eos_ids = _eos_ids(model, tokenizer)
        self.pad_id = next((i for i in (tokenizer.pad_token_id, *sorted(self.eos_ids)) if i is not None), 0)
        self.stats = EngineStats()
        self.kv = KVStore(kv_cache_budget)
        self.openings = PrefixCache()
        self._weights = _weights_version(model)  # cached keys and values are valid for these weights only
        self._packed = PackedWeights(model) if pack_weights and packed_weights_apply(model) else None
        self._reusable: bool | None = None  # whether the model's cache layers can be cut into rows; seen at first use
        self._stops = StopStrings(tokenizer)
        self._pending: list[_Request] = []
        self._pump: asyncio.Task | None = None

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams, *,
                       session: Hashable | None = None) -> Generation:
        """Continue ``prompt_ids``; a ``session`` reuses the keys and values of its previous turn."""
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: an engine continues a prompt, it cannot start from nothing")
        if sampling.max_new_tokens <= 0:
            return Generation([], [], "", "length")
        loop = asyncio.get_running_loop()
        request = _Request(list(prompt_ids), sampling, loop.create_future(), session)
        self._pending.append(request)
        if self._pump is None or self._pump.done() or self._pump.get_loop() is not loop:
            self._pump = loop.create_task(self._serve())
        return await request.future

    def random_state(self) -> tuple | None:
        """Where the seeded request streams stand (None for an unseeded engine), for checkpoints."""
        return self._streams.getstate() if self._streams else None

    def set_random_state(self, state: tuple | None) -> None:
        """Continue the request streams from a ``random_state()`` (resuming a run)."""
        if state is not None:
            self._streams = self._streams or random.Random()
            self._streams.setstate(state)

    def drop_packed_weights(self) -> None:
        """Free the laid-out copies of the weights (``packed_weights``) until the next request: a trainer
        calls this after its rollouts, so they are not held through the update."""
        if self._packed:
            self._packed.drop()

    def end_session(self, session: Hashable) -> None:
        """Free the session's cached keys and values (its episode is over)."""
        self.kv.drop(session)

    async def _serve(self) -> None:
        """Decode what is pending, in arrival order; the one place that hands this engine's model work over.

        Requests that arrive while a batch decodes (e.g. the next turns of episodes whose turn just
        finished) wait for the next call: which requests join a running batch then depends only on
        the order of arrival and on when rows finish, not on thread timing, so seeded runs repeat.
        """
        while self._pending:
            await self._settle()
            requests = [r for r in self._pending if not r.future.done()]
            self._pending.clear()
            if not requests:
                continue
            try:
                await model_thread.steps(self._decode(requests))
            except Exception as error:  # the callers see the failure; the engine keeps serving
                for request in requests:
                    if not request.future.done():
                        request.future.set_exception(error)

    async def _settle(self) -> None:
        """Yield to the event loop until no new request arrives, so every ready episode is batched."""
        quiet, seen = 0, len(self._pending)
        while quiet < self.SETTLE_TICKS and seen < self.max_batch_size:
            await asyncio.sleep(0)
            quiet, seen = (quiet + 1, seen) if len(self._pending) == seen else (0, len(self._pending))

    def _decode(self, requests: list[_Request]) -> Iterator[None]:
        """Decode ``requests`` to the end, at most ``max_batch_size`` rows at a time, one step per ``next``
        (``model_thread``: in the thread that started the rollout). Finished rows are answered and
        dropped; waiting requests take their places once a quarter of the rows is free (``JOIN_FRACTION``).

        Under ``model_thread.run`` two engines' (two agents' models) generators are advanced in turn by
        one thread; under a plain ``asyncio.run`` each drains in a worker thread, and the device lock,
        taken per step rather than per batch, makes them take turns step by step there too instead of
        one waiting for the other's whole batch.
        """
        lock = _device_lock(self.device)
        waiting = deque(requests)
        batch: _Batch | None = None
        packed = self._packed.installed(_weights_version(self.model)) if self._packed else contextlib.nullcontext()
        with packed:
            while waiting or (batch is not None and batch.requests):
                with lock, torch.inference_mode():  # per step: the mode is the thread's, which others' steps share
                    if batch is None or not batch.requests:
                        batch = self._admit(self._next(waiting, self.max_batch_size))
                        if batch is None:
                            continue
                        self.stats.batches += 1
                    elif (waiting and self.max_batch_size - len(batch.requests) >= self._join_rows
                          and _plain_layers(batch.cache)):
                        joining = self._admit(self._next(waiting, self.max_batch_size - len(batch.requests)))
                        if joining is not None:
                            batch = _merged(batch, joining, self._in_place)
                            self.stats.joined += len(joining.requests)
                    self.stats.largest_batch = max(self.stats.largest_batch, len(batch.requests))
                    self._step(batch)
                yield

    def _admit(self, requests: list[_Request]) -> _Batch | None:
        """``requests`` prefilled as a batch; if that fails (a token id outside the vocabulary), they get
        the error and None is returned, so the rows already decoding and the requests after them go on."""
        try:
            return self._prefill(requests)
        except Exception as error:
            for request in requests:
                request.future.get_loop().call_soon_threadsafe(_reject, request.future, error)
            return None

    def _next(self, waiting: deque[_Request], n: int) -> list[_Request]:
        """The next ``n`` waiting requests (fewer if fewer wait), each given its own random stream."""
        taken = [waiting.popleft() for _ in range(min(n, len(waiting)))]
        for request in taken:
            seed = self._streams.getrandbits(64) if self._streams else int(torch.randint(2 ** 62, ()))
            request.stream = random.Random(seed)
        return taken

    def _prefill(self, requests: list[_Request]) -> _Batch:
        """Run the left-padded prompts through the model; positions count real tokens only.

        Rows whose session has cached keys and values run only the rest of their prompt: the batch
        cache holds each row's cached part right-aligned (``past`` columns), the new tokens follow
        left-padded, and the mask covers both, so a row attends to exactly its own tokens. Rows asking for
        the same prompt from the same cached start run once (``_distinct``) and are copied afterwards.
        """
        self.stats.requests += len(requests)
        self.stats.prompt_tokens += sum(len(r.prompt_ids) for r in requests)
        weights = _weights_version(self.model)
        if weights != self._weights:  # the trainer updated the model in place since the caches were made
            self._weights = weights
            self.kv.clear()
            self.openings.clear()
        taken = [self.kv.take(r.session, r.prompt_ids) if r.session is not None and self._reusable is not False
                 else (0, None) for r in requests]
        if self.kv.budget and self._reusable is not False:
            self._take_openings(requests, taken)
        self.stats.reused_tokens += sum(n for n, _ in taken)
        firsts, of_row = _distinct(requests, taken) if self.kv.budget else (list(range(len(requests))), None)
        new_tokens = [len(r.prompt_ids) - n for r, (n, _) in zip(requests, taken)]
        self.stats.prefill_tokens += sum(new_tokens[row] for row in firsts)
        self.stats.duplicate_tokens += sum(new_tokens) - sum(new_tokens[row] for row in firsts)
        requests_run, taken = [requests[row] for row in firsts], [taken[row] for row in firsts]
        reused = [n for n, _ in taken]
        past, width = max(reused), max(len(r.prompt_ids) - n for r, n in zip(requests_run, reused))
        input_ids = torch.full((len(requests_run), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests_run), past + width), dtype=torch.long)
        for row, (request, n) in enumerate(zip(requests_run, reused)):
            new = request.prompt_ids[n:]
            input_ids[row, width - len(new):] = torch.tensor(new)
            mask[row, past - n: past] = 1
            mask[row, past + width - len(new):] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        offset = torch.tensor(reused, device=self.device)[:, None]
        positions = (mask[:, past:].cumsum(-1) - 1).clamp(min=0) + offset
        cache = self._batch_cache(taken, past) if past else None  # None: the model builds its own
        logits, cache = self._forward(input_ids, mask, positions, cache)
        if of_row is not None:  # every row gets its own copy of what its prompt's first row computed
            index = torch.tensor(of_row, device=self.device)
            cache.batch_select_indices(index)
            logits, mask, positions = logits[index], mask[index], positions[index]
        sampler = _Sampler([r.sampling for r in requests], self.device, [r.stream for r in requests])
        return _Batch(list(requests), logits, cache, mask, positions[:, -1:] + 1, sampler)

    def _take_openings(self, requests: list[_Request], taken: list[tuple[int, KVEntry | None]]) -> None:
        """Give the rows without a session's cache the longest shared opening there is: a stored one, or
        one that several of them share, encoded now and stored (``taken`` is updated in place)."""
        fresh = [row for row, (n, _) in enumerate(taken) if n == 0]
        for row in fresh:
            taken[row] = self.openings.take(requests[row].prompt_ids)
        for rows, length in shared_openings({row: requests[row].prompt_ids for row in fresh}):
            if max(taken[row][0] for row in rows) >= length:
                continue
            entry = self._encode(requests[rows[0]].prompt_ids[:length])
            if entry is None:
                return
            self.openings.put(entry)
            for row in rows:
                if taken[row][0] < length:
                    taken[row] = (length, entry)
        self.stats.opening_tokens += sum(taken[row][0] for row in fresh)

    def _encode(self, ids: list[int]) -> KVEntry | None:
        """The keys and values of ``ids`` (a batch of one), or None for a model whose cache is not plain
        per-layer keys and values."""
        self.stats.forward_passes += 1
        self.stats.forward_rows += 1
        self.stats.prefill_tokens += len(ids)
        self.stats.openings_encoded += len(ids)
        out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1)
        cache = returned_cache(out)
        self._reusable = self._reusable if self._reusable is not None else _plain_layers(cache)
        if not self._reusable:
            return None
        return KVEntry(list(ids), [(layer.keys[0], layer.values[0]) for layer in cache.layers])

    def _batch_cache(self, taken: list[tuple[int, KVEntry | None]], past: int) -> Cache:
        """One cache for the batch: row i's first ``n_i`` cached tokens in its last ``n_i`` of ``past`` columns."""
        template = next(entry for n, entry in taken if n)
        layers = []
        for layer, (k0, v0) in enumerate(template.layers):
            keys = k0.new_zeros((len(taken), k0.shape[0], past, k0.shape[-1]))
            values = v0.new_zeros((len(taken), v0.shape[0], past, v0.shape[-1]))
            for row, (n, entry) in enumerate(taken):
                if n:
                    k, v = entry.layers[layer]
                    keys[row, :, past - n:] = k[:, :n]
                    values[row, :, past - n:] = v[:, :n]
            layers.append((keys, values))
        return from_tensors(layers) if self._in_place else DynamicCache(layers)

    def _keep(self, batch: _Batch, row: int, request: _Request) -> None:
        """Store what the model has seen in a finishing row for its session's next turn: the prompt and
        every sampled token but the last (which was never run through the model)."""
        if self._reusable is None:
            self._reusable = _plain_layers(batch.cache)
        if not self._reusable or self.kv.budget == 0:
            return
        seen = batch.mask[row].bool()
        layers = [(layer.keys[row][:, seen], layer.values[row][:, seen]) for layer in batch.cache.layers]
        self.kv.put(request.session, KVEntry(request.prompt_ids + request.token_ids[:-1], layers))

    def _step(self, batch: _Batch) -> None:
        """Sample one token per row, retire finished rows, and run the survivors one position on."""
        tokens, logprobs = batch.sampler.sample(batch.logits)
        keep = []
        for row, (request, token, logprob) in enumerate(zip(batch.requests, tokens.tolist(), logprobs.tolist())):
            generation = self._advance(request, token, logprob)
            if generation is None:
                keep.append(row)
                continue
            if request.session is not None:  # stored before the answer, which may bring the session's next turn
                self._keep(batch, row, request)
            request.future.get_loop().call_soon_threadsafe(_resolve, request.future, generation)
        if not keep:
            batch.requests = []
            return
        if len(keep) < len(batch.requests):
            index = torch.tensor(keep, device=self.device)
            batch.cache.batch_select_indices(index)
            batch.requests, tokens = [batch.requests[row] for row in keep], tokens[index]
            batch.mask, batch.positions = batch.mask[index], batch.positions[index]
            batch.sampler = batch.sampler.select(index)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(keep), 1))], dim=1)
        batch.logits, batch.cache = self._forward(tokens[:, None], batch.mask, batch.positions, batch.cache)
        batch.positions = batch.positions + 1

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Cache | None) -> tuple[torch.Tensor, Cache]:
        """Last-position logits in fp32 (sampling and log-probabilities need the precision), and the cache."""
        self.stats.forward_passes += 1
        self.stats.forward_rows += input_ids.shape[0]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         **cache_kwarg(cache), use_cache=True, logits_to_keep=1)
        cache = returned_cache(out)
        return out.logits[:, -1, :].float(), grow(cache) if self._in_place else cache

    def _advance(self, request: _Request, token: int, logprob: float) -> Generation | None:
        """Append one sampled token; the finished request's Generation, or None while it goes on."""
        request.token_ids.append(token)
        request.logprobs.append(logprob)
        self.stats.generated_tokens += 1
        stops = request.sampling.stop
        reason: str | None = None
        if token in self.eos_ids:
            reason = "eos"
        elif stops:
            candidates = self._stops.candidates(stops)
            if candidates is None or token in candidates:
                reason = self._stops.find(request.token_ids, stops)
        if reason is None and len(request.token_ids) < request.sampling.max_new_tokens:
            return None
        text = self.tokenizer.decode(request.token_ids, skip_special_tokens=True)
        return Generation(request.token_ids, request.logprobs, text, "stop" if reason else "length", reason)


class _Sampler:
    """Per-row temperature / top-k / top-p sampling over a batch of logits.

    The returned log-probabilities are ``log_softmax(logits / T)`` of the chosen tokens, before any
    truncation (the distribution the trainer recomputes); greedy rows (T = 0) report T = 1 values.
    Each row draws one number per step from its own stream, greedy rows included, so a row's tokens
    do not depend on the other rows.
    """

    NUCLEUS_WIDTH = 512  # candidates searched for the top-p nucleus before falling back to a full sort
    _TENSORS = ("greedy", "temperature", "top_k", "top_p")  # per-row settings, cut and joined with the rows

    def __init__(self, params: list[SamplingParams], device: torch.device, streams: list[random.Random]):
        self.streams = streams
        self.greedy = torch.tensor([p.temperature <= 0 for p in params], device=device)
        self.temperature = torch.tensor([p.temperature if p.temperature > 0 else 1.0 for p in params],
                                        device=device)
        self.top_k = torch.tensor([p.top_k for p in params], device=device)
        self.top_p = torch.tensor([p.top_p for p in params], device=device)

    def select(self, index: torch.Tensor) -> _Sampler:
        """The sampler of the rows ``index``, in that order."""
        picked = object.__new__(_Sampler)
        picked.streams = [self.streams[row] for row in index.tolist()]
        for name in self._TENSORS:
            setattr(picked, name, getattr(self, name)[index])
        return picked

    def extended(self, other: _Sampler) -> _Sampler:
        """The sampler of this one's rows followed by ``other``'s."""
        joined = object.__new__(_Sampler)
        joined.streams = self.streams + other.streams
        for name in self._TENSORS:
            setattr(joined, name, torch.cat([getattr(self, name), getattr(other, name)]))
        return joined

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logprobs = torch.log_softmax(logits / self.temperature[:, None], dim=-1)
        u = torch.tensor([[stream.random()] for stream in self.streams], dtype=torch.float64, device=logits.device)
        drawn = (~self.greedy).nonzero().squeeze(1)
        if len(drawn) == len(logprobs):
            tokens = self._draw(logprobs, self.top_k, self.top_p, u)
        else:  # greedy rows have T = 1 here, so the argmax of their logprobs is the argmax of the logits
            tokens = logprobs.argmax(dim=-1)
            if len(drawn):
                tokens[drawn] = self._draw(logprobs[drawn], self.top_k[drawn], self.top_p[drawn], u[drawn])
        return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)

    def _draw(self, logprobs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor
              ) -> torch.Tensor:
        """Sample one token per row from ``logprobs`` after top-k and top-p truncation, by the inverse
        CDF at each row's uniform number ``u``.

        ``torch.multinomial`` draws one number per vocabulary entry on CPU, which costs more than the
        rest of a small model's decode step.
        """
        if bool((top_k > 0).any()) or bool((top_p < 1).any()):
            logprobs = self._truncate(logprobs, top_k, top_p)
        cdf = logprobs.exp().double().cumsum(dim=-1)  # fp64: the sum runs over the whole vocabulary
        # side="right" never lands on a zero-probability token (its cdf step is flat)
        return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.shape[-1] - 1)

    @staticmethod
    def _truncate(logprobs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        """Mask all but each row's top-k tokens and its nucleus (smallest set with mass >= top_p).

        Sorting the whole vocabulary is slow on CPU, so the kept set is found among the
        ``NUCLEUS_WIDTH`` most likely tokens, falling back to a full sort only for a distribution so
        flat that its nucleus is wider. The cut is applied as a per-row logprob threshold (tokens
        tied with the last kept one are kept too).
        """
        vocab = logprobs.shape[-1]
        width = min(vocab, max(_Sampler.NUCLEUS_WIDTH, int(top_k.max())))
        ordered = logprobs.topk(width, dim=-1).values
        if bool(((top_p < 1) & (ordered.exp().sum(dim=-1) < top_p)).any()):
            ordered, width = logprobs.sort(dim=-1, descending=True).values, vocab
        probs = ordered.exp()
        rank = torch.arange(width, device=logprobs.device)
        in_nucleus = (top_p[:, None] >= 1) | (probs.cumsum(dim=-1) - probs < top_p[:, None])  # >= 1: no rounding cut
        kept = in_nucleus & ((top_k[:, None] <= 0) | (rank < top_k[:, None]))
        threshold = ordered.gather(1, (kept.sum(dim=-1, keepdim=True) - 1).clamp_(min=0))
        threshold.masked_fill_(((top_k <= 0) & (top_p >= 1))[:, None], float("-inf"))  # rows without truncation
        return logprobs.masked_fill(logprobs < threshold, float("-inf"))


def _distinct(requests: list[_Request], taken: list[tuple[int, KVEntry | None]]) -> tuple[list[int], list[int] | None]:
    """The first row of each distinct (prompt, cached start) among ``requests``, and for every row the
    index of its one among those (None when all rows are distinct): such rows compute the same thing."""
    firsts: list[int] = []
    of_row: list[int] = []
    seen: dict[tuple, int] = {}
    for row, (request, (n, entry)) in enumerate(zip(requests, taken)):
        key = (n, id(entry) if entry is not None else None, tuple(request.prompt_ids))
        if key not in seen:
            seen[key] = len(firsts)
            firsts.append(row)
        of_row.append(seen[key])
    return firsts, (of_row if len(firsts) < len(requests) else None)


_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def _device_lock(device: torch.device) -> threading.Lock:
    """One lock per device, shared by every engine in the process.

    On a CPU, two engines computing at once would each start a full team of OpenMP threads and
    oversubscribe the cores, which is several times slower than taking turns.
    """
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


def _merged(running: _Batch, joining: _Batch, in_place: bool) -> _Batch:
    """One batch of ``running``'s rows followed by ``joining``'s. Both are left-padded to the wider
    context, the padding masked, so each row keeps its keys, values and positions.

    Columns that none of the running rows uses any more (the rows that needed them have left) are
    dropped: otherwise the batch would only ever widen as requests stream through it, and every
    decode step attends over its whole width. For the in-place cache the merged keys and values are
    written straight into buffers with free positions."""
    lead = int(running.mask.any(dim=0).nonzero()[0])
    width = max(running.mask.shape[1] - lead, joining.mask.shape[1])
    room = width + GrowingLayer.HEADROOM if in_place else None
    layers = [(_stacked(a.keys[..., lead:, :], b.keys, width, dim=-2, room=room),
               _stacked(a.values[..., lead:, :], b.values, width, dim=-2, room=room))
              for a, b in zip(running.cache.layers, joining.cache.layers)]
    return _Batch(running.requests + joining.requests, torch.cat([running.logits, joining.logits]),
                  from_buffers(layers, width) if in_place else DynamicCache(layers),
                  _stacked(running.mask[:, lead:], joining.mask, width, dim=-1),
                  torch.cat([running.positions, joining.positions]), running.sampler.extended(joining.sampler))


def _stacked(first: torch.Tensor, second: torch.Tensor, width: int, dim: int, room: int | None = None) -> torch.Tensor:
    """``first``'s rows then ``second``'s, each ending at position ``width`` along ``dim`` (zeros before it,
    and after it up to ``room`` positions)."""
    shape = list(first.shape)
    shape[0], shape[dim] = first.shape[0] + second.shape[0], room or width
    out = first.new_zeros(shape)
    out[: first.shape[0]].narrow(dim, width - first.shape[dim], first.shape[dim]).copy_(first)
    out[first.shape[0]:].narrow(dim, width - second.shape[dim], second.shape[dim]).copy_(second)
    return out


def _weights_version(model) -> int:
    """A number that changes whenever any parameter is modified in place (optimiser steps, copies of
    master weights, checkpoint loads): torch counts in-place writes per tensor. A kernel that writes
    without counting (torch's fused AdamW) must be followed by ``torch.autograd.graph.increment_version``
    on the parameters, as ``Policy`` does after every step."""
    return sum(p._version for p in model.parameters())


def _plain_layers(cache: Cache) -> bool:
    """Whether a cache is plain per-layer keys and values, which rows can be cut from and placed into."""
    return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)


def _resolve(future: asyncio.Future, generation: Generation) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(generation)


def _reject(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _eos_ids(model, tokenizer) -> frozenset[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config (chat models often add one)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return frozenset(i for i in ids if i is not None)
