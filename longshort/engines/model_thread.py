"""The engines' forward passes run in the thread that started the rollout, not in worker threads.

Why: on a CPU, torch runs an operator's parallel work on an OpenMP team that belongs to the calling
thread. Once a second thread has run torch work (an engine decoding in a worker thread, besides the
main thread that loaded the models and trains them), two teams are alive, more OpenMP threads than
cores on a small machine, and libgomp then stops letting idle team members spin between parallel
regions: they sleep, and each of a decode step's ~1,200 small operators waits for a wake-up. On the
2-core machine a decode step of SmolLM2 (batch 32, context 128) took 43 ms in the main thread, and
65-67 ms in a worker thread or in the main thread while such a worker thread was alive; a rollout of
8 prompts x 4 samples took 4.42 s with the engine decoding in a worker thread and 3.10 s this way
(``benchmarks/model_thread.py``).

So ``run(main)`` is ``asyncio.run(main)`` with the event loop (the episodes' Python: envs, agents,
grading) in a helper thread, while the calling thread does the engines' model work: an engine hands
its decoding over as a generator of steps (``steps``), and the calling thread advances the live ones
one step each in turn, so two agents' batches still interleave step by step. The rollout runner, the
evaluation and the analysis tools use it. Under a plain ``asyncio.run`` the engines decode in a
worker thread instead (the same results, more slowly on CPU).
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Coroutine, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

_SERVER: ContextVar["_Server | None"] = ContextVar("longshort_model_thread", default=None)
_STOP = object()
CANCEL_WAIT_S = 30.0  # how long an interrupted ``run`` waits for the episodes' loop to wind down


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, with the engines' forward passes made in the calling thread.

    An exception of ``main`` is raised here; an interruption of the calling thread (Ctrl-C) cancels
    ``main`` and is raised again once its loop has stopped.
    """
    server = _Server()
    outcome: dict[str, Any] = {}

    def episodes() -> None:
        try:
            outcome["result"] = asyncio.run(server.host(main))
        except BaseException as error:  # noqa: BLE001 -- handed to the calling thread as is
            outcome["error"] = error
        finally:
            server.stop()

    thread = threading.Thread(target=episodes, name="longshort-episodes", daemon=True)
    thread.start()
    try:
        server.serve()
    except BaseException:
        server.cancel()
        thread.join(CANCEL_WAIT_S)
        raise
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def steps(job: Iterator[None]) -> None:
    """Run ``job`` to its end, one ``next`` per unit of model work (a prefill, a decode step): in the
    thread serving ``run`` when the caller runs under one, otherwise in a worker thread."""
    server = _SERVER.get()
    if server is None:
        await asyncio.to_thread(_drain, job)
    else:
        await server.submit(job)


def _drain(job: Iterator[None]) -> None:
    for _ in job:
        pass


class _Server:
    """The jobs handed over by the event loop's thread, advanced by the thread that called ``run``."""

    def __init__(self):
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    async def host(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` with this server as the one its tasks hand their jobs to."""
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        _SERVER.set(self)
        return await main

    def submit(self, job: Iterator[None]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._inbox.put((job, future))
        return future

    def stop(self) -> None:
        self._inbox.put(_STOP)

    def cancel(self) -> None:
        """Cancel ``main`` (its loop then ends, and with it the episodes' thread)."""
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def serve(self) -> None:
        """Advance every live job one step in turn until the loop stops; wait when none is live."""
        live: deque[tuple[Iterator[None], asyncio.Future]] = deque()
        try:
            while True:
                item = self._inbox.get() if not live else self._next_or_none()
                while item is not None:
                    if item is _STOP:
                        return
                    live.append(item)
                    item = self._next_or_none()
                for _ in range(len(live)):
                    job, future = live.popleft()
                    if future.cancelled():  # its task was cancelled: nobody waits for the rest
                        job.close()
                        continue
                    try:
                        next(job)
                    except StopIteration:
                        self._settle(future, None)
                    except Exception as error:
                        self._settle(future, error)
                    else:
                        live.append((job, future))
        finally:
            for job, _ in live:  # left unfinished (an interruption, or tasks abandoned): run their cleanup
                job.close()

    def _next_or_none(self):
        try:
            return self._inbox.get_nowait()
        except queue.Empty:
            return None

    def _settle(self, future: asyncio.Future, error: Exception | None) -> None:
        def settle() -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass
