"""Peak memory and time of one RL step of two SmolLM2 agents: the update before and after its rework.

Issue requirement: peak memory of one RL step of two SmolLM2 agents (resident set size, and the CUDA
peak when run on a GPU) before and after the update computes log-probabilities without the
full-vocabulary logits of a whole micro-batch, at the same micro-batch size; target: at most half.
Also the update's share of the step, before and after the shared-prefix forward.

Setup: the tiny recipe with both agents trained (``schedule=joint``), 8 problems x 4 samples. An
untrained SmolLM2 ends most Long-Short episodes at its first turn (no tags), which would make the
update trivially small, so by default the episodes run all ``env.max_turns`` turns whatever the model
writes (``forced_turns.py``): sequences as long as a fine-tuned model's (~600 tokens).

One rollout makes the samples every side trains on. Each side then runs in a process of its own (a
heap shaped by another side's buffers would blur its peak), as the trainer runs it: a warm-up update
(AdamW allocates its states), then one RL step, a rollout and the update on the shared samples, each
with its own peak. The sides:

- ``before``: the update as it was, reconstructed in this script (``use_the_update_as_it_was``): its
  forward is ``full_vocab_logprobs`` below (kept verbatim): every row through the whole model, logits
  of every position from the first action token on, in fp32, for the whole micro-batch at once; and
  the fp32 master gradients stayed allocated after the optimiser step;
- ``after``: ``Policy.logprobs`` (shared prefix, logits at action tokens only, chunked log-softmax),
  gradients dropped once applied;
- ``rows``: the same with ``trainer.gradient_checkpointing`` (each row's rest checkpointed by itself,
  the shared prefix run once), the setting that trades one more forward pass for memory.

Peaks: the kernel's resident-set high-water mark is reset (``/proc/self/clear_refs``) after freed heap
memory is returned (``longshort.memory``), so each number is the phase's own peak, process baseline
included (weights, master weights, optimiser states). The step's peak is the larger of the two.

    python benchmarks/rl_step_memory.py                  # SmolLM2-135M, micro-batch 8
    python benchmarks/rl_step_memory.py --micro-batch 16
    python benchmarks/rl_step_memory.py --sides after,rows
    python benchmarks/rl_step_memory.py rollout.pack_weights=false  # any config override of the recipe
    python benchmarks/rl_step_memory.py --tiny           # seconds: tiny random models, smoke test
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from longshort.algos import entropy_from_logits
from longshort.config import load_config
from longshort.episode import TrainingSample
from longshort.memory import release_freed_memory
from longshort.models import tiny_model
from longshort.data.synthetic import synthetic_problems
from longshort.trainers.grpo import GRPOTrainer
from longshort.trainers.policy import Policy

import forced_turns  # noqa: F401  (benchmarks/, beside this script: registers env long_short_forced)


def full_vocab_logprobs(self, batch, *, reference=False, with_entropy=False, prefix=None):
    """``Policy.logprobs`` before this rework (the baseline), verbatim but for ``prefix``, which the
    update passes now and which is always None here (``use_the_update_as_it_was``)."""
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


def use_the_update_as_it_was() -> None:
    """Put the old update back in this process: the full-vocabulary forward, and the fp32 master
    gradients kept after the optimiser step until the next update clears them."""
    current_step = Policy.step

    def step_keeping_grads(self):
        kept = [m.grad for m in self.master]
        norm = current_step(self)
        for m, grad in zip(self.master, kept):
            m.grad = grad
        return norm

    Policy.logprobs, Policy.step = full_vocab_logprobs, step_keeping_grads
    Policy.pass_prefix = lambda self, batches: None  # nor was any prefix encoded once per pass


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


SIDES = ("before", "after", "rows")
RESULT = "RESULT "  # the line a side's process reports its numbers on


def trainer_for(args, out: str) -> GRPOTrainer:
    """The tiny recipe's trainer, both agents trained; the same weights in every process."""
    overrides = ["trainer.schedule=joint", f"trainer.micro_batch_size={args.micro_batch}", "trainer.steps=100",
                 "agents.long.model.device=" + args.device, "agents.short.model.device=" + args.device]
    if not args.real_env:
        overrides.append("env.name=long_short_forced")
    if getattr(args, "weights", None):  # a run's SFT weights (rl_update.py --weights), else the recipe's base model
        overrides += [f"agents.{role}.model.name_or_path={args.weights}/sft/{role}/final" for role in ("long", "short")]
    overrides += getattr(args, "overrides", [])
    config = load_config("tiny", overrides)
    models = None
    if args.tiny:
        model, tokenizer = tiny_model(seed=0)
        models = {"long": (model, tokenizer), "short": (tiny_model(seed=1)[0], tokenizer)}
    problems = synthetic_problems(64, min_steps=1, max_steps=3, seed=0)
    return GRPOTrainer(config, problems, out, models, save_episodes=False, progress=False)


def rollout(trainer: GRPOTrainer, result: dict) -> dict[str, list[TrainingSample]]:
    """One rollout of the recipe's problems per step (its seconds and peak into ``result``); each agent's samples."""
    with peak(result):
        groups = trainer.rollout(trainer.stream.take(trainer.config.rollout.problems_per_step))
    return {role: trainer.samples(groups, role) for role in trainer.policies}


