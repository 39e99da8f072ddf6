"""What a table run spent, and where: ``timings.json`` while it runs, a "where the time went" table after.

``timings.json`` holds each command's wall seconds, summed over every attempt at it (a command killed
and run again counts both). The breakdown in ``table.md`` splits each training command into its
pipeline stages, from the seconds each stage's ``DONE`` marker records (the attempt that finished it),
and gives the RL stage's step count and median step time from its ``metrics.jsonl``; what remains of
a command's time is model loading, reports and work lost to kills.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Callable

from longshort.config import STAGES
from longshort.paths import write_atomically

TRAIN, ANALYSIS = "train_", "analysis_"


class Timings:
    """``timings.json``: wall seconds per command key, summed over every attempt at it.

    The command in flight is written every ``every`` seconds from a daemon thread, so a kill that no
    handler sees (SIGKILL at a session's end) loses at most that much of the count; the work a resumed
    command redoes after its last save is counted too, since the table did spend it.
    """

    def __init__(self, path: Path, every: float = 60.0):
        self.path, self.every = path, every
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def _write(self, key: str, seconds: float) -> None:
        self.seconds[key] = round(seconds, 1)
        text = json.dumps(self.seconds, indent=1) + "\n"
        write_atomically(self.path, lambda tmp: tmp.write_text(text))

    def clock(self, key: str, work: Callable[[], float]) -> float:
        """Run ``work`` with ``key``'s count running; returns what ``work`` returns."""
        before, began, stop = self.seconds.get(key, 0.0), time.perf_counter(), threading.Event()

        def flush() -> None:
            while not stop.wait(self.every):
                self._write(key, before + time.perf_counter() - began)

        thread = threading.Thread(target=flush, name="timings", daemon=True)
        thread.start()
        try:
            return work()
        finally:
            stop.set()
            thread.join()
            self._write(key, before + time.perf_counter() - began)


def _stage_seconds(run: Path) -> dict[str, float]:
    seconds = {}
    for stage in STAGES:
        marker = run / stage / "DONE"
        if marker.is_file():
            seconds[stage] = float(json.loads(marker.read_text()).get("seconds", 0.0))
    return seconds


def _rl_steps(run: Path) -> str:
    path = run / "rl" / "metrics.jsonl"
    if not path.is_file():
        return ""
    steps = [json.loads(line)["time/step_s"] for line in path.read_text().splitlines()
             if line.strip() and "time/step_s" in line]
    return f"{len(steps)} ({statistics.median(steps):.0f} s)" if steps else ""


def where_time_went(layout) -> list[str]:
    """Markdown lines of the breakdown (none before any command has run)."""
    path = layout.root / "timings.json"
    if not path.is_file():
        return []
    timings: dict[str, float] = json.loads(path.read_text())
    lines = ["## Where the time went", "",
             "| command | wall time (min) | " + " | ".join(STAGES) + " | rest | RL steps (median) |",
             "|---|---:|" + "---:|" * (len(STAGES) + 1) + "---|"]
    for key, seconds in timings.items():
        stages, steps = {}, ""
        if key.startswith(TRAIN):
            run = layout.run(key[len(TRAIN):])
            stages, steps = _stage_seconds(run), _rl_steps(run)
        cells = [f"{stages[stage] / 60:.1f}" if stage in stages else "" for stage in STAGES]
        rest = f"{max(seconds - sum(stages.values()), 0.0) / 60:.1f}" if stages else ""
        lines.append(f"| {key} | {seconds / 60:.1f} | " + " | ".join(cells) + f" | {rest} | {steps} |")
    total = sum(timings.values())
    lines += [f"| **total** | **{total / 60:.1f}** ({total / 3600:.2f} h) |" + " |" * (len(STAGES) + 2), "",
              "Wall time: every attempt at the command, killed ones included (`timings.json`). Stage columns: the "
              "attempt that finished each stage (its `DONE` marker). Rest: model loading, reports and work lost to "
              "kills. RL steps: how many, and the median seconds per step (rollout and update).", ""]
    return lines
