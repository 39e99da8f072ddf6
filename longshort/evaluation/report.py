"""The paper-style outputs: a Markdown table (systems x benchmarks x (accuracy, tokens)) and a plot.

Rows are systems: ours (one per ``Results``) and, when the recipe names the paper's models, the
published reference systems, marked "(published)", with blanks wherever the source gives no number.
The plot puts accuracy against mean generated tokens, one labelled point per system and one panel per
benchmark plus the average; a published system with an accuracy but no token count is drawn as a
dashed horizontal line at its accuracy, because it has no x to stand at.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence, TypeVar

from longshort.evaluation.published import PublishedSystem
from longshort.evaluation.results import Results
from longshort.paths import write_text_atomically

SET_TITLES = {"math500": "MATH500", "aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23",
              "gpqa_diamond": "GPQA-D", "gsm8k": "GSM8K", "gsm8k_train": "GSM8K-train", "heldout": "Held-out"}

T = TypeVar("T")
Cell = tuple[float | None, float | None]  # (accuracy in %, mean tokens); None = unknown


def title(name: str) -> str:
    return SET_TITLES.get(name, name)


def ordered_sets(sets: Mapping[str, T]) -> dict[str, T]:
    """The paper's benchmark order first (MATH500, AIME24, AIME25, AMC23, GPQA-D), then the rest as given."""
    known = list(SET_TITLES)
    return dict(sorted(sets.items(), key=lambda item: known.index(item[0]) if item[0] in known else len(known)))


@dataclass(frozen=True)
class Row:
    system: str
    cells: dict[str, Cell]
    published: bool = False
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # per-set remarks for the footnote (samples, ...)
    stderr: dict[str, float] = field(default_factory=dict)  # per-set standard error of the accuracy, in points

    def cell(self, name: str) -> Cell:
        return self.cells.get(name, (None, None))

    def average(self, names: Sequence[str]) -> Cell:
        """Mean over ``names``, per column, only when every set has a value (a partial mean misleads)."""
        cells = [self.cell(name) for name in names]
        return _mean([a for a, _ in cells]), _mean([t for _, t in cells])


def _mean(values: list[float | None]) -> float | None:
    return None if not values or None in values else sum(values) / len(values)  # type: ignore[arg-type]


def row_of(results: Results) -> Row:
    return Row(results.system, {name: (100 * s.accuracy, s.tokens) for name, s in results.sets.items()},
               notes={name: f"k={s.samples}" for name, s in results.sets.items()},
               stderr={name: 100 * s.accuracy_stderr for name, s in results.sets.items()})


def row_of_published(system: PublishedSystem, names: Sequence[str]) -> Row:
    cells = {name: (system.score(name).accuracy, system.score(name).tokens) for name in names}
    return Row(f"{system.name} (published)", cells, published=True, source=system.source)


# ------------------------------------------------------------------------------------------- table


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[Row], names: Sequence[str]) -> str:
    """Rows = systems; columns = each set's (Acc., Tok.) and, for several sets, their average."""
    groups = [title(name) for name in names] + (["Avg."] if len(names) > 1 else [])
    header = "| System | " + " | ".join(f"{g} Acc. | {g} Tok." for g in groups) + " |"
    rule = "|---|" + "---:|" * (2 * len(groups))
    lines = [header, rule]
    for row in rows:
        cells = [row.cell(name) for name in names] + ([row.average(names)] if len(names) > 1 else [])
        lines.append(f"| {row.system} | " + " | ".join(f"{_fmt(a, 1)} | {_fmt(t, 0)}" for a, t in cells) + " |")
    return "\n".join(lines)


def footnotes(rows: Sequence[Row], names: Sequence[str]) -> list[str]:
    notes = ["Acc. = pass@1 in %, averaged over the k samples of each item; Tok. = mean generated tokens per "
             "episode, summed over all agents and turns. Avg. = unweighted mean over the benchmarks, shown only "
             "when every benchmark has a value."]
    for row in rows:
        if row.notes and not row.published:
            notes.append(f"{row.system}: samples per item " + ", ".join(f"{title(n)} {row.notes[n]}" for n in names
                                                                          if n in row.notes) + ".")
    published = [row for row in rows if row.published]
    if published:
        notes.append("Published rows are copied from their sources, not measured here, and use their own protocols "
                     "(DeepSeek-R1: pass@1 from 64 samples at temperature 0.6, up to 32,768 tokens). A blank "
                     "published cell means the source reports no such number or it could not be retrieved; "
                     "nothing is filled in by guess.")
        notes += [f"{row.system}: {row.source}." for row in published]
    return notes


