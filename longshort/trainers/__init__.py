"""Trainers: the embedded GRPO/PPO trainer for N policies (``grpo``), built from

- ``policy``: one trainable agent (model, fp32 master weights, AdamW, schedule, reference);
- ``schedule``: which agents learn at which step (joint / alternating) and which problems it draws;
- ``metrics``: per-step metrics to ``metrics.jsonl``, TensorBoard and the console;
- ``tracking``: the optional Weights & Biases logger (and OpenRLHF's matching flags).

The RL maths (advantage estimators, PPO-clip loss, KL estimators) is in ``longshort.algos``.
``GRPOTrainer`` is imported lazily so that ``import longshort.trainers.<launcher>`` stays light.
"""
from __future__ import annotations

__all__ = ["GRPOTrainer"]


def __getattr__(name: str):
    if name == "GRPOTrainer":
        from longshort.trainers.grpo import GRPOTrainer

        return GRPOTrainer
    raise AttributeError(f"module 'longshort.trainers' has no attribute {name!r}")
