"""The measured rows of a reproduced table, and its ``table.md``, ``table.json`` and ``plot.png``.

Every row's numbers come from what the entry points already wrote: a run's weights from the
pipeline's ``eval/<weights>/`` (held-out columns) or from ``longshort.evaluate``'s output in the
row's folder (benchmark columns), a pruning row from its analysis folder
(``longshort.analysis.redundancy``). A row whose outputs are missing is listed as not measured yet,
never filled in.

A row is read with its per-episode records, so ``table.md`` gives each row's accuracy with a 95%
interval and its difference from the baseline row (or its own ``versus:`` row) **paired on the same
problems** with a 95% interval (``longshort.evaluation.paired``): "within 2 points" is decided by
that interval's low end, never by the point estimate. A row of a run with several seeds shows the
mean over its seeds (its per-item accuracy averaged over them, so the paired interval is that of the
seeds' mean), and the seeds table each seed with its own interval and the SD over seeds. Beside the
main table: accuracy by number of gold steps, and each row's starting weights and training budget.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from longshort.analysis.redundancy import RedundancyScore, pruning_answer_records, pruning_results
from longshort.evaluation.metrics import SetResult, summarize
from longshort.evaluation.paired import MARGIN, records_difference, verdict
from longshort.evaluation.published import PUBLISHED
from longshort.evaluation.records import Record, RecordFile
from longshort.evaluation.report import comparison_table, markdown_table, plot, row_of, row_of_published
from longshort.evaluation.results import Results
from longshort.evaluation.stats import PairedDifference, seed_summary
from longshort.paths import write_text_atomically
from longshort.reproduce.tables import HELDOUT, RowSpec, TableSpec
from longshort.reproduce.timing import where_time_went

REDUNDANT_COLUMN = "removed steps truly redundant"


@dataclass
class Measured:
    """One measured row: its results and records per set (over all its seeds), and per seed."""

    row: RowSpec
    results: Results
    records: dict[str, list[Record]]
    score: RedundancyScore | None = None
    seeds: list[tuple[int, Results, dict[str, list[Record]]]] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)
    budget: dict | None = None

    @property
    def label(self) -> str:
        return self.row.label


def _records(folder: Path, names: list[str]) -> dict[str, list[Record]]:
    return {name: list(RecordFile(folder / "records" / f"{name}.jsonl").load().values())
            for name in names if (folder / "records" / f"{name}.jsonl").is_file()}


def _gold_steps(run_folder: Path) -> dict[str, int]:
    """Item id -> number of gold solution steps, from the run's held-out problems (where recorded)."""
    path = run_folder / "data" / "eval.jsonl"
    if not path.is_file():
        return {}
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {str(r["id"]): len(r["meta"]["steps"]) for r in rows if (r.get("meta") or {}).get("steps")}


def budget(run_folder: Path, weights: str) -> dict | None:
    """Where a run's row started and what it was trained on: starting weights per agent, SFT examples x
    epochs (the examples its cold start actually wrote), and RL steps x episodes when the row is ``rl``."""
    from longshort.config import load_config

    if not (run_folder / "config.yaml").is_file():
        return None
    config = load_config(str(run_folder / "config.yaml"))
    start = {role: spec.model.name_or_path for role, spec in config.agents.items()}
    examples = {}
    for role in config.agents:
        path = run_folder / "sft" / "coldstart" / f"{role}.jsonl"
        if path.is_file():
            examples[role] = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    rl = config.trainer.steps * config.rollout.problems_per_step * config.rollout.group_size if weights == "rl" else 0
    return {"start": start, "sft_examples": examples, "sft_epochs": config.sft.epochs,
            "rl_steps": config.trainer.steps if weights == "rl" else 0, "rl_episodes": rl}


