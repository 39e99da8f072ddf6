"""Scoring pruning against known redundancy, and one pruning cell as an evaluation result.

On chains whose redundant steps are known (``longshort.longchains``), a pruning rule can be judged by
what it removed, not only by the accuracy that survives: ``precision`` is the share of the removed
steps that were truly redundant, ``recall`` the share of the redundant steps that were removed. On a
model's own chains the truth is the labeller's (``longchains.label_step``, which recognises the
redundant kinds by their openers): exact on the written chains, an approximation on generated ones.

``pruning_results`` turns one (strategy, kappa) cell of ``python -m longshort.analysis.entropy``'s
output into the evaluation package's ``Results``, so a reproduced table reports it like any other
row (accuracy with its standard error over problems; tokens = thinking tokens left after pruning,
each ``[SKIP]`` counted as one token).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from longshort.evaluation.metrics import summarize
from longshort.evaluation.records import Record
from longshort.evaluation.results import Results
from longshort.longchains import GOLD, label_step


@dataclass(frozen=True)
class RedundancyScore:
    removed: int  # steps removed over all chains
    removed_redundant: int  # of those, truly redundant
    redundant: int  # redundant steps in the chains

    @property
    def precision(self) -> float | None:
        return self.removed_redundant / self.removed if self.removed else None

    @property
    def recall(self) -> float | None:
        return self.removed_redundant / self.redundant if self.redundant else None

    def to_dict(self) -> dict:
        return {"removed": self.removed, "removed_redundant": self.removed_redundant, "redundant": self.redundant,
                "precision": self.precision, "recall": self.recall}


def score_pruning(chains: Iterable[tuple[Sequence[bool], Sequence[int]]]) -> RedundancyScore:
    """``chains``: (is-redundant per step, pruned step indices) for every chain."""
    removed = removed_redundant = redundant = 0
    for flags, pruned in chains:
        removed += len(pruned)
        removed_redundant += sum(bool(flags[i]) for i in pruned)
        redundant += sum(map(bool, flags))
    return RedundancyScore(removed, removed_redundant, redundant)


def pruning_results(folder: str | Path, strategy: str, kappa: float, system: str) -> tuple[Results, RedundancyScore]:
    """One cell of an entropy analysis folder (``results.json``, ``answers.jsonl``) as Results + score."""
    folder = Path(folder)
    summary = json.loads((folder / "results.json").read_text())
    chains = {c["id"]: c for c in summary["per_chain"]}
    rows = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["strategy"] == strategy and abs(r["kappa"] - kappa) < 1e-9]
    if not rows:
        raise ValueError(f"{folder} has no answers for strategy {strategy} at kappa {kappa}: run the analysis "
                         f"with --kappas including {kappa} and --strategies including {strategy}")
    records = [Record(id=r["problem_id"], sample=0, correct=bool(r["correct"]), outcome="answered",
                      gold=str(chains[r["problem_id"]]["gold"]), verdict="ok" if r["correct"] else "wrong",
                      extracted=r["extracted"], tokens={"single": int(r["thinking_tokens"])}) for r in rows]
    settings = summary["settings"]
    results = Results(system=system, mode="pruned", models={"single": settings["model"]},
                      settings={"strategy": strategy, "kappa": kappa, "answer_temperature": settings["answer_temperature"],
                                "chain_temperature": settings["chain_temperature"]},
                      sets={"heldout": summarize("heldout", records, 1)})
    score = score_pruning(([label_step(s) != GOLD for s in chains[r["problem_id"]]["steps"]], r["pruned"]) for r in rows)
    return results, score
