"""Token-in/token-out generation engines behind one contract (see ``base.py``).

``hf`` (embedded, batches concurrent requests on one PyTorch model), ``vllm`` (vLLM's async engine)
and ``remote`` (an OpenAI-compatible server) all return a ``Generation`` whose ``text`` is the
decoding of exactly its ``token_ids`` (special tokens skipped), so agents parse the same text
whichever engine produced it. Importing this package registers ``remote`` and ``vllm`` (vLLM itself
is imported only when a ``VLLMEngine`` is built); ``hf`` needs torch and transformers, so its module
is imported on first use (``HFEngine``, ``build_engine("hf")``): agents and envs import the engine
contract from here, and a command that only reads a config must not pay seconds for torch.
"""
from __future__ import annotations

import importlib
from typing import Any

from longshort.engines.base import Engine, Generation, SamplingParams, SessionEngine
from longshort.engines.remote import RemoteEngine
from longshort.engines.vllm import VLLMEngine
from longshort.registry import ENGINES

_LAZY = {"HFEngine": "longshort.engines.hf", "EngineStats": "longshort.engines.hf", "hf": "longshort.engines.hf"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "hf" else getattr(module, name)
    raise AttributeError(f"module 'longshort.engines' has no attribute {name!r}")

__all__ = ["Engine", "EngineStats", "Generation", "HFEngine", "RemoteEngine", "SamplingParams", "SessionEngine",
           "VLLMEngine", "build_engine"]


def build_engine(name: str, **kwargs: Any) -> Engine:
    """The registered engine ``name`` built with ``kwargs`` (e.g. ``build_engine("hf", model=m, tokenizer=t)``)."""
    if name == "hf":
        importlib.import_module("longshort.engines.hf")  # registers "hf"
    return ENGINES.get(name)(**kwargs)
