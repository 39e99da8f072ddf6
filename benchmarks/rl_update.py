"""The RL update with the prompt all its micro-batches share encoded once per pass, against once per
micro-batch (the update as it was).

Every sample of an agent opens with the same chat-templated system prompt (~280 tokens for the
Long-Short agents, most of a sample at the tiny recipe's turn lengths). A micro-batch encodes what
its rows share once; across micro-batches the system prompt was still encoded once per micro-batch,
forward and backward. Now it is encoded once per pass (``Policy.pass_prefix``).

Setup: the tiny recipe's trainer (SmolLM2-135M in bf16, both agents trained, micro-batch 8), one
rollout of 8 problems x 4 samples, then both agents' updates on those samples, the two ways
alternating, ``--repeats`` times each. "Per micro-batch" is this code with ``Policy.pass_prefix``
returning None, which is exactly the update before it. The optimiser does not step (``Policy.step``
is replaced), so every update starts from the same weights: the losses of the two ways must agree
to bf16 rounding, and the timed part is the forward and backward passes (the AdamW step, ~0.05 s,
is the same both ways).

The samples: ``--weights RUN`` plays the Long-Short env with the SFT weights of a finished run
(``RUN/sft/{long,short}/final``), whose episodes are what RL trains on (mostly two turns); the
untrained base model ends most episodes at its first turn without tags, so without weights use
``--forced`` (every episode runs the recipe's 4 turns, whatever is written: longer samples).

    python benchmarks/rl_update.py --weights runs/tiny   # a recipe=tiny run's SFT pair: RL-like samples
    python benchmarks/rl_update.py --forced               # the base model, every episode run to 4 turns
    python benchmarks/rl_update.py --tiny --forced        # seconds: tiny random models, a smoke test
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types

import torch

from longshort.trainers.policy import Policy

import rl_step_memory  # benchmarks/, beside this script: the same trainer and rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (smoke test)")
    parser.add_argument("--weights", help="a finished run's output_dir: its SFT pair plays the episodes")
    parser.add_argument("--forced", action="store_true", help="every episode runs all 4 turns (longer samples)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    setup = types.SimpleNamespace(tiny=args.tiny, micro_batch=args.micro_batch, real_env=not args.forced,
                                  device="cpu", weights=args.weights)
    with tempfile.TemporaryDirectory() as out:
        trainer = rl_step_memory.trainer_for(setup, out)
        samples = rl_step_memory.rollout(trainer, {})
        for policy in trainer.policies.values():
            policy.step = lambda policy=policy: policy.zero_grad() or 0.0  # same weights for every update
        lengths = [len(s.input_ids) for role in samples for s in samples[role]]
        print(f"model={'tiny' if args.tiny else 'smollm2-135m'} micro-batch={args.micro_batch} "
              f"threads={torch.get_num_threads()} env={trainer.config.env.name}: {len(lengths)} samples of "
              f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), trained: "
              + ", ".join(f"{role} {sum(s.advantage != 0 for s in samples[role])}" for role in samples))
        encode_once = Policy.pass_prefix
        ways = {"per micro-batch": lambda self, batches: None, "once per pass": encode_once}
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        losses: dict[str, dict[str, float]] = {}
        trainer.update(trainer.policies["long"], samples["long"])  # warm-up
        for _ in range(args.repeats):
            for name, pass_prefix in ways.items():
                Policy.pass_prefix = pass_prefix
                began = time.perf_counter()
                losses[name] = {role: trainer.update(policy, samples[role])["policy_loss"]
                                for role, policy in trainer.policies.items()}
                seconds[name].append(time.perf_counter() - began)
        Policy.pass_prefix = encode_once
    for name in ways:
        print(f"{name:<16} update of both agents {statistics.median(seconds[name]):6.2f} s (median; all: "
              f"{', '.join(f'{s:.2f}' for s in seconds[name])})   losses "
              + ", ".join(f"{role} {loss:.5f}" for role, loss in losses[name].items()))
    before, after = (statistics.median(seconds[name]) for name in ways)
    print(f"per micro-batch / once per pass = {before / after:.2f}x")


if __name__ == "__main__":
    main()
