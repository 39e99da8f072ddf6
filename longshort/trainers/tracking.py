"""Weights & Biases, the tracker OpenRLHF, verl and TRL users already have: optional, off by default.

With ``logging.wandb.project`` set, the embedded trainer sends W&B what it writes to
``metrics.jsonl`` and TensorBoard (every numeric ``group/agent/name`` metric of a logged step, at
that RL step) plus a table of the step's episodes: a few per step, picked round-robin over their
outcomes (``longshort.report.episodes.round_robin``), each with its transcript turn by turn.
``wandb`` is imported only then; without the extra (``pip install 'longshort[wandb]'``) the run
stops before its first step with a one-line error.

The W&B run id is kept in ``<out_dir>/wandb_run_id``, so a resumed training run continues the
same W&B run (``resume="allow"``). W&B accepts only increasing steps: a step that was logged, then
lost to a kill before its checkpoint and logged again after the resume, keeps its first values there
(``metrics.jsonl`` and TensorBoard drop the lost line and keep the new one). For the OpenRLHF backend, ``openrlhf_flags`` renders OpenRLHF's
own ``--logger.wandb.*`` flags and ``openrlhf_env`` the environment that selects the mode.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from longshort.config import Config, ConfigError, WandbConfig
from longshort.paths import write_text_atomically
from longshort.report.episodes import read_jsonl, round_robin, view_of_episode

INSTALL_HINT = "pip install 'longshort[wandb]' (or unset logging.wandb.project)"


def enabled(config: Config) -> bool:
    return config.logging.wandb.project is not None


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError(f"logging.wandb.project is set but wandb is not installed: {INSTALL_HINT}") from None
    return wandb


class WandbTracker:
    """One W&B run for one RL stage: ``log`` each written step, ``close`` at the end."""

    def __init__(self, config: Config, out_dir: Path):
        self.wandb = _import_wandb()
        cfg = config.logging.wandb
        self.cfg, self.roles = cfg, list(config.agents)
        out_dir.mkdir(parents=True, exist_ok=True)
        id_file = out_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self.run = self.wandb.init(project=cfg.project, entity=cfg.entity, group=cfg.group,
                                   name=cfg.name or config.name, tags=list(cfg.tags), mode=cfg.mode, dir=str(out_dir),
                                   id=run_id, resume="allow", config=dataclasses.asdict(config))
        write_text_atomically(id_file, self.run.id + "\n")  # a resume reads it to continue the same W&B run

    @property
    def columns(self) -> list[str]:
        return ["step", "problem", "sample", "outcome", "verdict", *(f"tokens/{r}" for r in self.roles),
                *(f"reward/{r}" for r in self.roles), "transcript"]

    def episode_rows(self, step: int, episodes_file: Path) -> list[list[Any]]:
        """The table rows of one step: up to ``episodes_per_step`` episodes, round-robin over outcomes."""
        views = [view_of_episode(episode) for episode in read_jsonl(episodes_file)]
        rows = []
        for e in round_robin(views, self.cfg.episodes_per_step):
            transcript = "\n\n".join(f"[turn {i + 1} · {t['role']} · {t['tokens']} tokens · finish {t['finish']} · "
                                     f"format {t['format']}]\n{t['text']}" for i, t in enumerate(e["turns"]))
            rows.append([step, e["id"], e["sample"], e["class"], e["verdict"] or "",
                         *(e["tokens"].get(r, 0) for r in self.roles), *(e["totals"].get(r) for r in self.roles),
                         transcript])
        return rows

    def log(self, step: int, metrics: Mapping[str, Any], episodes_file: Path | None = None) -> None:
        data: dict[str, Any] = {key: value for key, value in metrics.items()
                                if isinstance(value, (int, float)) and not isinstance(value, bool)}
        if episodes_file is not None and episodes_file.is_file():
            data["episodes"] = self.wandb.Table(columns=self.columns, data=self.episode_rows(step, episodes_file))
        # committed now rather than when the next step or ``finish`` comes: a run killed after this line
        # keeps the step in W&B, and the last step does not depend on ``finish`` flushing an open row
        self.run.log(data, step=step, commit=True)

    def close(self) -> None:
        self.run.finish()


# ------------------------------------------------------------------------------------ OpenRLHF backend


def openrlhf_flags(config: Config, run_name: str) -> list[tuple[str, Any]]:
    """OpenRLHF's ``--logger.wandb.*`` flags (``openrlhf/cli/train_ppo_ray.py``, ``train_sft.py``), as
    (dotted name, value) pairs for the launcher's flag rendering; none when W&B is off. Each SFT run
    and RL phase is its own OpenRLHF process and so its own W&B run (``run_name``), grouped under
    ``logging.wandb.group`` or, by default, the config's name.

    OpenRLHF turns W&B on only when ``--logger.wandb.key`` is non-empty and logs in with it unless
    the environment already holds a key. The launcher never puts a secret on a command line (plans
    are printed by ``--dry-run``): online runs need ``WANDB_API_KEY`` in the environment or a
    ``wandb login``, and the flag then carries the placeholder ``env``, which only switches W&B on.
    """
    if not enabled(config):
        return []
    cfg: WandbConfig = config.logging.wandb
    return [("logger.wandb.key", "env"), ("logger.wandb.project", cfg.project), ("logger.wandb.org", cfg.entity),
            ("logger.wandb.group", cfg.group or config.name), ("logger.wandb.run_name", run_name)]


def openrlhf_env(config: Config) -> dict[str, str]:
    """Environment for OpenRLHF's processes: OpenRLHF has no mode flag, W&B reads ``WANDB_MODE``."""
    return {"WANDB_MODE": config.logging.wandb.mode} if enabled(config) else {}
