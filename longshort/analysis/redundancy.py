"""Scoring pruning against known redundancy, and one pruning cell as an evaluation result.

On chains whose redundant steps are known (``longshort.data.longchains``), a pruning rule can be judged by
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
from longshort.data.longchains import GOLD, label_step


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


def _answer_rows(folder: Path, strategy: str, kappa: float, score: str) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["strategy"] == strategy and abs(r["kappa"] - kappa) < 1e-9
            and r.get("score", "mean") == score]  # analyses before --score took several wrote no score
    if not rows:
        raise ValueError(f"{folder} has no answers for strategy {strategy} at kappa {kappa} ranked by the {score} "
                         f"score: run the analysis with --kappas including {kappa}, --strategies including "
                         f"{strategy} and --score including {score}")
    return rows


def pruning_answer_records(folder: str | Path, strategy: str, kappa: float, *, score: str = "mean") -> list[Record]:
    """One cell of an entropy analysis folder as evaluation records (one per chain), for pairing."""
    folder = Path(folder)
    chains = {c["id"]: c for c in json.loads((folder / "results.json").read_text())["per_chain"]}
    return [Record(id=r["problem_id"], sample=0, correct=bool(r["correct"]), outcome="answered",
                   gold=str(chains[r["problem_id"]]["gold"]), verdict="ok" if r["correct"] else "wrong",
                   extracted=r["extracted"], tokens={"single": int(r["thinking_tokens"])})
            for r in _answer_rows(folder, strategy, kappa, score)]


def pruning_results(folder: str | Path, strategy: str, kappa: float, system: str, *,
                    score: str = "mean") -> tuple[Results, RedundancyScore]:
    """One cell of an entropy analysis folder (``results.json``, ``answers.jsonl``) as Results + score."""
    folder = Path(folder)
    summary = json.loads((folder / "results.json").read_text())
    chains = {c["id"]: c for c in summary["per_chain"]}
    records = pruning_answer_records(folder, strategy, kappa, score=score)
    settings = summary["settings"]
    results = Results(system=system, mode="pruned", models={"single": settings["model"]},
                      settings={"strategy": strategy, "kappa": kappa, "score": score, "answer_temperature": settings["answer_temperature"],
                                "chain_temperature": settings["chain_temperature"]},
                      sets={"heldout": summarize("heldout", records, 1)})
    rows = _answer_rows(folder, strategy, kappa, score)
    score = score_pruning(([label_step(s) != GOLD for s in chains[r["problem_id"]]["steps"]], r["pruned"]) for r in rows)
    return results, score


# --------------------------------------------------------------- teacher-forced control on written chains


def teacher_forced_control(model, tokenizer, chains, questions: Sequence[str], *, kappa: float = 0.8,
                           system: str | None = None, seed: int = 0) -> dict:
    """Step entropy of written long chains under ``model`` (one teacher-forced pass), and what each
    pruning rule removes at ``kappa``: the positive control of step entropy, with the truth known.

    Steps are ranked by each score of ``pruning.SCORES``: the mean token entropy (the paper's v2
    score, what ``entropy_skip`` uses), the sum (v1) and the mean after the step's opener tokens
    (``StepEntropy.body``, not the paper's). Returns ``{"rankings": {score: {strategy: score dict}},
    "kinds": {score: {kind: mean step score}}, "steps": n}``.
    """
    from longshort.analysis.chains import ChainFormat
    from longshort.analysis.pruning import SCORES, STRATEGIES, select_steps
    from longshort.analysis.scoring import step_entropies, token_entropies
    from longshort.analysis.steps import StepSegmenter, segment_text

    fmt = ChainFormat(system=system)
    segmenter = StepSegmenter(tokenizer)
    sequences, segmented = [], []
    for chain, question in zip(chains, questions):
        steps = segment_text(chain.thinking, segmenter)
        if len(steps) != len(chain.steps):
            raise ValueError(f"chain {chain.problem_id}: {len(steps)} segmented steps for {len(chain.steps)} written")
        segmented.append(steps)
        sequences.append((fmt.thinking_prompt_ids(tokenizer, question),
                          tokenizer.encode(chain.thinking, add_special_tokens=False)))
    entropies = [step_entropies(e, s) for e, s in zip(token_entropies(model, sequences), segmented)]

    def by_kind(score: str) -> dict[str, float]:
        values: dict[str, list[float]] = {}
        for chain, entropy in zip(chains, entropies):
            for kind, value in zip(chain.kinds, entropy.ranking(score)):
                values.setdefault(kind, []).append(value)
        return dict(sorted(((kind, sum(v) / len(v)) for kind, v in values.items()), key=lambda kv: kv[1]))

    def rules(score: str) -> dict:
        return {strategy: score_pruning(
            (chain.redundant, select_steps(e.ranking(score), kappa, strategy, seed=f"{seed}:{chain.problem_id}"))
            for chain, e in zip(chains, entropies)).to_dict() for strategy in STRATEGIES}

    return {"kappa": kappa, "rankings": {score: rules(score) for score in SCORES},
            "kinds": {score: by_kind(score) for score in SCORES}, "steps": sum(len(c.steps) for c in chains)}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    from longshort.analysis import cli_common as common
    from longshort.data.longchains import DEFAULT_REDUNDANCY, long_chains

    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.redundancy", description=(
        "Positive control of step entropy: a model scores written long chains with known redundancy "
        "(teacher-forced); which share of the steps each pruning rule removes were truly redundant."))
    parser.add_argument("--kappa", type=float, default=0.8)
    parser.add_argument("--redundancy", type=float, default=DEFAULT_REDUNDANCY)
    parser.add_argument("--out", help="write the result as JSON here")
    common.add_model_args(parser)
    common.add_problem_args(parser, default_limit=200)
    common.add_format_args(parser)
    args = parser.parse_args(argv)
    from longshort.models import load_model

    problems = common.problems_from_args(args)
    chains = long_chains(problems, redundancy=args.redundancy, seed=args.seed)
    questions = {p.id: p.prompt for p in problems}
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    began = time.perf_counter()
    result = teacher_forced_control(model, tokenizer, chains, [questions[c.problem_id] for c in chains],
                                    kappa=args.kappa, system=args.system or None, seed=args.seed)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(f"{args.model}: {len(chains)} long chains, {result['steps']} steps, redundancy {args.redundancy}; "
          f"pruning {args.kappa:.0%} of each chain's steps ({result['seconds']} s)")
    for ranking, rules in result["rankings"].items():
        for strategy, score in rules.items():
            print(f"  {strategy:>6} ({ranking} entropy): {score['removed']} steps removed, "
                  f"{100 * (score['precision'] or 0):.1f}% of them redundant; "
                  f"{100 * (score['recall'] or 0):.1f}% of the redundant steps removed")
        print(f"  {ranking} step entropy by kind (bits): "
              + ", ".join(f"{k} {v:.2f}" for k, v in result["kinds"][ranking].items()))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"settings": vars(args), **result}, indent=1) + "\n")


if __name__ == "__main__":
    from longshort.analysis.cli_common import run_command

    run_command(main)