def _combine(per_seed: list[dict[str, list[Record]]]) -> dict[str, list[Record]]:
    """Every seed's records as samples of one system: sample ``j * k + s`` for seed j's sample s, so an
    item's accuracy is its mean over seeds (and their samples)."""
    combined: dict[str, list[Record]] = {}
    for j, sets in enumerate(per_seed):
        for name, records in sets.items():
            k = max(r.sample for r in records) + 1
            combined.setdefault(name, []).extend(dataclasses.replace(r, sample=j * k + r.sample) for r in records)
    return combined


def _run_row(spec: TableSpec, row: RowSpec, layout, names: list[str]) -> Measured | None:
    run = spec.runs[row.run]
    folders = [(seed, layout.run(f"{row.run}_s{seed}")) for seed in run.seeds] or [(None, layout.run(row.run))]
    measured, missing = [], []
    for seed, run_folder in folders:
        folder = run_folder / "eval" / row.weights if spec.heldout else layout.eval(row)
        if not (folder / "results.json").is_file():
            missing.append(seed)
            continue
        results = Results.load(folder)
        results.system = row.label if seed is None else f"{row.label} (seed {seed})"
        measured.append((seed, results, _records(folder, names), run_folder))
    if not measured:
        return None
    first = measured[0][3]
    if len(measured) == 1 and not run.seeds:
        _, results, records, _ = measured[0]
        return Measured(row, results, records, budget=budget(first, row.weights))
    combined = _combine([records for _, _, records, _ in measured])
    steps = _gold_steps(first)
    k = measured[0][1].sets[names[0]].samples if names[0] in measured[0][1].sets else 1
    results = Results(system=f"{row.label}, mean of {len(measured)} seeds", mode=measured[0][1].mode,
                      models=measured[0][1].models, settings=measured[0][1].settings,
                      sets={name: summarize(name, recs, k * len(measured), steps) for name, recs in combined.items()})
    return Measured(row, results, combined, seeds=[(s, r, recs) for s, r, recs, _ in measured],
                    missing_seeds=[s for s in missing if s is not None], budget=budget(first, row.weights))


def measure(spec: TableSpec, row: RowSpec, layout, names: list[str]) -> Measured | None:
    """The row as measured so far, or None when nothing of it has been measured yet."""
    if row.analysis:
        folder = layout.analysis(row.analysis)
        if not (folder / "answers.jsonl").is_file():
            return None
        results, score = pruning_results(folder, row.strategy, row.kappa, row.label, score=row.score)
        records = pruning_answer_records(folder, row.strategy, row.kappa, score=row.score)
        return Measured(row, results, {HELDOUT: records}, score=score)
    if row.run:
        return _run_row(spec, row, layout, names)
    folder = layout.eval(row)
    if not (folder / "results.json").is_file():
        return None
    results = Results.load(folder)
    results.system = row.label
    return Measured(row, results, _records(folder, names))


def set_names(spec: TableSpec) -> list[str]:
    if spec.heldout:
        return [HELDOUT]
    return [name for group in spec.columns for name in group.benchmarks]


# ------------------------------------------------------------------------------------------ tables


def paired(a: Measured, b: Measured, name: str) -> PairedDifference | None:
    if name not in a.records or name not in b.records:
        return None
    return records_difference(a.records[name], b.records[name])


def _ci(result: SetResult) -> str:
    low, high = result.accuracy_ci or (result.accuracy, result.accuracy)
    return f"{100 * result.accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _per_agent(result: SetResult) -> str:
    return " / ".join(f"{role} {tokens:.0f}" for role, tokens in sorted(result.tokens_by_role.items()))


