"""Give freed heap memory back to the operating system where a long phase of work ends.

PyTorch's CPU allocator takes tensors from glibc's malloc. Blocks under glibc's mmap threshold (which
rises towards 32 MiB as large blocks are freed) come from per-thread heaps that glibc does not shrink
on its own, and a step frees gigabytes of variously sized buffers twice: the rollout's (keys and
values, the engines' laid-out weights), then the update's (activations, logits, gradients). When the
numbers below were measured the engines decoded in worker threads with heaps of their own, which the
trainer's thread could not reuse; since ``engines.model_thread`` they decode in the trainer's thread.
Measured on the tiny recipe (SmolLM2, both agents trained):

- from the base models, resident size after each RL step grew 4.2 -> 9.1 -> 9.7 -> 9.9 GiB, and a
  12-step run peaked at 17.5 GiB; with ``malloc_trim(0)`` after each step it fell back to 3.4-3.6
  GiB between steps;
- from the SFT checkpoints (longer episodes), 3 steps peaked at 12.8 GiB with a trim after each
  step and at 10.6 GiB with another between the rollout and the update;
- with the engines in the trainer's thread, the whole recipe (a clean clone, 12 RL steps) peaked at
  7.96 GiB with both trims and 8.26 GiB with neither, whose RL stage took 447 s against 491 s (system
  CPU time 112 against 180 s: each trimmed phase paged its memory in again); its SFT stage (both
  agents) took 172 s with a trim after each step and 161 s without (system CPU time 45 against 24
  s), peaking at 5.2 and 5.8 GiB, below the RL stage either way. So the RL trainer no longer trims,
  SFT trims once per agent when it is done, and the reproduction runner between its commands.

Elsewhere (macOS, musl, GPU memory) the trim is a no-op.
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