# -------------------------------------------------------------------------------------------- plot


INLINE_LABELS = 4  # systems whose points get a text label beside them; beyond that only the legend names them
MARKERS = ("o", "s", "^", "D", "v", "P")  # a new shape each time the colour cycle starts over


def point_styles(count: int, colours: Sequence[str]) -> list[tuple[str, str]]:
    """(colour, marker) of each of ``count`` systems, all different while colours x markers last."""
    return [(colours[i % len(colours)], MARKERS[(i // len(colours)) % len(MARKERS)]) for i in range(count)]


def plot(rows: Sequence[Row], names: Sequence[str], path: str | Path) -> Path:
    """Accuracy vs mean tokens, one panel per set (+ the average), one labelled point per system."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers, and no GUI backend import cost
    import matplotlib.pyplot as plt

    panels = [(title(name), [row.cell(name) for row in rows], [row.stderr.get(name) for row in rows]) for name in names]
    if len(names) > 1:
        panels.append(("Average", [row.average(names) for row in rows], [None] * len(rows)))
    columns = min(3, len(panels))
    figure, axes = plt.subplots(math.ceil(len(panels) / columns), columns, squeeze=False,
                                figsize=(4.4 * columns, 3.6 * math.ceil(len(panels) / columns)))
    styles = point_styles(len(rows), plt.rcParams["axes.prop_cycle"].by_key()["color"])
    legend: dict[str, object] = {}
    for ax, (panel, cells, errors) in zip(axes.flat, panels):
        top = max([a for a, _ in cells if a is not None] + [0.0])
        right = max([t for a, t in cells if a is not None and t is not None] + [0.0])
        for index, (row, (accuracy, tokens), error) in enumerate(zip(rows, cells, errors)):
            colour, marker = styles[index]
            if accuracy is None:
                continue
            if tokens is None:
                ax.axhline(accuracy, color=colour, linestyle="--", linewidth=1, label=row.system)
                ax.annotate(f"{row.system}: {accuracy:.1f} (tokens not reported)", (0.02, accuracy),
                            xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(0, 3),
                            fontsize=7, color=colour)
                continue
            ax.scatter([tokens], [accuracy], color=colour, marker="*" if row.published else marker, s=60,
                       label=row.system, zorder=3, clip_on=False)  # a point at 0% stays whole
            if error:  # one standard error of the accuracy over items
                ax.errorbar([tokens], [accuracy], yerr=[error], color=colour, capsize=3, linewidth=1, zorder=2)
            if len(rows) <= INLINE_LABELS:  # more labels than that overlap; the legend names the points
                ax.annotate(f"{row.system}\n{accuracy:.1f}%, {tokens:.0f} tok", (tokens, accuracy), fontsize=7,
                            textcoords="offset points", xytext=(5, 4), color=colour)
        ax.set_title(panel)
        ax.set_xlabel("mean generated tokens per episode")
        ax.set_ylabel("accuracy (%)")
        top += max([e for e in errors if e] + [0.0])
        ax.set_ylim(0, min(100.0, top * 1.25 + 5))
        ax.set_xlim(0, right * (1.6 if len(rows) <= INLINE_LABELS else 1.15) if right > 0 else 1.0)  # room for labels
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        legend.update(zip(labels, handles))  # one entry per system across panels
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.tight_layout()
    if legend:  # beside the panels, one system a line; bbox_inches="tight" widens the image to hold it
        figure.legend(list(legend.values()), list(legend), loc="center left", bbox_to_anchor=(1.0, 0.5),
                      fontsize=8, frameon=False)
    path = Path(path)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


# ------------------------------------------------------------------------------------- comparison


def comparison_table(systems: Sequence[Results], names: Sequence[str], baseline: str | None = None,
                     extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Rows = systems: per set the accuracy ± its standard error and mean tokens, then tokens per agent,
    the change against the ``baseline`` system (accuracy in points, tokens in %; on the average over
    ``names``) and ``extra`` columns (column -> system -> text)."""
    extra = extra or {}
    base = next((r for r in systems if r.system == baseline), None)
    groups = [title(name) for name in names]
    header = ["System", *[f"{g} {part}" for g in groups for part in ("Acc. (%)", "Tok.")], "Tok. per agent"]
    if base is not None:
        header += [f"Δ Acc. vs {baseline}", "Δ Tok."]
    header += list(extra)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]

    def mean(results: Results, key) -> float | None:
        values = [key(results.sets[name]) for name in names if name in results.sets]
        return sum(values) / len(values) if len(values) == len(names) else None

    for results in systems:
        cells = [results.system]
        for name in names:
            s = results.sets.get(name)
            cells += [f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_stderr:.1f}", f"{s.tokens:.0f}"] if s else ["", ""]
        roles = sorted({role for s in results.sets.values() for role in s.tokens_by_role})
        cells.append(" / ".join(f"{role} {mean(results, lambda s, r=role: s.tokens_by_role.get(r, 0.0)):.0f}"
                                for role in roles) if mean(results, lambda s: 0.0) is not None else "")
        if base is not None:
            acc, tok = mean(results, lambda s: s.accuracy), mean(results, lambda s: s.tokens)
            acc0, tok0 = mean(base, lambda s: s.accuracy), mean(base, lambda s: s.tokens)
            known = None not in (acc, tok, acc0, tok0) and results is not base
            cells += [f"{100 * (acc - acc0):+.1f}" if known else "",
                      f"{100 * (tok / tok0 - 1):+.0f}%" if known and tok0 else ""]
        cells += [column.get(results.system, "") for column in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- details


def details_table(results: Results) -> str:
    """Everything behind one system's row: pass@k, tokens per agent, turns, how episodes ended."""
    roles = sorted({role for s in results.sets.values() for role in s.tokens_by_role})
    header = ["Set", "Items x k", "pass@1", "pass@k", "Tok.", *(f"Tok. {r}" for r in roles), "Turns", "Format fail",
              "Outcomes", "Verdicts", "Broken"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 4) + "---|---|---:|"]
    for name, s in results.sets.items():
        k = max(s.pass_at)
        cells = [title(name), f"{s.items} x {s.samples}", f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_stderr:.1f}",
                 f"{100 * s.pass_at[k]:.1f} (k={k})", f"{s.tokens:.0f}",
                 *(f"{s.tokens_by_role.get(r, 0):.0f}" for r in roles), f"{s.turns:.2f}",
                 f"{100 * s.format_failure_rate:.1f}%", ", ".join(f"{reason} {n}" for reason, n in s.outcomes.items()),
                 ", ".join(f"{reason} {n}" for reason, n in s.verdicts.items()), str(len(s.broken))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out_dir: str | Path, systems: Sequence[Results], published: Sequence[PublishedSystem] = ()) -> Path:
    """``table.md`` (main table, footnotes, per-system details) and ``plot.png`` in ``out_dir``.

    Columns are the sets of the first system (the one just evaluated); others are shown on those.
    """
    out_dir = Path(out_dir)
    names = list(systems[0].sets)
    rows = [row_of(results) for results in systems] + [row_of_published(p, names) for p in published]
    plot(rows, names, out_dir / "plot.png")
    parts = [f"# Evaluation: {systems[0].system}", "", markdown_table(rows, names), ""]
    parts += [f"{i}. {note}" for i, note in enumerate(footnotes(rows, names), start=1)]
    for results in systems:
        settings = ", ".join(f"{key} {value}" for key, value in results.settings.items())
        models = ", ".join(f"{role}: {model}" for role, model in results.models.items())
        parts += ["", f"## {results.system}", "", f"Models: {models}. Settings: {settings}.", "",
                  details_table(results)]
    path = out_dir / "table.md"
    write_text_atomically(path, "\n".join(parts) + "\n")
    return path
