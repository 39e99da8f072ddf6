"""Progress off a terminal: one plain, untruncated line per update instead of a live bar.

A rich bar redraws one line in place; redirected to a file (``nohup``, a cluster job's log) it leaves
only its last frame, cut at 80 columns. So the SFT, RL and evaluation loops ask ``on_terminal()`` and,
off one, print a line per SFT logging step, RL step and evaluation chunk with the figures the bar
shows, plus the elapsed time and an estimate of the time left.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


def on_terminal() -> bool:
    """Whether stderr (where every bar draws) is a terminal."""
    return sys.stderr.isatty()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class PlainProgress:
    """Lines ``<label> <done>/<total>  <figures>  elapsed m:ss  left m:ss`` on stderr, flushed at once.

    ``done`` counts from ``start`` (a resumed loop's first step), and the time left extrapolates the
    rate of this process's own steps, not of steps a killed run did."""

    label: str
    total: int
    start: int = 0
    began: float = field(default_factory=time.perf_counter)

    def line(self, done: int, figures: str) -> None:
        elapsed = time.perf_counter() - self.began
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        left = _clock((self.total - done) / rate) if rate else "?"
        sys.stderr.write(f"{self.label} {done}/{self.total}  {figures}  elapsed {_clock(elapsed)}  left {left}\n")
        sys.stderr.flush()
