"""Where longshort reads data and keeps caches (each location can be moved by an environment variable),
and how it writes what a kill must not leave half-written."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from longshort.errors import UserError

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


class NotUTF8Error(UserError, ValueError):
    """A text file the user gave (a recipe, a table spec, a data file) with a byte that is not UTF-8."""


def not_utf8_message(path: Path, line: int, raw: bytes, err: UnicodeDecodeError) -> str:
    """``path:line: byte 0x.. at column c is not UTF-8`` and the fix; ``raw`` is the line's bytes."""
    column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
    return (f"{path}:{line}: byte 0x{raw[err.start]:02x} at column {column} is not UTF-8; save the file as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)")


def read_user_text(path: Path) -> str:
    """A user's text file as UTF-8 (a leading byte-order mark dropped); a bad byte names its line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise NotUTF8Error(not_utf8_message(path, raw.count(b"\n", 0, err.start) + 1, raw, err)) from None


def write_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Make ``target`` (a file or a folder) by ``write(tmp)`` on a temporary path beside it, then one rename.

    Resumable stages trust what they find on disk, so a kill mid-write must leave the previous ``target``
    (or none), never half of one: a stale temporary path is cleared first, one that ``write`` fails on is
    removed, and a folder being replaced goes just before the rename (a file is replaced by the rename).
    What was written is fsynced before the rename and the folder after it, so a power cut cannot leave
    the new name pointing at data that never reached the disk.
    """
    tmp = target.with_name(f".{target.name}.tmp")
    _remove(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
        _fsync_tree(tmp)
        fault_point(f"rename {target}")
    except BaseException:
        _remove(tmp)
        raise
    if target.is_dir():
        shutil.rmtree(target)
    tmp.replace(target)
    _fsync_dir(target.parent)
    return target


def write_text_atomically(target: str | Path, text: str) -> Path:
    """``target`` holds ``text`` (UTF-8) or what it held before, never part of it (``write_atomically``)."""
    return write_atomically(Path(target), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def append_line(target: str | Path, line: str) -> None:
    """Append one line (``line`` without its newline) and fsync it.

    Appending is not atomic: a kill mid-write leaves a torn last line without its newline. Every reader
    of an appended log drops such a line (``longshort.jsonl.complete_lines``), and the writer resumes
    from the last complete one, so a torn line is never trusted.
    """
    data = (line + "\n").encode("utf-8")
    with open(target, "ab") as handle:
        if _next_write_point_kills(f"append {target}"):
            handle.write(data[: len(data) // 2])  # what a kill in the middle of the write leaves
            handle.flush()
        fault_point(f"append {target}")
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# Fault injection (tests/test_kill_anywhere.py): with $LONGSHORT_KILL_AT_WRITE=N the process SIGKILLs
# itself at its N-th write point (just before an atomic rename, or halfway through an appended line);
# with N:TEXT, at the N-th write point whose label ("rename <path>", "append <path>") contains TEXT. So a
# test can stop a run exactly inside the writes a resume depends on. Unset, a write point costs one
# environment lookup.
KILL_AT_WRITE_ENV = "LONGSHORT_KILL_AT_WRITE"
_write_points = 0


def _kill_target() -> tuple[int, str] | None:
    value = os.environ.get(KILL_AT_WRITE_ENV)
    if not value:
        return None
    count, _, text = value.partition(":")
    return int(count), text


def _next_write_point_kills(label: str) -> bool:
    target = _kill_target()
    return target is not None and target[1] in label and _write_points + 1 == target[0]


def fault_point(label: str) -> None:
    """Count one write point; the one ``$LONGSHORT_KILL_AT_WRITE`` names says which on stderr and SIGKILLs."""
    global _write_points
    target = _kill_target()
    if target is None or target[1] not in label:
        return
    kills = _next_write_point_kills(label)
    _write_points += 1
    if kills:
        sys.stderr.write(f"fault injection: SIGKILL at write point {_write_points} ({label})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder (what ``save_pretrained`` wrote)."""
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync_file(Path(folder) / name)
            _fsync_dir(Path(folder))
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


LOCK_FILE = ".lock"


@contextmanager
def holding(folder: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold ``folder/.lock`` for this process until the block ends; raise ``busy()`` when a live process
    holds it already. ``flock`` is released by the kernel when its holder dies, even by SIGKILL, so a
    killed run never leaves the folder stuck. ``folder`` must exist."""
    with (Path(folder) / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        yield
