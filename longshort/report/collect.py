"""Read a run directory into what the report shows, using only files that runs already write.

A training run (``python -m longshort.train``) has ``config.yaml``, a ``<stage>/DONE`` marker with
the stage's seconds, ``summary.md``/``summary.json``, ``rl/metrics.jsonl``, ``rl/episodes/`` and an
evaluation folder per checkpoint under ``eval/``. An evaluation (``python -m longshort.evaluate``)
is one folder with ``config.yaml``, ``results.json``, ``table.md``, ``plot.png`` and ``records/``.
Any of these may be missing (a run still going, an OpenRLHF run, an old run): the report shows
what is there. Nothing here imports torch or the models, so any run can be reported anywhere.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from longshort.config import STAGES
from longshort.report.episodes import Group, read_jsonl, view_of_episode, view_of_record


class ReportError(ValueError):
    """A folder that holds no run; the message says what was expected."""


@dataclass
class Evaluation:
    """One evaluation folder (``results.json`` and what was written beside it)."""

    label: str  # its path inside the run ("eval/rl"), or "evaluation" for the run folder itself
    path: Path
    results: dict
    table_md: str | None
    plot_png: Path | None
    groups: list[Group] = field(default_factory=list)


@dataclass
class RunData:
    path: Path
    name: str
    config_text: str | None
    config: dict
    stages: list[tuple[str, float | None]]  # (stage, seconds) for every stage with a DONE marker
    summary_md: str | None
    metrics: list[dict]
    step_stats: dict[int, dict]  # RL step -> statistics computed from all of its episodes
    rl_groups: list[Group]
    evaluations: list[Evaluation]

    @property
    def roles(self) -> list[str]:
        """Agent roles: the config's, then any others seen in episodes or metrics, in that order."""
        roles = list(self.config.get("agents") or {})
        seen = [key.split("/")[1] for row in self.metrics for key in row if key.startswith(("tokens/", "format/"))]
        for group in self.rl_groups + [g for ev in self.evaluations for g in ev.groups]:
            seen += [role for episode in group.episodes for role in episode["tokens"]]
        return list(dict.fromkeys(roles + seen))


def load_run(path: str | Path) -> RunData:
    """Everything the report needs from ``path`` (a training run or an evaluation folder)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder: pass a run directory (runs/<name>) or an evaluation folder")
    config_text = (path / "config.yaml").read_text() if (path / "config.yaml").is_file() else None
    config = yaml.safe_load(config_text) if config_text else {}
    evaluations = _evaluations(path)
    metrics_path = path / "rl" / "metrics.jsonl"
    metrics = list(read_jsonl(metrics_path)) if metrics_path.is_file() else []
    rl_groups = _rl_groups(path / "rl" / "episodes")
    if config_text is None and not evaluations and not metrics and not rl_groups:
        raise ReportError(f"{path} holds no run: expected config.yaml, rl/metrics.jsonl or an evaluation's "
                          "results.json (pass the folder a train or evaluate command wrote)")
    stages = []
    for stage in list(config.get("stages") or []) + [s for s in STAGES if s not in (config.get("stages") or [])]:
        marker = path / stage / "DONE"
        if marker.is_file():
            try:
                stages.append((stage, float(json.loads(marker.read_text())["seconds"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                stages.append((stage, None))  # a marker from before markers held seconds
    summary = path / "summary.md"
    return RunData(path=path, name=str(config.get("name") or path.name), config_text=config_text, config=config,
                   stages=stages, summary_md=summary.read_text() if summary.is_file() else None, metrics=metrics,
                   step_stats={int(g.key.split("-")[1]): step_statistics(g.episodes) for g in rl_groups},
                   rl_groups=rl_groups, evaluations=evaluations)


def _rl_groups(folder: Path) -> list[Group]:
    groups = []
    for file in sorted(folder.glob("step_*.jsonl")) if folder.is_dir() else []:
        try:
            step = int(file.stem.split("_")[1])
        except (IndexError, ValueError):
            continue
        groups.append(Group(f"step-{step}", f"RL step {step}", "rl", [view_of_episode(e) for e in read_jsonl(file)]))
    return sorted(groups, key=lambda group: int(group.key.split("-")[1]))


def step_statistics(episodes: list[dict]) -> dict:
    """What ``metrics.jsonl`` does not hold, from every episode of a step: each agent's own tokens per
    turn, and the share of episodes ending in each outcome class."""
    turns: dict[str, list[int]] = {}
    for episode in episodes:
        for turn in episode["turns"]:
            turns.setdefault(turn["role"], []).append(turn["tokens"])
    outcomes: dict[str, float] = {}
    for episode in episodes:
        outcomes[episode["class"]] = outcomes.get(episode["class"], 0) + 1 / len(episodes)
    return {"tokens_per_turn": {role: sum(values) / len(values) for role, values in turns.items()},
            "outcomes": outcomes}


def _is_evaluation(folder: Path) -> bool:
    """An evaluation's output folder: its ``results.json``, or records of one still running."""
    return (folder / "results.json").is_file() or any((folder / "records").glob("*.jsonl"))


def _evaluations(path: Path) -> list[Evaluation]:
    """``path`` itself if it is an evaluation folder, else the evaluation folders up to two levels below."""
    folders = [path] if _is_evaluation(path) else sorted(
        (p for p in [*path.glob("*"), *path.glob("*/*")] if p.is_dir() and _is_evaluation(p)),
        key=lambda p: _checkpoint_order(p.relative_to(path)))
    evaluations = []
    prompts = _prompts(path) if folders else {}
    for folder in folders:
        try:
            done = (folder / "results.json").is_file()
            results = json.loads((folder / "results.json").read_text()) if done else {}
        except json.JSONDecodeError:
            results = {}
        label = "evaluation" if folder == path else folder.relative_to(path).as_posix()
        groups = []
        names = list(results.get("sets", {}))  # the table's order, then sets still being evaluated
        names += [f.stem for f in sorted((folder / "records").glob("*.jsonl")) if f.stem not in names]
        for name in names:
            records = folder / "records" / f"{name}.jsonl"
            if records.is_file():
                episodes = [view_of_record(r, prompts.get(r.get("id"))) for r in read_jsonl(records)]
                groups.append(Group(f"{label}/{name}", f"{label}: {name}", "eval", episodes))
        evaluations.append(Evaluation(label, folder, results,
                                      (folder / "table.md").read_text() if (folder / "table.md").is_file() else None,
                                      folder / "plot.png" if (folder / "plot.png").is_file() else None, groups))
    return evaluations


def _checkpoint_order(relative: Path) -> tuple:
    """eval/base, eval/sft, eval/rl in pipeline order; other folders after them by name."""
    order = {"base": 0, "sft": 1, "rl": 2}
    return (order.get(relative.name, 3), relative.as_posix())


def _prompts(run: Path) -> dict[str, str]:
    """Problem texts by id from the run's ``data/*.jsonl`` (evaluation records keep only the id)."""
    prompts: dict[str, str] = {}
    for file in sorted((run / "data").glob("*.jsonl")) if (run / "data").is_dir() else []:
        for row in read_jsonl(file):
            if "id" in row and "prompt" in row:
                prompts[row["id"]] = row["prompt"]
    return prompts
