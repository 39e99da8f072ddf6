"""The run report: one self-contained HTML page per run, from the files the run wrote.

``write_report(run_dir)`` writes ``<run_dir>/report.html``: the config and stage times, the summary,
the RL learning curves per agent, the evaluation tables and plots, and an episode browser that
shows each transcript turn by turn, coloured by agent. It reads only what ``train`` and
``evaluate`` already write (``longshort.report.collect``), so any run, old or new, finished or
not, can be reported: ``python -m longshort.report RUN_DIR``.
"""
from __future__ import annotations

from pathlib import Path

from longshort.paths import write_text_atomically
from longshort.report.collect import ReportError, RunData, load_run
from longshort.report.render import render

REPORT_NAME = "report.html"


def write_report(run_dir: str | Path, out: str | Path | None = None, **limits) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``); returns its path.

    ``limits`` (``max_per_group``, ``max_bytes``) tune how many episodes the page embeds
    (``longshort.report.episodes`` states the rule).
    """
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, render(run, **limits))
    return path


def report_after_run(run_dir: str | Path) -> str:
    """Write the report at the end of a ``train`` or ``evaluate`` command; returns the line to print.

    The run's own outputs are already on disk and the report can be written again from them at any
    time, so a failure here is reported in that line instead of failing the run that just finished.
    """
    try:
        return f"report: {write_report(run_dir)}"
    except Exception as err:  # noqa: BLE001 - see the docstring
        return (f"report: not written ({type(err).__name__}: {err}); "
                f"write it with: python -m longshort.report {run_dir}")


__all__ = ["REPORT_NAME", "ReportError", "RunData", "load_run", "render", "report_after_run", "write_report"]
