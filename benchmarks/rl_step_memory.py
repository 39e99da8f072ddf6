"""Peak memory and time of one RL step of two SmolLM2 agents: the update before and after its rework.

Issue requirement: peak memory of one RL step of two SmolLM2 agents (resident set size, and the CUDA
peak when run on a GPU) before and after the update computes log-probabilities without the
full-vocabulary logits of a whole micro-batch, at the same micro-batch size; target: at most half.
Also the update's share of the step, before and after the shared-prefix forward.

Setup: the tiny recipe with both agents trained (``schedule=joint``), 8 problems x 4 samples. An
untrained SmolLM2 ends most Long-Short episodes at its first turn (no tags), which would make the
update trivially small, so by default the episodes run all ``env.max_turns`` turns whatever the model
writes (``forced_turns.py``): sequences as long as a fine-tuned model's (~600 tokens).

One rollout is made, then both agents' updates run on the same samples, alternately with

- ``before``: the update's forward as it was (``full_vocab_logprobs`` below, kept verbatim as the
  baseline): every row through the whole model, logits of every position from the first action
  token on, in fp32, for the whole micro-batch at once;
- ``after``: ``Policy.logprobs`` (shared prefix, logits at action tokens only, chunked log-softmax);
- ``rows``: the same with ``trainer.gradient_checkpointing`` (each row's rest checkpointed by itself,
  the shared prefix run once), the setting that trades one more forward pass for memory.

Peaks are taken per phase: the kernel's resident-set high-water mark is reset (``/proc/self/clear_refs``)
after freed heap memory is returned (``longshort.memory``), so each number is the phase's own peak
(process baseline included: weights, optimiser states). Every update moves the weights a little;
the order after-warm-up, then before, after, rows repeated, keeps the sides comparable.

    python benchmarks/rl_step_memory.py                  # SmolLM2-135M, micro-batch 8
    python benchmarks/rl_step_memory.py --micro-batch 16
    python benchmarks/rl_step_memory.py --sides after,rows --repeats 1
    python benchmarks/rl_step_memory.py --tiny           # seconds: tiny random models, smoke test
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from contextlib import contextmanager

import torch

from longshort.algos import entropy_from_logits
from longshort.config import load_config
from longshort.memory import release_freed_memory
from longshort.models import tiny_model
from longshort.data.synthetic import synthetic_problems
from longshort.trainers.grpo import GRPOTrainer
from longshort.trainers.policy import Policy

import forced_turns  # noqa: F401  (benchmarks/, beside this script: registers env long_short_forced)


def full_vocab_logprobs(self, batch, *, reference=False, with_entropy=False):
    """``Policy.logprobs`` before this rework (the baseline), verbatim."""
    model = self.reference if reference else self.model
    keep = batch.input_ids.shape[1] - batch.start + 1  # position p predicts token p + 1
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep,
                use_cache=False)
    logits = out.logits[:, :-1].float() / self.temperature
    targets = batch.input_ids[:, batch.start:]
    logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1])


@contextmanager
def peak(result: dict):
    """Seconds and peak memory of the block: RSS high-water mark in GiB, and the CUDA peak if any."""
    release_freed_memory()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result["base_gib"] = _status_kib("VmRSS") / 2**20
    began = time.perf_counter()
    yield
    result["seconds"] = time.perf_counter() - began
    result["rss_gib"] = _status_kib("VmHWM") / 2**20
    if torch.cuda.is_available():
        result["cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (smoke test)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--real-env", action="store_true", help="the real long_short env (short episodes)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measured updates of each side")
    parser.add_argument("--sides", default="before,after,rows", help="which updates to measure, comma-separated")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    overrides = ["trainer.schedule=joint", f"trainer.micro_batch_size={args.micro_batch}", "trainer.steps=100",
                 "agents.long.model.device=" + args.device, "agents.short.model.device=" + args.device]
    if not args.real_env:
        overrides.append("env.name=long_short_forced")
    config = load_config("tiny", overrides)
    models = None
    if args.tiny:
        model, tokenizer = tiny_model(seed=0)
        models = {"long": (model, tokenizer), "short": (tiny_model(seed=1)[0], tokenizer)}
    problems = synthetic_problems(64, min_steps=1, max_steps=3, seed=0)
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(config, problems, out, models, save_episodes=False, progress=False)
        rollout: dict = {}
        with peak(rollout):
            groups = trainer.runner.run(trainer.stream.take(config.rollout.problems_per_step), config.rollout.group_size)
        samples = {role: trainer.samples(groups, role) for role in trainer.policies}
        lengths = [len(s.input_ids) for role in samples for s in samples[role]]
        print(f"model={'tiny' if args.tiny else 'smollm2-135m'} dtype={next(trainer.policies['long'].model.parameters()).dtype} "
              f"device={args.device} micro-batch={args.micro_batch} threads={torch.get_num_threads()} "
              f"env={config.env.name}: {len(lengths)} samples of {min(lengths)}-{max(lengths)} tokens "
              f"(mean {sum(lengths) / len(lengths):.0f}), trained: "
              + ", ".join(f"{role} {sum(s.advantage != 0 for s in samples[role])}" for role in samples))
        print(f"rollout: {rollout['seconds']:.1f} s, peak RSS {rollout['rss_gib']:.2f} GiB"
              + (f", CUDA {rollout['cuda_gib']:.2f} GiB" if "cuda_gib" in rollout else ""))

        original = Policy.logprobs
        sides = args.sides.split(",")
        unknown = set(sides) - {"before", "after", "rows"}
        if unknown:
            parser.error(f"unknown side(s) {sorted(unknown)}: choose from before, after, rows")

        def update(side: str) -> dict:
            Policy.logprobs = full_vocab_logprobs if side == "before" else original
            result: dict = {"side": side}
            try:
                with peak(result):
                    for role, policy in trainer.policies.items():
                        policy.config = dataclasses.replace(policy.config, gradient_checkpointing=side == "rows")
                        result[role] = trainer.update(policy, samples[role])["policy_loss"]
            finally:
                Policy.logprobs = original
            return result

        update("after")  # warm-up: AdamW allocates its states at the first step
        runs = [update(side) for _ in range(args.repeats) for side in sides]

    print(f"\n{'update':>7} {'seconds':>8} {'RSS at start':>13} {'peak RSS GiB':>13} {'CUDA GiB':>9}   "
          f"share of step (rollout {rollout['seconds']:.1f} s)")
    best = {}
    for run in runs:
        print(f"{run['side']:>7} {run['seconds']:8.1f} {run['base_gib']:13.2f} {run['rss_gib']:13.2f} {run.get('cuda_gib', float('nan')):9.2f}"
              f"   {run['seconds'] / (run['seconds'] + rollout['seconds']):.0%}")
        side = best.setdefault(run["side"], run)
        if run["rss_gib"] < side["rss_gib"]:
            best[run["side"]] = run
    fastest = {side: min(r["seconds"] for r in runs if r["side"] == side) for side in best}
    print()
    for new, old in (("after", "before"), ("rows", "before"), ("rows", "after")):
        if new in best and old in best:
            a, b = best[new], best[old]
            print(f"{new}/{old}: peak RSS {a['rss_gib'] / b['rss_gib']:.2f}x, above the RSS at start "
                  f"{(a['rss_gib'] - a['base_gib']) / (b['rss_gib'] - b['base_gib']):.2f}x, "
                  f"update time {fastest[new] / fastest[old]:.2f}x"
                  + (f", CUDA peak {a['cuda_gib'] / b['cuda_gib']:.2f}x" if "cuda_gib" in a else ""))


if __name__ == "__main__":
    main()