def update(trainer: GRPOTrainer, side: str, samples: dict[str, list[TrainingSample]], result: dict) -> None:
    """Both agents' updates on ``samples`` the way ``side`` made them; seconds, peak and losses into ``result``."""
    with peak(result):
        for role, policy in trainer.policies.items():
            policy.config = dataclasses.replace(policy.config, gradient_checkpointing=side == "rows")
            result[role] = trainer.update(policy, samples[role])["policy_loss"]


def run_side(args) -> None:
    """One side in this process: warm-up update, then a measured rollout and update; prints its RESULT line."""
    samples = {role: [TrainingSample(**row) for row in rows]
               for role, rows in json.loads(Path(args.samples).read_text()).items()}
    if args.side == "before":  # this process runs one side only, so the old code stays in for its life
        use_the_update_as_it_was()
    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_for(args, out)
        warm_up: dict = {}
        update(trainer, args.side, samples, warm_up)  # AdamW allocates its states at the first step
        result: dict = {"side": args.side, "rollout": {}, "first_losses": [warm_up["long"], warm_up["short"]]}
        rollout(trainer, result["rollout"])
        update(trainer, args.side, samples, result)
    print(RESULT + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models (smoke test)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--real-env", action="store_true", help="the real long_short env (short episodes)")
    parser.add_argument("--sides", default=",".join(SIDES), help="which updates to measure, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    parser.add_argument("--samples", help=argparse.SUPPRESS)  # internal: the shared samples (JSON)
    parser.add_argument("overrides", nargs="*", help="config overrides of the recipe, as for longshort.train "
                        "(e.g. rollout.pack_weights=false)")
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    sides = args.sides.split(",")
    unknown = set(sides) - set(SIDES)
    if unknown:
        parser.error(f"unknown side(s) {sorted(unknown)}: choose from {', '.join(SIDES)}")

    with tempfile.TemporaryDirectory() as out:
        trainer = trainer_for(args, out)
        samples = rollout(trainer, {})
        lengths = [len(s.input_ids) for role in samples for s in samples[role]]
        print(f"model={'tiny' if args.tiny else 'smollm2-135m'} dtype={next(trainer.policies['long'].model.parameters()).dtype} "
              f"device={args.device} micro-batch={args.micro_batch} threads={torch.get_num_threads()} "
              f"env={trainer.config.env.name}: {len(lengths)} samples of {min(lengths)}-{max(lengths)} tokens "
              f"(mean {sum(lengths) / len(lengths):.0f}), trained: "
              + ", ".join(f"{role} {sum(s.advantage != 0 for s in samples[role])}" for role in samples), flush=True)
        del trainer
        path = Path(out) / "samples.json"
        path.write_text(json.dumps({role: [dataclasses.asdict(s) for s in rows] for role, rows in samples.items()}))
        passed = [f"--micro-batch={args.micro_batch}", f"--device={args.device}"]
        passed += ["--tiny"] * args.tiny + ["--real-env"] * args.real_env + args.overrides
        runs = []
        for side in sides:
            command = [sys.executable, __file__, *passed, "--side", side, "--samples", str(path)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(next(line for line in output.splitlines() if line.startswith(RESULT))[len(RESULT):]))
            print(f"  {side}: done", flush=True)

    print(f"\n{'side':>7} {'rollout s':>9} {'update s':>9} {'RSS at start':>13} {'rollout peak':>13} "
          f"{'update peak':>12} {'step peak GiB':>14} {'CUDA GiB':>9}   update share of step")
    for run in runs:
        run["step_gib"] = max(run["rss_gib"], run["rollout"]["rss_gib"])
        cuda = max(run.get("cuda_gib", float("nan")), run["rollout"].get("cuda_gib", float("nan")))
        print(f"{run['side']:>7} {run['rollout']['seconds']:9.1f} {run['seconds']:9.1f} {run['base_gib']:13.2f} "
              f"{run['rollout']['rss_gib']:13.2f} {run['rss_gib']:12.2f} {run['step_gib']:14.2f} {cuda:9.2f}   "
              f"{run['seconds'] / (run['seconds'] + run['rollout']['seconds']):.0%}")
    by_side = {run["side"]: run for run in runs}
    print()
    for new, old in (("after", "before"), ("rows", "before"), ("rows", "after")):
        if new in by_side and old in by_side:
            a, b = by_side[new], by_side[old]
            print(f"{new}/{old}: step peak RSS {a['step_gib'] / b['step_gib']:.2f}x, update peak "
                  f"{a['rss_gib'] / b['rss_gib']:.2f}x, update time {a['seconds'] / b['seconds']:.2f}x, "
                  f"first update's losses (same weights, same samples) long {a['first_losses'][0]:.6f} vs "
                  f"{b['first_losses'][0]:.6f}, short {a['first_losses'][1]:.6f} vs {b['first_losses'][1]:.6f}"
                  + (f", CUDA peak {a['cuda_gib'] / b['cuda_gib']:.2f}x" if "cuda_gib" in a else ""))


if __name__ == "__main__":
    main()
