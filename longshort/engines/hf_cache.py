"""One spelling of the KV-cache argument for every transformers version we support.

transformers 5.24 renamed ``past_key_values`` to ``cache`` (in the forward call and on its output) and
warns on every call with the old name; the ``[openrlhf]`` extra pins 5.15 (OpenRLHF 0.11.2's pin), which
knows only the old name. The engine, SFT and the RL update pass and read the cache through these two
helpers so the core runs on both.
"""
from __future__ import annotations

from typing import Any

import transformers
from packaging.version import Version

RENAMED = Version(transformers.__version__).release >= (5, 24)


def cache_kwarg(cache: Any) -> dict[str, Any]:
    """``{"cache": cache}`` from transformers 5.24 on, ``{"past_key_values": cache}`` before."""
    return {"cache": cache} if RENAMED else {"past_key_values": cache}


def returned_cache(output: Any) -> Any:
    """The cache a forward call returned, under either name."""
    return output.cache if RENAMED else output.past_key_values
