"""GRPO step time: longshort's embedded trainer against TRL's ``GRPOTrainer``, same configuration, one process.

Issue requirement: the same single-agent GRPO configuration (SmolLM2-135M-Instruct, 8 prompts x 4
samples, 64 new tokens, the same reward) in both trainers; print seconds per step for each and the
ratio (target: ours at least 2x faster on the 2-core CPU), and the reward after the same number of
steps.

What "the same" means here, term by term:

- model: two fresh copies of the same weights, in the same dtype (``--dtype``; bf16 is what
  TRL's ``dtype="auto"`` loads SmolLM2 in, and what our ``auto`` picks on CPUs with native bf16);
  TRL runs with ``bf16=True`` then, our trainer keeps its fp32 master weights;
- prompts: the synthetic word problems, each rendered with the single agent's system prompt through
  the model's chat template (TRL gets the same messages as a conversational dataset);
- sampling: temperature 1.0, no top-p/top-k, at most 64 new tokens, EOS ends a completion;
- reward: ``reward`` below, one plain function both trainers call: 1 for a verified answer, 0.5 for
  a well-formed turn (``SingleAgent.check_format``), minus 0.005 per generated token, so every group
  has reward variance and both trainers run the full backward pass;
- update: group-normalised advantages, PPO-clip (eps 0.2) with token-mean loss over the batch
  (TRL's ``dapo``), no KL (beta 0, no reference model), one optimiser step per 32 completions
  (micro-batches of 8, gradients accumulated), AdamW at the same learning rate with a cosine schedule
  and no warm-up, gradient clipping at 1.0, no gradient checkpointing (TRL turns it on by default;
  ours leaves it off: the same compute in both).

A step is everything from drawing the prompts to the optimiser step: generation, grading and the
update. The first step of each trainer is a warm-up and is excluded from the median.

Where each second goes (``Phases``): the same four phases are timed in both trainers by wrapping the
functions that do them, each counting only its own time (a log-prob forward inside generation counts
as log-probs):

- generation: sampling the completions and scoring them (ours: the rollout runner; TRL:
  ``_generate_and_score_completions``);
- log-probs: the forward passes that recompute the completions' log-probabilities (ours:
  ``Policy.logprobs`` and the pass's shared prompt, ``Policy.pass_prefix``; TRL:
  ``_get_per_token_logps_and_entropies``);
- backward: ``Tensor.backward`` (ours: and ``PassPrefix.backward``, the shared prompt's);
- optimiser: gradient clipping and the AdamW step (ours: ``AdamW.step``; casting the fp32 master
  weights back into a bf16 model counts as other; TRL: between the Trainer's ``on_pre_optimizer_step``
  and ``on_optimizer_step``);
- other: the rest of the step (data, loss terms, bookkeeping).

    python benchmarks/grpo_vs_trl.py                  # SmolLM2-135M, 6 steps each
    python benchmarks/grpo_vs_trl.py --dtype fp32
    python benchmarks/grpo_vs_trl.py --tiny --steps 2 # seconds: a tiny random model, for a smoke test

Needs ``pip install trl`` (tested with trl 1.16.0, which installs on CPU).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from agents import SingleAgent
from agents.single import SINGLE_SYSTEM_PROMPT
from longshort.config import load_config
from longshort.data import Problem
from longshort.models import load_model, tiny_model
from longshort.rewards import register_reward
from longshort.data.synthetic import synthetic_problems
from longshort.trainers.grpo import GRPOTrainer
from longshort.trainers.policy import PassPrefix, Policy
from longshort.verify import Verifier

PROMPTS, SAMPLES, MICRO_BATCH = 8, 4, 8
FORMAT_BONUS, TOKEN_COST = 0.5, 0.005
_CHECKER = SingleAgent("single")
_VERIFIER = Verifier()


def reward(text: str, finish_reason: str, tokens: int, gold: str) -> float:
    """The benchmark's reward, identical in both trainers: correctness + format bonus - token cost."""
    correct = _VERIFIER.grade(text.rsplit("</think>", 1)[-1], gold).correct
    well_formed = _CHECKER.check_format(text, finish_reason).ok
    return float(correct) + FORMAT_BONUS * float(well_formed) - TOKEN_COST * tokens


