"""Worker processes that run a function under a hard wall-clock bound, from any thread.

WHY processes: math-verify and sympy bound their own work with ``signal.alarm``, which works only on
the main thread. Rollout workers grade from threads and asyncio executors, and a thread cannot be
stopped from outside; a process can. So each job runs in a worker process, and a worker that overruns
its bound is killed (and replaced on the next call).

WHY a fresh interpreter through ``subprocess`` rather than ``multiprocessing``: fork after torch has
started its threads can deadlock the child, and multiprocessing's spawn and forkserver methods
re-import the parent's ``__main__`` in the child, which re-runs a user's unguarded script (or Ray's
worker entry point). A new interpreter that is given the parent's ``sys.path`` and imports only this
module is spawn without that hazard. Jobs and results travel as pickles over the worker's stdin and
stdout pipes.

Workers start lazily, one more each time a caller finds them all busy, up to ``max_workers``; each is
held by one caller at a time and reused. The bound covers the job itself, not the start of a worker
(an interpreter plus the warm-up import, about a second) nor the wait for a free worker, so size the
pool to the number of threads that grade at once.
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

STARTUP_TIMEOUT_S = 120.0
"""How long a new worker may take to import and warm up before it counts as broken."""

_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[2]); "
    f"from {__name__} import _serve; _serve(sys.argv[1])"
)


class JobTimeout(TimeoutError):
    """The job overran its bound; its worker was killed."""


class WorkerDied(RuntimeError):
    """The worker process exited or failed to start (a crash, the OOM killer, a kill from outside)."""


class JobError(RuntimeError):
    """The job raised inside the worker; the message is the worker-side ``Type: message``."""


class _Worker:
    """One worker process and the two pipe ends that talk to it."""

    def __init__(self, warmup: str) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, warmup, json.dumps(sys.path)],
                stdin=to_child_r, stdout=from_child_w,
            )
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._tx = Connection(to_child_w, readable=False)
        self._rx = Connection(from_child_r, writable=False)
        self._ready = False

    def run(self, target: str, args: tuple, timeout: float) -> Any:
        if not self._ready:
            if not self._talk(lambda: self._rx.poll(STARTUP_TIMEOUT_S)):
                raise WorkerDied(f"worker did not start within {STARTUP_TIMEOUT_S:.0f} s")
            self._talk(self._rx.recv)
            self._ready = True
        self._talk(lambda: self._tx.send((target, args)))
        if not self._talk(lambda: self._rx.poll(timeout)):
            raise JobTimeout(f"{target} overran {timeout:g} s")
        ok, value = self._talk(self._rx.recv)
        if not ok:
            raise JobError(value)
        return value

    def _talk(self, io: Callable[[], Any]) -> Any:
        """One pipe operation; a broken pipe means the worker is gone."""
        try:
            return io()
        except (EOFError, OSError) as exc:
            raise WorkerDied(f"worker exited with code {self.proc.poll()}") from exc

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._tx.close()
        self._rx.close()

    def stop(self, grace_s: float) -> None:
        """Ask the worker to exit (EOF on its stdin); kill it if it is busy past ``grace_s``."""
        self._tx.close()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._rx.close()


class WorkerPool:
    """A growing set of worker processes; ``call`` runs ``module:function`` in one of them, bounded.

    ``warmup`` (``module:function``) runs once in each new worker before it takes jobs, so the first
    job does not pay for heavy imports.
    """

    def __init__(self, max_workers: int, warmup: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self._warmup = warmup
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False
        self._owner = os.getpid()
        atexit.register(self.close)

    def call(self, target: str, args: tuple, timeout: float) -> Any:
        """Run ``target(*args)`` in a worker; raise ``JobTimeout`` after ``timeout`` seconds of work.

        A worker whose job raised stays in service (``JobError``); one that timed out, died or was
        interrupted is killed, since its state is unknown, and the next call starts a fresh one.
        """
        worker = self._acquire()
        try:
            result = worker.run(target, args, timeout)
        except JobError:
            self._release(worker)
            raise
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return result

    @property
    def size(self) -> int:
        """Worker processes alive or starting now."""
        with self._cond:
            return len(self._all)

    def close(self) -> None:
        """Stop every worker; idempotent, and registered with ``atexit``.

        A forked copy of the pool leaves the workers alone: they belong to the process that started them.
        """
        if os.getpid() != self._owner:
            return
        with self._cond:
            self._closed = True
            workers, self._idle, self._all = list(self._all), [], set()
            self._cond.notify_all()
        for worker in workers:
            worker.stop(grace_s=1.0)

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("worker pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._all.discard(worker)
                    worker.kill()
                if len(self._all) < self.max_workers:
                    break
                self._cond.wait()
            worker = _Worker(self._warmup)  # Popen returns at once; the import runs in the child
            self._all.add(worker)
            return worker

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker in self._all:
                self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._cond:
            self._all.discard(worker)
            self._cond.notify()


def _resolve(target: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    if target not in cache:
        module, _, name = target.partition(":")
        cache[target] = getattr(importlib.import_module(module), name)
    return cache[target]


def _exit_when_orphaned(parent: int) -> None:
    """A busy worker never sees its stdin close; if the parent died (SIGKILL), nobody wants the result."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _serve(warmup: str) -> None:
    """Worker main loop: answer ``(target, args)`` jobs until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    out = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the result stream
    inp = Connection(os.dup(0), writable=False)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    cache: dict[str, Callable[..., Any]] = {}
    _resolve(warmup, cache)()
    out.send("ready")
    while True:
        try:
            target, args = inp.recv()
        except EOFError:
            return
        try:
            reply = (True, _resolve(target, cache)(*args))
        except Exception as exc:  # the job's failure is the caller's to judge
            reply = (False, f"{type(exc).__name__}: {exc}")
        out.send(reply)
