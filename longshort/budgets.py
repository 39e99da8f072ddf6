"""Token budgets checked against the models' context before a run starts.

A turn budget (``agents.<role>.sampling.max_new_tokens``, ``eval.max_new_tokens``) at or beyond the
model's context can never be spent: generation would run out of positions long before it, after the
data and SFT stages had already taken their time. The context is read from the model's
``config.json`` (``max_position_embeddings``) wherever it already is on disk (a model folder, the
converted copy of an alias, the Hugging Face cache) without importing torch; a model whose config is
not on disk yet is checked when it loads instead of here.
"""
from __future__ import annotations

import json
from pathlib import Path

from longshort import paths
from longshort.config import Config, ConfigError

CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def model_context(name_or_path: str) -> tuple[int, Path] | None:
    """The context length of a model and the config file it came from; None when no config is on disk."""
    for candidate in (Path(name_or_path).expanduser() / "config.json",
                      paths.cache_dir() / "models" / name_or_path / "config.json", _hub_cached(name_or_path)):
        if candidate is not None and candidate.is_file():
            try:
                settings = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None  # an unreadable config is the loader's to report, with its own message
            for key in CONTEXT_KEYS:
                if isinstance(settings.get(key), int):
                    return settings[key], candidate
            return None
    return None


def _hub_cached(name_or_path: str) -> Path | None:
    if name_or_path.count("/") != 1 or Path(name_or_path).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(name_or_path, "config.json")
    return Path(found) if isinstance(found, str) else None


def check_budgets(config: Config) -> None:
    """Raise ``ConfigError`` naming the key when a turn budget does not fit its model's context."""
    eval_budget = config.eval.max_new_tokens * (config.eval.max_turns if config.eval.mode == "single" else 1)
    eval_key = "eval.max_new_tokens" + (" x eval.max_turns" if config.eval.mode == "single" else "")
    for role, spec in config.agents.items():
        context = model_context(spec.model.name_or_path)
        if context is None:
            continue
        length, source = context
        budgets = [(f"agents.{role}.sampling.max_new_tokens", spec.sampling.max_new_tokens)]
        if "eval" in config.stages:
            budgets.append((eval_key, eval_budget))
        for key, budget in budgets:
            if budget >= length:
                raise ConfigError(f"{key}={budget} does not fit the context of agents.{role}.model "
                                  f"({length} tokens, {source}): set it below {length}, leaving room for the prompt")
