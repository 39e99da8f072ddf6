"""What an RL step reports, and where it goes: ``metrics.jsonl``, TensorBoard, a progress bar, and
Weights & Biases when ``logging.wandb.project`` is set (``longshort.trainers.tracking``).

Metric names are flat ``group/agent/name`` strings so the JSONL, TensorBoard and any plotting script
share one vocabulary:

- ``reward/<role>/<term>`` and ``reward/<role>/total``: mean over the step's episodes;
- ``tokens/<role>``: mean tokens the agent generated per episode; ``format/<role>``: fraction of
  episodes in which the agent acted and every one of its turns passed its format check;
- ``episode/accuracy`` (verified answers), ``episode/finished`` (ended with a well-formed final
  answer), ``episode/turns``, ``episode/tokens``;
- ``train/<role>/<name>`` for each agent updated this step: policy_loss, kl, entropy, clip_frac,
  logprob_err, grad_norm, lr, samples, trained_samples, tokens, adv_abs_mean. Two denominators:
  ``policy_loss`` is normalised by ``tokens`` (the action tokens of *all* the agent's samples, as the
  loss is), while ``clip_frac``, ``entropy``, ``logprob_err`` and ``kl`` are per action token of the
  ``trained_samples`` only: samples with advantage 0 are not run through the model when there is no
  KL term (``GRPOTrainer.update``), so nothing is measured on them;
- ``groups/<role>/all_equal``: share of the step's groups in which the agent's total rewards are all
  equal (or it acted in fewer than two episodes): group-normalised advantages are 0 there, so those
  groups give the agent no gradient, whatever their size;
- ``time/rollout_s``, ``time/update_s``, ``time/step_s``.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from longshort.config import Config
from longshort.episode import Episode
from longshort.jsonl import trim_log
from longshort.paths import append_line
from longshort.plain_progress import PlainProgress, on_terminal


def episode_metrics(episodes: Sequence[Episode], roles: Sequence[str]) -> dict[str, float]:
    """Reward terms, tokens and format per agent, and accuracy, completion and length per episode."""
    metrics: dict[str, float] = {
        "episode/accuracy": fmean(float(ep.outcome.correct) for ep in episodes),
        "episode/finished": fmean(float(ep.outcome.finished) for ep in episodes),
        "episode/turns": fmean(len(ep.turns) for ep in episodes),
        "episode/tokens": fmean(ep.tokens() for ep in episodes),
    }
    for role in roles:
        terms = sorted({term for ep in episodes for term in ep.rewards.get(role, {})})
        for term in terms:
            metrics[f"reward/{role}/{term}"] = fmean(ep.rewards.get(role, {}).get(term, 0.0) for ep in episodes)
        if any(role in ep.totals for ep in episodes):
            metrics[f"reward/{role}/total"] = fmean(ep.totals.get(role, 0.0) for ep in episodes)
        metrics[f"tokens/{role}"] = fmean(ep.tokens(role) for ep in episodes)
        metrics[f"format/{role}"] = fmean(
            float(any(t.role == role for t in ep.turns) and all(t.format_ok for t in ep.turns if t.role == role))
            for ep in episodes)
    return metrics


def group_metrics(groups: Sequence[Sequence[Episode]], roles: Sequence[str]) -> dict[str, float]:
    """``groups/<role>/all_equal`` for every agent with rewards: the groups that give it no gradient."""
    metrics = {}
    for role in roles:
        if not any(role in ep.totals for group in groups for ep in group):
            continue
        distinct = [len({ep.totals[role] for ep in group if any(t.role == role for t in ep.turns)})
                    for group in groups]
        metrics[f"groups/{role}/all_equal"] = fmean(float(n <= 1) for n in distinct)
    return metrics


class MetricsLogger:
    """Appends one JSON line per logged step, mirrors it to TensorBoard, and drives a progress bar
    (off a terminal: one plain line per step, ``longshort.plain_progress``).

    On resume, lines and TensorBoard events after the restored step are dropped, so a run killed
    between a log write and a checkpoint does not end up with a step logged twice; lines are appended
    (``paths.append_line``) and a torn last line is dropped there too (``longshort.jsonl.trim_log``). With ``config``
    asking for W&B, each written line also goes there, with a table of the step's episodes (read
    back from ``episodes/step_XXXX.jsonl``, when the trainer saved them).
    """

    def __init__(self, out_dir: Path, total_steps: int, *, start_step: int = 0, progress: bool = True,
                 config: Config | None = None):
        from torch.utils.tensorboard import SummaryWriter  # pulls in tensorboard: only when training

        from longshort.trainers import tracking

        self.out_dir = out_dir
        self.path = out_dir / "metrics.jsonl"
        trim_log(self.path, start_step)
        self.tracker = tracking.WandbTracker(config, out_dir) if config and tracking.enabled(config) else None
        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1)
        self.progress = Progress(TextColumn("[bold]RL[/bold] step"), MofNCompleteColumn(), BarColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[summary]}"),
                                 console=Console(stderr=True), disable=not progress or not on_terminal())
        self.task = self.progress.add_task("rl", total=total_steps, completed=start_step, summary="")
        self.lines = PlainProgress("RL step", total_steps, start_step) if progress and not on_terminal() else None

    def __enter__(self) -> "MetricsLogger":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        self.writer.close()
        if self.tracker is not None:
            self.tracker.close()

    def log(self, step: int, metrics: Mapping[str, float | str | list], *, write: bool) -> None:
        """Advance the bar to ``step`` (1-based); with ``write``, append the line and the scalars."""
        if write:
            append_line(self.path, json.dumps({"step": step, **metrics}))
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()
            if self.tracker is not None:
                self.tracker.log(step, metrics, self.out_dir / "episodes" / f"step_{step:04d}.jsonl")
        self.progress.update(self.task, completed=step, summary=_summary(metrics))
        if self.lines is not None:
            self.lines.line(step, _summary(metrics))


def _summary(metrics: Mapping[str, float | str | list]) -> str:
    """The few numbers worth a glance on the console."""
    parts = [f"acc {metrics['episode/accuracy']:.2f}", f"fin {metrics['episode/finished']:.2f}"]
    parts += [f"R({key.split('/')[1]}) {value:+.2f}" for key, value in metrics.items()
              if key.startswith("reward/") and key.endswith("/total")]
    parts.append(f"train {','.join(metrics.get('trained', [])) or '-'}")
    parts.append(f"{metrics['time/rollout_s']:.0f}s+{metrics['time/update_s']:.0f}s")
    return "  ".join(parts)
