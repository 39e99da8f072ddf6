"""Disk an OpenRLHF run fills under ``output_dir``, estimated before it starts (the preflight checks it).

What stays: every agent's SFT save (``sft/<role>/final``) and every phase's final model
(``rl/phase<k>_<role>/model``), Hugging Face saves in bf16, ``2P`` bytes for P parameters; later
phases, evaluation and a resumed run start from them. What comes and goes: a stage's DeepSpeed
checkpoints (``ckpt.path``), which only a resume of that same stage reads. OpenRLHF keeps
``CKPT_KEEP`` of them, each the bf16 weights and the fp32 master weights and Adam moments of every
rank (``14P`` bytes), and never deletes the last ones, so the launcher deletes
a stage's checkpoints once the stage is ``DONE`` (``launch.run``). The peak is therefore everything
kept plus the largest stage's checkpoints, not the sum over stages.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from longshort.config import Config
from longshort.trainers.openrlhf.commands import CKPT_KEEP, phases
from longshort.trainers.openrlhf.memory import GIB, ModelShape

SAVE_BYTES = 2  # per parameter: a bf16 Hugging Face save
CHECKPOINT_BYTES = 2 + 12  # per parameter: bf16 weights + fp32 master weights, Adam m and v (ZeRO partitions them)


@dataclass(frozen=True)
class DiskEstimate:
    """GiB under ``output_dir``: the saves the run keeps, and one stage's DeepSpeed checkpoints at their most."""

    kept_gib: float
    checkpoints_gib: float

    @property
    def peak_gib(self) -> float:
        return self.kept_gib + self.checkpoints_gib


def estimate(config: Config, shapes: dict[str, ModelShape]) -> DiskEstimate:
    """The run's disk from each agent's model shape (``shapes``: role -> shape)."""
    stages: list[str] = []  # the role each stage trains, in order
    if "sft" in config.stages:
        stages += list(config.agents)
    if "rl" in config.stages:
        stages += [phase.role for phase in phases(config)]
    kept = sum(SAVE_BYTES * shapes[role].parameters for role in stages)
    checkpoints = max((CKPT_KEEP * CHECKPOINT_BYTES * shapes[role].parameters for role in stages), default=0)
    return DiskEstimate(kept / GIB, checkpoints / GIB)


def free_gib(path: Path) -> float:
    """Free space of the filesystem that holds ``path`` (its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free / GIB
