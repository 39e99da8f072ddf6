"""The run folder (``output_dir``) of ``python -m longshort.train``: checked, held by one run at a time,
and a full disk reported against it.

- A folder that cannot hold a run (``output_dir`` names a file, or a folder this user cannot write) is
  refused before any stage starts, in one line, instead of a ``FileExistsError`` traceback.
- A live run holds ``<output_dir>/.lock`` with ``flock``: a second run on the same folder would
  interleave checkpoints and logs, so it is refused. The kernel drops the lock when its holder dies,
  SIGKILL included, so a killed run never leaves the folder stuck.
- A write that fails for want of space (``ENOSPC``) ends the run with one line naming ``output_dir``.
  Every file a later stage or a resume reads is written atomically (``longshort.paths``), so what the
  failed write left is a temporary file that the next attempt clears, never a file that is trusted.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from longshort.errors import UserError
from longshort.paths import holding


class RunDirError(UserError, OSError):
    """``output_dir`` cannot be used as asked (a file, not writable, held by another run, out of space)."""


def make_run_dir(run: Path) -> None:
    """Create ``run``; refuse, in one line, a path that names a file or lies where this user cannot write."""
    if run.exists() and not run.is_dir():
        raise RunDirError(f"output_dir={run} is a file, not a folder: pass output_dir=<a new or existing folder>")
    try:
        run.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in run.parents if p.exists() and not p.is_dir()), run)
        raise RunDirError(f"output_dir={run}: {blocker} is a file, so no folder can be made there; pass another "
                          "output_dir") from None
    except PermissionError as err:
        raise RunDirError(f"output_dir={run} cannot be created ({err.strerror}: {err.filename}); pass an "
                          "output_dir you can write to") from None
    if not os.access(run, os.W_OK | os.X_OK):
        raise RunDirError(f"output_dir={run} is not writable by this user; pass an output_dir you can write to "
                          "(or fix its permissions)")


@contextmanager
def hold_run_dir(run: Path) -> Iterator[None]:
    """Create ``run`` and hold it for this process until the block ends; refuses a folder a live run holds."""
    make_run_dir(run)
    with holding(run, lambda: RunDirError(f"output_dir={run} is in use by another running longshort.train; wait "
                                          "for it to finish (or stop it), or pass another output_dir")):
        yield


@contextmanager
def disk_full_reported(run: Path) -> Iterator[None]:
    """Turn a write that found the disk full (``ENOSPC``, or ``EDQUOT`` for a quota) into one line naming ``run``."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(err, UserError):
            raise
        raise RunDirError(f"the disk of output_dir={run} is full ({err.strerror}{f': {err.filename}' if err.filename else ''}); "
                          "free some space and run the same command again: finished stages and the newest "
                          "checkpoint are kept, and no half-written file is trusted") from err