@register_reward("grpo_vs_trl")
def _reward_term(group, role, ctx) -> list[float]:
    """``reward`` as a longshort reward term (a single-turn episode has one turn)."""
    return [reward(ep.turns[0].text, ep.turns[0].finish_reason, ep.turns[0].num_tokens, ep.gold)
            if ep.turns else 0.0 for ep in group]


PHASES = ("generation", "log-probs", "backward", "optimiser")


class Phases:
    """Exclusive time per phase: wrapped functions add their own time, less that of wrapped calls inside."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            began = time.perf_counter()
            self._stack.append(0.0)
            try:
                return original(*args, **kwargs)
            finally:
                elapsed, nested = time.perf_counter() - began, self._stack.pop()
                self.seconds[phase] += elapsed - nested
                if self._stack:
                    self._stack[-1] += elapsed

        self._restore.append((owner, name, vars(owner).get(name, _ABSENT)))  # absent: an instance's class method
        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        """The seconds since the last ``take``."""
        taken, self.seconds = dict(self.seconds), defaultdict(float)
        return taken

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            if original is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._restore.clear()


_ABSENT = object()


def common_phases() -> Phases:
    """The phases timed the same way in both trainers: backward and gradient clipping."""
    phases = Phases()
    phases.wrap(torch.Tensor, "backward", "backward")
    phases.wrap(torch.nn.utils, "clip_grad_norm_", "optimiser")
    return phases


@dataclass
class Run:
    name: str
    seconds: list[float] = field(default_factory=list)  # per step
    rewards: list[float] = field(default_factory=list)  # mean reward of each step's completions
    phases: list[dict[str, float]] = field(default_factory=list)  # per step: seconds per phase

    def phase_s(self, phase: str) -> float:
        """Median seconds per step of ``phase`` (``other``: the step's time outside the four phases)."""
        timed = list(zip(self.seconds, self.phases))[1:] or list(zip(self.seconds, self.phases))
        if phase == "other":
            return statistics.median(total - sum(p.get(name, 0.0) for name in PHASES) for total, p in timed)
        return statistics.median(p.get(phase, 0.0) for _, p in timed)

    @property
    def step_s(self) -> float:
        timed = self.seconds[1:] or self.seconds
        return statistics.median(timed)


# ---------------------------------------------------------------------------------------------- ours
def run_ours(model, tokenizer, problems: list[Problem], args) -> Run:
    config = load_config(None, [
        "agents.single.type=single", f"agents.single.sampling.temperature={args.temperature}",
        f"agents.single.sampling.max_new_tokens={args.max_new_tokens}",
        "env.name=single_turn", f"env.max_total_tokens={args.max_new_tokens}",
        f"rollout.group_size={SAMPLES}", f"rollout.problems_per_step={PROMPTS}",
        f"rollout.max_batch_size={PROMPTS * SAMPLES}", "rewards.weights.single.grpo_vs_trl=1.0",
        "trainer.algorithm=group_norm", "trainer.schedule=joint", f"trainer.steps={args.steps}",
        f"trainer.lr={args.lr}", "trainer.warmup_ratio=0.0", "trainer.kl_coef=0.0", "trainer.clip_eps=0.2",
        "trainer.updates_per_batch=1", f"trainer.micro_batch_size={MICRO_BATCH}", "trainer.grad_clip=1.0",
        f"seed={args.seed}"])
    run = Run("longshort")
    phases = common_phases()
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(config, problems, out, {"single": (model, tokenizer)}, save_episodes=False,
                              progress=False)
        phases.wrap(trainer.runner, "run", "generation")
        phases.wrap(Policy, "logprobs", "log-probs")
        phases.wrap(Policy, "pass_prefix", "log-probs")
        phases.wrap(PassPrefix, "backward", "backward")
        phases.wrap(torch.optim.AdamW, "step", "optimiser")
        try:
            for step in range(args.steps):
                phases.take()
                began = time.perf_counter()
                metrics = trainer.step(step)
                run.seconds.append(time.perf_counter() - began)
                run.phases.append(phases.take())
                run.rewards.append(metrics["reward/single/total"])
                report(run, step)
        finally:
            phases.restore()
    return run


# ---------------------------------------------------------------------------------------------- TRL
def run_trl(model, tokenizer, problems: list[Problem], args) -> Run:
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer as TRLGRPOTrainer

    run = Run("TRL")
    eos_ids = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
    batch_rewards: list[float] = []

    def trl_reward(prompts, completions, completion_ids, gold, **_) -> list[float]:
        values = []
        for completion, ids, answer in zip(completions, completion_ids, gold, strict=True):
            finish = "stop" if ids and ids[-1] in eos_ids else "length"
            values.append(reward(completion[0]["content"], finish, len(ids), answer))
        batch_rewards.extend(values)
        return values

    phases = common_phases()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            phases.take()
            self.began = time.perf_counter()

        def on_pre_optimizer_step(self, *_, **__):  # the Trainer's optimizer.step() runs between these two
            self.optimizer_began = time.perf_counter()

        def on_optimizer_step(self, *_, **__):
            phases.seconds["optimiser"] += time.perf_counter() - self.optimizer_began

        def on_step_end(self, *_, **__):
            run.seconds.append(time.perf_counter() - self.began)
            run.phases.append(phases.take())
            run.rewards.append(sum(batch_rewards) / max(len(batch_rewards), 1))
            batch_rewards.clear()
            report(run, len(run.seconds) - 1)

    rows = [{"prompt": [{"role": "system", "content": SINGLE_SYSTEM_PROMPT},
                        {"role": "user", "content": p.prompt}], "gold": p.answer} for p in problems]
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=MICRO_BATCH,
            gradient_accumulation_steps=PROMPTS * SAMPLES // MICRO_BATCH, num_generations=SAMPLES,
            max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0,
            learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0, max_grad_norm=1.0,
            beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
            max_steps=args.steps, use_cpu=True, bf16=next(model.parameters()).dtype == torch.bfloat16,
            gradient_checkpointing=False, logging_steps=1, report_to="none", save_strategy="no",
            disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
        trainer = TRLGRPOTrainer(model=model, reward_funcs=trl_reward, args=config,
                                 train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                 callbacks=[StepTimer()])
        trainer.remove_callback(PrinterCallback)  # our StepTimer reports each step
        phases.wrap(trainer, "_generate_and_score_completions", "generation")
        phases.wrap(trainer, "_get_per_token_logps_and_entropies", "log-probs")
        try:
            trainer.train()
        finally:
            phases.restore()
    return run


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def report(run: Run, step: int) -> None:
    print(f"  {run.name:9s} step {step + 1}: {run.seconds[-1]:6.1f} s  reward {run.rewards[-1]:+.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="alias, local directory or Hub id")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (smoke test)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), bf16 or fp32, for both")
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps of each trainer")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("longshort", "trl"), help="run one trainer")
    args = parser.parse_args()

    def fresh():
        if args.tiny:
            return tiny_model(seed=args.seed)
        return load_model(args.model, dtype=args.dtype, device="cpu")

    problems = synthetic_problems(PROMPTS * args.steps, min_steps=1, max_steps=2, seed=args.seed)
    probe, _ = fresh()
    print(f"model={'tiny' if args.tiny else args.model} dtype={next(probe.parameters()).dtype} "
          f"{PROMPTS} prompts x {SAMPLES} samples, {args.max_new_tokens} new tokens, {args.steps} steps, "
          f"lr={args.lr}, threads={torch.get_num_threads()}")
    del probe
    runs = []
    for name, runner in (("longshort", run_ours), ("trl", run_trl)):
        if args.only in (None, name):
            torch.manual_seed(args.seed)
            runs.append(runner(*fresh(), problems, args))

    print(f"\n{'trainer':10s} {'s/step (median, after step 1)':>30s} {'mean reward':>12s} {'last step':>10s}")
    for run in runs:
        print(f"{run.name:10s} {run.step_s:30.1f} {statistics.mean(run.rewards):12.3f} {run.rewards[-1]:10.3f}")
    print(f"\nseconds per step by phase (median, after step 1)\n{'phase':12s}"
          + "".join(f"{run.name:>12s}" for run in runs))
    for phase in (*PHASES, "other"):
        print(f"{phase:12s}" + "".join(f"{run.phase_s(phase):12.2f}" for run in runs))
    if len(runs) == 2:
        ours, trl = runs
        print(f"\nTRL s/step / longshort s/step = {trl.step_s / ours.step_s:.2f}x (target >= 3.5x)")


if __name__ == "__main__":
    main()
