"""Benchmark evaluation: play a Long-Short pair (or one model) on problem sets and report like the paper.

``evaluate_benchmarks(config)`` runs ``eval.benchmarks``; ``evaluate(config, {name: problems})`` and
``evaluate_problems(config, problems, label=...)`` run any problem sets (a training run's held-out
problems). Each writes, under its output folder: ``records/<set>.jsonl`` (one line per episode, the
moment it finishes, so an interrupted run resumes), ``results.json``, ``table.md`` and ``plot.png``.
``python -m longshort.evaluate`` is the command line.
"""
from longshort.evaluation.metrics import SetResult, pass_at_k, summarize
from longshort.evaluation.published import PUBLISHED, PublishedScore, PublishedSystem, published_for
from longshort.evaluation.records import Record, RecordError, RecordFile
from longshort.evaluation.report import markdown_table, plot, write_report
from longshort.evaluation.results import Results
from longshort.evaluation.runner import (
    EvalError, build_eval_engines, default_out_dir, evaluate, evaluate_benchmarks, evaluate_problems,
    evaluation_config, load_benchmarks, system_label,
)

__all__ = [
    "EvalError", "PUBLISHED", "PublishedScore", "PublishedSystem", "Record", "RecordError", "RecordFile",
    "Results", "SetResult", "build_eval_engines", "default_out_dir", "evaluate", "evaluate_benchmarks",
    "evaluate_problems", "evaluation_config", "load_benchmarks", "markdown_table", "pass_at_k", "plot",
    "published_for", "summarize", "system_label", "write_report",
]
