"""Serving the frozen partner agent of an OpenRLHF phase: named Ray actors that hold one engine each.

While OpenRLHF trains one agent, the other agent's turns must still be generated, by the partner's
current checkpoint and on its own GPU (the paper's layout gives it GPU 7). OpenRLHF has one policy
and one vLLM pool per run, so the partner lives beside it: ``PartnerServer`` wraps one of our
engines (``vllm`` on a GPU, ``hf`` for small models and CPU tests) in a Ray actor with a
cluster-wide name, and ``RayPartnerEngine`` is the Engine contract over those actors, which is all
the bridge needs (it never knows whether a partner is a Ray actor or a local engine).

The bridge gets or creates the actors by name (``get_if_exists``), from inside OpenRLHF's vLLM
actors, so the partner is started by the training job itself and dies with it: there is no server
for the launcher to start, to wait for, or to forget to stop, and ``ray job submit`` needs nothing
but the job. Ray, vLLM and transformers are imported only when an actor is built or reached.

Scheduling: OpenRLHF's vLLM actors live in a placement group of one GPU bundle each, created with
``placement_group_capture_child_tasks=True``. An actor they create with no strategy of its own is
placed in that same group, which has no GPU left, so the partner would wait forever (reproduced on
CPU with logical GPUs: ``PENDING_CREATION`` with 7 GPUs free). ``start_partner`` therefore
schedules it explicitly outside any group. Its ``__init__`` is async, as OpenRLHF's own vLLM
actor's: vLLM's async engine starts its output loop on the running event loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from longshort.engines.base import Generation, SamplingParams

_VLLM_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                "fp32": "float32", "float32": "float32"}


@dataclass
class PartnerSpec:
    """How one frozen partner agent is served.

    ``name`` is the Ray actor name prefix (replica ``i`` is ``{name}-{i}``); the launcher makes it
    unique per run and phase, so a restarted phase never reaches a stale partner. ``replicas``
    engines of ``num_gpus`` GPUs each serve the same checkpoint; a client spreads its requests over
    them. ``engine_kwargs`` go to vLLM's ``AsyncEngineArgs`` (``engine="vllm"``).
    """

    role: str
    model: str
    name: str
    namespace: str = "longshort"
    replicas: int = 1
    engine: str = "vllm"
    num_gpus: float = 1.0
    dtype: str = "bf16"
    seed: int = 0
    max_batch_size: int = 64
    engine_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class PartnerServer:
    """One partner engine inside a Ray actor: answers any number of concurrent ``generate`` calls.

    The actor is asynchronous, so all calls share one event loop and the engine batches them
    (vLLM's continuous batching, or the HF engine's pending-request batches).
    """

    async def __init__(self, spec: PartnerSpec):
        if spec.engine == "vllm":
            from longshort.engines.vllm import VLLMEngine

            kwargs = {"dtype": _VLLM_DTYPES.get(spec.dtype, "auto"), **spec.engine_kwargs}
            self.engine = VLLMEngine(spec.model, seed=spec.seed, **kwargs)
        elif spec.engine == "hf":
            from longshort.engines.hf import HFEngine
            from longshort.models import load_model

            model, tokenizer = load_model(spec.model, dtype=spec.dtype)
            self.engine = HFEngine(model, tokenizer, max_batch_size=spec.max_batch_size, seed=spec.seed)
        else:
            raise ValueError(f"partner engine must be 'vllm' or 'hf', got {spec.engine!r}")

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        return await self.engine.generate(prompt_ids, sampling)


def start_partner(spec: PartnerSpec) -> list[Any]:
    """Handles of the partner's replicas, created on first use anywhere in the cluster.

    Creation is not awaited: a call to an actor that is still loading its model simply waits.
    The actors are owned by their creator (not detached), so they end with the training job.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    server = ray.remote(PartnerServer)
    outside = PlacementGroupSchedulingStrategy(placement_group=None)  # not the caller's capturing group
    return [server.options(name=f"{spec.name}-{index}", namespace=spec.namespace, get_if_exists=True,
                           num_gpus=spec.num_gpus, scheduling_strategy=outside).remote(spec)
            for index in range(spec.replicas)]


class RayPartnerEngine:
    """The Engine contract over partner actors; each request goes to the replica with the fewest in flight."""

    def __init__(self, handles: Sequence[Any], tokenizer):
        if not handles:
            raise ValueError("a partner needs at least one replica")
        self.handles = list(handles)
        self.tokenizer = tokenizer
        self._in_flight = [0] * len(self.handles)

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        replica = min(range(len(self.handles)), key=self._in_flight.__getitem__)
        self._in_flight[replica] += 1
        try:
            return await self.handles[replica].generate.remote(list(prompt_ids), sampling)
        finally:
            self._in_flight[replica] -= 1


def connect_partner(spec: PartnerSpec) -> RayPartnerEngine:
    """The partner's engine as the bridge uses it: its actors (started if need be) and its tokenizer."""
    from transformers import AutoTokenizer

    return RayPartnerEngine(start_partner(spec), AutoTokenizer.from_pretrained(spec.model))
