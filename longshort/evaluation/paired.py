"""Paired comparison of two evaluations on the same problems: which system is better, and by how much.

Reads the per-episode records of two evaluation folders (``<out>/records/<set>.jsonl``), pairs them
by item id per set and reports A - B with a 95% interval (``longshort.evaluation.stats``). This is
how ``python -m longshort.evaluate ... baseline=DIR`` compares the weights it just evaluated with
an earlier evaluation, how ``summary.md`` compares a run's SFT and RL weights, and how the
reproduce tables compare every row with their baseline.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from longshort.errors import UserError
from longshort.evaluation.metrics import per_item
from longshort.evaluation.records import Record, RecordFile
from longshort.evaluation.stats import PairedDifference, paired_difference
from longshort.paths import write_text_atomically

MARGIN = 0.02  # "within 2 points": the paired interval's low end at or above -2 points


class PairedError(UserError, ValueError):
    """Two evaluations that cannot be paired; the message says what to evaluate."""


def set_records(out_dir: str | Path, name: str):
    path = Path(out_dir) / "records" / f"{name}.jsonl"
    if not path.is_file():
        raise PairedError(f"{path} is missing: evaluate that system on set '{name}' first (its records are paired)")
    return list(RecordFile(path).load().values())


def records_difference(a: list[Record], b: list[Record]) -> PairedDifference | None:
    """A - B on the items both sets of records hold (None when they share none); McNemar when every
    item has one sample on both sides."""
    (a_acc, a_tok), (b_acc, b_tok) = per_item(a), per_item(b)
    if not set(a_acc) & set(b_acc):
        return None
    binary = all(r.sample == 0 for r in (*a, *b))  # records are keyed by (item, sample): only sample 0 means k = 1
    return paired_difference(a_acc, b_acc, a_tokens=a_tok, b_tokens=b_tok, binary=binary)


def compare_sets(a_dir: str | Path, b_dir: str | Path, names: list[str] | None = None) -> dict[str, PairedDifference]:
    """A - B for every set both folders evaluated (or the ``names`` given)."""
    sets = names or sorted({p.stem for p in (Path(a_dir) / "records").glob("*.jsonl")}
                           & {p.stem for p in (Path(b_dir) / "records").glob("*.jsonl")})
    if not sets:
        raise PairedError(f"{a_dir} and {b_dir} share no evaluated set: evaluate both on the same problems")
    out = {}
    for name in sets:
        diff = records_difference(set_records(a_dir, name), set_records(b_dir, name))
        if diff is None:
            raise PairedError(f"{a_dir} and {b_dir} share no item of set '{name}': evaluate both on the same problems")
        out[name] = diff
    return out


def verdict(diff: PairedDifference, margin: float = MARGIN) -> str:
    """How the interval decides: better, worse, within ``margin`` of B, or undecided."""
    low, high = diff.accuracy.low, diff.accuracy.high
    if low > 0:
        return "better"
    if high < -margin:
        return f"worse by more than {100 * margin:g} points"
    if diff.within(margin):
        return f"within {100 * margin:g} points"
    return "undecided"


def markdown(a_label: str, b_label: str, diffs: Mapping[str, PairedDifference], margin: float = MARGIN) -> str:
    """A table of the paired differences, one row per set."""
    lines = [f"Paired on the same items: {a_label} minus {b_label} (95% bootstrap intervals over items; "
             f"'within {100 * margin:g} points' means the interval's low end is at or above -{100 * margin:g})", "",
             "| Set | Items | Δ Acc. (points) | Tok. ratio | items A better / B better | McNemar p | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, d in diffs.items():
        tokens = f"{d.tokens.estimate:.2f} [{d.tokens.low:.2f}, {d.tokens.high:.2f}]" if d.tokens else ""
        p = f"{d.mcnemar_p:.3g}" if d.mcnemar_p is not None else ""
        lines.append(f"| {name} | {d.items} | {d.accuracy.points(sign=True)} | {tokens} | {d.a_better} / {d.b_better}"
                     f" | {p} | {verdict(d, margin)} |")
    return "\n".join(lines) + "\n"


def write(out_dir: str | Path, a_label: str, b_label: str, b_dir: str | Path,
          diffs: Mapping[str, PairedDifference]) -> Path:
    """``paired.json`` beside the evaluation: what it was compared with, and every set's difference."""
    path = Path(out_dir) / "paired.json"
    write_text_atomically(path, json.dumps({"a": a_label, "b": b_label, "b_dir": str(b_dir),
                                "sets": {name: d.to_dict() for name, d in diffs.items()}}, indent=2) + "\n")
    return path
