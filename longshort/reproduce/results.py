"""The measured rows of a reproduced table, and its ``table.md``, ``table.json`` and ``plot.png``.

Every row's numbers come from what the entry points already wrote: a run's weights from the
pipeline's ``eval/<weights>/results.json`` (held-out columns) or from ``longshort.evaluate``'s
``results.json`` in the row's folder (benchmark columns), a pruning row from its analysis folder
(``longshort.analysis.redundancy``). A row whose outputs are missing is listed as not measured yet,
never filled in. The table and plot are drawn by the evaluation package's report code.
"""
from __future__ import annotations

import json
from pathlib import Path

from longshort.analysis.redundancy import RedundancyScore, pruning_results
from longshort.evaluation.published import PUBLISHED
from longshort.evaluation.report import comparison_table, markdown_table, plot, row_of, row_of_published
from longshort.evaluation.results import Results
from longshort.reproduce.tables import HELDOUT, RowSpec, TableSpec
from longshort.reproduce.timing import where_time_went

REDUNDANT_COLUMN = "removed steps truly redundant"


def row_result(spec: TableSpec, row: RowSpec, layout) -> tuple[Results | None, RedundancyScore | None]:
    """The row's Results (labelled with the row's label), or None when it has not been measured yet."""
    if row.analysis:
        folder = layout.analysis(row.analysis)
        if not (folder / "answers.jsonl").is_file():
            return None, None
        return pruning_results(folder, row.strategy, row.kappa, row.label, score=row.score)
    folder = layout.run(row.run) / "eval" / row.weights if spec.heldout else layout.eval(row)
    if not (folder / "results.json").is_file():
        return None, None
    results = Results.load(folder)
    results.system = row.label
    return results, None


def set_names(spec: TableSpec) -> list[str]:
    if spec.heldout:
        return [HELDOUT]
    return [name for group in spec.columns for name in group.benchmarks]


def write_table(spec: TableSpec, layout) -> Path:
    """``table.md`` (comparison table, notes, what is missing, where the time went), ``table.json`` and
    ``plot.png``."""
    names = set_names(spec)
    measured: list[Results] = []
    scores: dict[str, RedundancyScore] = {}
    missing: list[str] = []
    for row in spec.rows:
        results, score = row_result(spec, row, layout)
        if results is None:
            missing.append(row.label)
            continue
        measured.append(results)
        if score is not None:
            scores[row.label] = score
    extra = {REDUNDANT_COLUMN: {label: f"{100 * s.precision:.0f}% of {s.removed}"
                                for label, s in scores.items() if s.precision is not None}} if scores else {}
    parts = [f"# {spec.title}", ""]
    if measured:
        parts += [comparison_table(measured, names, spec.baseline, extra), ""]
    published = [system for system in PUBLISHED if system.family in spec_families(spec)]
    if published:
        rows = [row_of(r) for r in measured] + [row_of_published(p, names) for p in published]
        parts += ["Beside published numbers (copied from their sources, not measured here):", "",
                  markdown_table(rows, names), ""]
    notes = ["Acc. = accuracy in % ± one standard error over problems; Tok. = mean generated tokens per problem "
             "(all agents and turns); Tok. per agent splits them by agent role; Δ columns compare with the "
             f"baseline row ({spec.baseline})." if spec.baseline else
             "Acc. = accuracy in % ± one standard error over problems; Tok. = mean generated tokens per problem."]
    if scores:
        notes.append("Pruning rows: the model's own chains with the chosen steps replaced by [SKIP], then the model "
                     "answers; Tok. = thinking tokens left (each [SKIP] one token). "
                     f"'{REDUNDANT_COLUMN}': share of the removed steps that were redundant (restating, rechecking, "
                     "detours, summaries, hesitation), labelled by longshort.data.longchains.label_step.")
    notes += spec.notes
    if missing:
        notes.append("Not measured yet: " + ", ".join(missing) + ".")
    parts += [f"{i}. {note}" for i, note in enumerate(notes, start=1)]
    parts += ["", *where_time_went(layout)]
    out = layout.root
    (out / "table.md").write_text("\n".join(parts) + "\n")
    (out / "table.json").write_text(json.dumps({
        "title": spec.title, "baseline": spec.baseline, "missing": missing,
        "rows": [{**r.to_dict(), **({"redundancy": scores[r.system].to_dict()} if r.system in scores else {})}
                 for r in measured]}, indent=1) + "\n")
    if measured:
        plot([row_of(r) for r in measured] + [row_of_published(p, names) for p in published], names, out / "plot.png")
    return out / "table.md"


def spec_families(spec: TableSpec) -> set[str]:
    """The paper's model families the table's runs use (their recipes' names), for published rows."""
    families = {run.recipe for run in spec.runs.values()} | {row.recipe for row in spec.rows if row.recipe}
    return {family for family in ("qwen7b", "llama8b") if family in families}
