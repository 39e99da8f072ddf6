"""Where longshort reads data and keeps caches (each location can be moved by an environment variable),
and how it writes what a kill must not leave half-written."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

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


def holds_weights(folder: Path) -> bool:
    """Whether ``folder`` is a whole Hugging Face save: its ``config.json`` and every weights file it names.

    A stage that failed can leave its output folder empty or half-written (OpenRLHF creates
    ``ckpt.output_dir`` before it trains, and its saves are not atomic), and a later stage that
    trusted the folder would start from nothing.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return False
    for index in folder.glob("*.index.json"):  # sharded: every shard it lists
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def write_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Make ``target`` (a file or a folder) by ``write(tmp)`` on a temporary path beside it, then one rename.

    Resumable stages trust what they find on disk, so a kill mid-write must leave the previous ``target``
    (or none), never half of one: a stale temporary path is cleared first, one that ``write`` fails on is
    removed, and a folder being replaced goes just before the rename (a file is replaced by the rename).
    """
    tmp = target.with_name(f".{target.name}.tmp")
    _remove(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    if target.is_dir():
        shutil.rmtree(target)
    tmp.replace(target)
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