def main_table(rows: list[Measured], by_label: dict[str, Measured], spec: TableSpec, name: str,
               extra: dict[str, dict[str, str]]) -> str:
    """One set: each row's accuracy [95% CI], tokens, format rate, and its paired difference."""
    header = ["System", "Acc. (%) [95% CI]", "Tok.", "Tok. per agent", "Format", "vs",
              "Δ Acc. (points) [paired 95% CI]", "Tok. ratio [95% CI]", "verdict", *extra]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---|---:|---|---:|---:|---|" + "---:|" * len(extra)]
    for m in rows:
        result = m.results.sets.get(name)
        if result is None:
            continue
        versus = by_label.get(m.row.versus or spec.baseline or "")
        diff = paired(m, versus, name) if versus is not None and versus is not m else None
        cells = [m.results.system, _ci(result), f"{result.tokens:.0f}", _per_agent(result),
                 f"{100 * (1 - result.format_failure_rate):.0f}%", versus.label if diff else "",
                 diff.accuracy.points(sign=True) if diff else "",
                 f"{diff.tokens.estimate:.2f} [{diff.tokens.low:.2f}, {diff.tokens.high:.2f}]" if diff and diff.tokens
                 else "", verdict(diff) if diff else "",
                 *(column.get(m.label, "") for column in extra.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(rows: list[Measured], by_label: dict[str, Measured], spec: TableSpec, name: str) -> str:
    """Rows with several seeds: each seed's accuracy with its own interval and paired difference, then
    the mean and SD over seeds."""
    lines = ["| System | seed | Acc. (%) [95% CI] | Tok. | Δ Acc. (points) [paired 95% CI] |", "|---|---:|---:|---:|---:|"]
    for m in rows:
        if not m.seeds:
            continue
        versus = by_label.get(m.row.versus or spec.baseline or "")
        accuracies, tokens = [], []
        for seed, results, records in m.seeds:
            result = results.sets[name]
            single = Measured(m.row, results, records)
            diff = paired(single, versus, name) if versus is not None else None
            accuracies.append(result.accuracy)
            tokens.append(result.tokens)
            lines.append(f"| {m.label} | {seed} | {_ci(result)} | {result.tokens:.0f} | "
                         f"{diff.accuracy.points(sign=True) if diff else ''} |")
        mean, sd = seed_summary(accuracies)
        token_mean, token_sd = seed_summary(tokens)
        missing = f" ({', '.join(map(str, m.missing_seeds))} not measured yet)" if m.missing_seeds else ""
        lines.append(f"| {m.label} | mean ± SD of {len(m.seeds)}{missing} | {100 * mean:.1f} ± {100 * sd:.1f} | "
                     f"{token_mean:.0f} ± {token_sd:.0f} | |")
    return "\n".join(lines) if len(lines) > 2 else ""


def steps_table(rows: list[Measured], name: str) -> str:
    """Accuracy by number of gold solution steps (where the problems record them)."""
    keys = sorted({k for m in rows for k in (m.results.sets[name].by_steps if name in m.results.sets else {})}, key=int)
    if not keys:
        return ""
    counts = next(m.results.sets[name].by_steps for m in rows if name in m.results.sets and m.results.sets[name].by_steps)
    header = ["System", *(f"{k} step{'s' * (k != '1')} ({counts.get(k, {}).get('items', '?')} items)" for k in keys)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(keys)]
    for m in rows:
        by = m.results.sets[name].by_steps if name in m.results.sets else {}
        if by:
            lines.append(f"| {m.results.system} | " + " | ".join(
                f"{100 * by[k]['accuracy']:.1f}" if k in by else "" for k in keys) + " |")
    return "\n".join(lines)


def budget_table(rows: list[Measured], root: Path) -> str:
    """Each trained row's starting weights and training budget."""
    def where(path: str) -> str:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path

    lines = ["| System | starting weights | SFT examples x epochs | RL steps x episodes |", "|---|---|---|---|"]
    for m in rows:
        b = m.budget
        if not b:
            continue
        start = ", ".join(f"{role}: {where(path)}" for role, path in b["start"].items())
        examples = ", ".join(f"{role} {n}" for role, n in b["sft_examples"].items())
        sft = f"{examples} x {b['sft_epochs']}" if examples else "-"
        rl = f"{b['rl_steps']} x {b['rl_episodes']}" if b["rl_steps"] else "-"
        lines.append(f"| {m.label} | {start} | {sft} | {rl} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_table(spec: TableSpec, layout) -> Path:
    """``table.md`` (the tables above, notes, what is missing, where the time went), ``table.json``, ``plot.png``."""
    names = set_names(spec)
    rows: list[Measured] = []
    missing: list[str] = []
    for row in spec.rows:
        m = measure(spec, row, layout, names)
        if m is None:
            missing.append(row.label)
        else:
            rows.append(m)
    by_label = {m.label: m for m in rows}
    scores = {m.label: m.score for m in rows if m.score is not None}
    extra = {REDUNDANT_COLUMN: {label: f"{100 * s.precision:.0f}% of {s.removed}"
                                for label, s in scores.items() if s.precision is not None}} if scores else {}
    parts = [f"# {spec.title}", ""]
    measured = [m.results for m in rows]
    if rows:
        for name in names:
            if len(names) > 1:
                parts += [f"## {name}", ""]
            parts += [main_table(rows, by_label, spec, name, extra), ""]
        if len(names) > 1:
            parts += ["All sets side by side (accuracy ± one standard error):", "",
                      comparison_table(measured, names, spec.baseline), ""]
        for name in names:
            for title, text in (("Seeds", seeds_table(rows, by_label, spec, name)),
                                ("Accuracy (%) by number of gold steps", steps_table(rows, name))):
                if text:
                    parts += [f"### {title}" + (f" ({name})" if len(names) > 1 else ""), "", text, ""]
        budgets = budget_table(rows, layout.root)
        if budgets:
            parts += ["### Starting weights and training budget", "", budgets, ""]
    published = [system for system in PUBLISHED if system.family in spec_families(spec)]
    if published:
        table_rows = [row_of(r) for r in measured] + [row_of_published(p, names) for p in published]
        parts += ["Beside published numbers (copied from their sources, not measured here):", "",
                  markdown_table(table_rows, names), ""]
    notes = [f"Acc. = accuracy in % with its 95% bootstrap interval over problems; Tok. = mean generated tokens "
             "per problem (all agents and turns), split by agent in Tok. per agent; Format = episodes whose every "
             "turn was well-formed. Δ Acc. is the row minus its 'vs' row paired on the same problems, with a 95% "
             "paired bootstrap interval; Tok. ratio is the row's mean tokens over the 'vs' row's (0.20 = 80% fewer). "
             f"The verdict reads the interval: 'within {100 * MARGIN:g} points' means its low end is at or above "
             f"-{100 * MARGIN:g}; 'undecided' means the interval is too wide to say."]
    if any(m.seeds for m in rows):
        notes.append("A row of a run with several seeds is the mean over its seeds (each problem's accuracy averaged "
                     "over them); the seeds table gives each seed and the SD over seeds.")
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
    write_text_atomically(out / "table.md", "\n".join(parts) + "\n")
    write_text_atomically(out / "table.json", json.dumps({
        "title": spec.title, "baseline": spec.baseline, "missing": missing,
        "rows": [_row_json(m, by_label, spec, names) for m in rows]}, indent=1) + "\n")
    if measured:
        plot([row_of(r) for r in measured] + [row_of_published(p, names) for p in published], names, out / "plot.png")
    return out / "table.md"


def _row_json(m: Measured, by_label: dict[str, Measured], spec: TableSpec, names: list[str]) -> dict:
    versus = by_label.get(m.row.versus or spec.baseline or "")
    diffs = {name: d.to_dict() for name in names
             if versus is not None and versus is not m and (d := paired(m, versus, name)) is not None}
    return {**m.results.to_dict(), "versus": versus.label if diffs else None, "paired": diffs,
            **({"redundancy": m.score.to_dict()} if m.score else {}),
            "seeds": [{"seed": s, **r.to_dict()} for s, r, _ in m.seeds], "budget": m.budget}


def spec_families(spec: TableSpec) -> set[str]:
    """The paper's model families the table's runs use (their recipes' names), for published rows."""
    families = {run.recipe for run in spec.runs.values()} | {row.recipe for row in spec.rows if row.recipe}
    return {family for family in ("qwen7b", "llama8b") if family in families}
