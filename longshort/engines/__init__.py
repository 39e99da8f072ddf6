"""Token-in/token-out generation engines behind one contract (see ``base.py``).

``hf`` (embedded, batches concurrent requests on one PyTorch model), ``vllm`` (vLLM's async engine)
and ``remote`` (an OpenAI-compatible server) all return a ``Generation`` whose ``text`` is the
decoding of exactly its ``token_ids`` (special tokens skipped), so agents parse the same text
whichever engine produced it. Importing this package registers the three engines; vLLM itself is
imported only when a ``VLLMEngine`` is built.
"""
from __future__ import annotations

from typing import Any

from longshort.engines.base import Engine, Generation, SamplingParams, SessionEngine
from longshort.engines.hf import EngineStats, HFEngine
from longshort.engines.remote import RemoteEngine
from longshort.engines.vllm import VLLMEngine
from longshort.registry import ENGINES

__all__ = ["Engine", "EngineStats", "Generation", "HFEngine", "RemoteEngine", "SamplingParams", "SessionEngine",
           "VLLMEngine", "build_engine"]


def build_engine(name: str, **kwargs: Any) -> Engine:
    """The registered engine ``name`` built with ``kwargs`` (e.g. ``build_engine("hf", model=m, tokenizer=t)``)."""
    return ENGINES.get(name)(**kwargs)
