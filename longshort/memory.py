"""Give freed heap memory back to the operating system between training steps.

PyTorch's CPU allocator takes tensors from glibc's malloc. Blocks under glibc's mmap threshold (which
rises towards 32 MiB as large blocks are freed) come from heaps that glibc does not shrink on its
own, and a training step frees gigabytes of variously sized activations from two threads (the
rollout engine's and the trainer's). Measured on the tiny recipe (SmolLM2, two trained agents): the
resident size after each RL step grew 4.2 -> 9.1 -> 9.7 -> 9.9 GiB and reached 17.5 GiB in a 12-step
run; with ``malloc_trim(0)`` after each step it falls back to 3.4-3.6 GiB and the peak inside a step
stays at 9.9 GiB. Elsewhere (macOS, musl, GPU memory) this is a no-op.
"""
from __future__ import annotations

import ctypes
import functools


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim(0)``); costs milliseconds."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
