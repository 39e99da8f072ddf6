"""Where longshort reads data and keeps caches; each location can be moved by an environment variable."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "LONGSHORT_DATA_DIR"
CACHE_DIR_ENV = "LONGSHORT_CACHE_DIR"


def data_dir() -> Path | None:
    """Local copies of the benchmark sets (``$LONGSHORT_DATA_DIR``); None when it is not set."""
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def packaged_data_dir() -> Path:
    """The evaluation sets shipped inside the package (``longshort/data/shipped``, same layout as a data dir)."""
    return Path(__file__).resolve().parent / "data" / "shipped"


def cache_dir() -> Path:
    """Converted models and other derived artefacts (``$LONGSHORT_CACHE_DIR``, default ~/.cache/longshort)."""
    value = os.environ.get(CACHE_DIR_ENV)
    path = Path(value).expanduser() if value else Path.home() / ".cache" / "longshort"
    path.mkdir(parents=True, exist_ok=True)
    return path
