"""The learning-rate schedule of every trainer (cold-start SFT and RL): linear warm-up, then cosine to 0.

One helper for both so that they agree. Unlike HF's ``get_cosine_schedule_with_warmup``, the warm-up
starts at ``1/warmup`` rather than 0: HF's first optimiser step runs at learning rate 0 (a no-op that
still costs a full forward and backward), and a tiny run has few steps to spare.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor of optimiser step ``step`` (0-based): ``(step + 1) / warmup`` during the
    warm-up, then a cosine from 1 down to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_steps(warmup_ratio: float, total: int) -> int:
    """Warm-up steps for ``warmup_ratio`` of ``total`` steps: at least one when the ratio is positive."""
    return max(1, math.ceil(warmup_ratio * total)) if warmup_ratio > 0 else 0


def cosine_schedule(optimizer: "torch.optim.Optimizer", total: int, warmup_ratio: float):
    """A ``LambdaLR`` following ``cosine_with_warmup`` over ``total`` optimiser steps."""
    import torch

    warmup = warmup_steps(warmup_ratio, total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total, warmup))
