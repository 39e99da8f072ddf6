"""The embedded GRPO/PPO trainer for N policies: one process, PyTorch + transformers, CPU or one GPU.

One RL step (``GRPOTrainer.step``):

1. draw ``rollout.problems_per_step`` problems (seeded, cycling through the training set);
2. roll out ``group_size`` episodes per problem with every agent acting, trained or frozen;
3. for each agent the schedule trains at this step:
   - **advantages** (``GRPOTrainer.samples``): the agent's ``episode.totals[role]`` per group,
     through the estimator ``trainer.algorithm`` (``longshort.algos``), over the episodes it acted in;
   - **loss and update** (``GRPOTrainer.update``): ``updates_per_batch`` passes over its training
     samples in micro-batches; each recomputes the action tokens' log-probabilities, takes the
     PPO-clip loss against the rollout's (+ ``kl_coef`` x KL to the reference), accumulates
     gradients, and the pass ends with one clipped AdamW step.

Every trainable agent owns its model (two agents on the same base model get two copies), optimiser
and engine, so the next rollout samples from the updated weights with no synchronisation. Agents
with ``trainable: false`` keep their weights for the whole run.

Outputs in ``out_dir``: ``metrics.jsonl``, ``tensorboard/``, ``episodes/step_XXXX.jsonl`` and
``checkpoints/step_XXXX/<role>/`` (HF model + tokenizer + optimiser state) with the trainer state
(step, data cursor, RNG states). Constructed again on the same ``out_dir`` with the same starting
models, the trainer resumes from the last checkpoint.

Resuming restores every piece of state (weights, AdamW, schedules, data cursor, the engines' and the
global RNGs), so a run whose rollouts are reproducible continues bit for bit, as a single-engine run
does (``tests/test_grpo.py``). Two engines (two policies) are not reproducible run to run, resumed or
not: the HF engine starts a batch with whatever requests are pending, and when one agent's turns
finish at different decode steps, which of them reach the partner's engine before its batch starts
depends on thread timing; that changes which random number each request draws and its padding.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from longshort.algos import ADVANTAGE_ESTIMATORS, compute_advantages, masked_sum, ppo_clip_loss
from longshort.config import Config, ConfigError
from longshort.data import Problem
from longshort.engines.hf import HFEngine
from longshort.errors import UserError
from longshort.episode import Episode, TrainingSample, save_episodes
from longshort.models import load_configured, model_key
from longshort.paths import write_atomically
from longshort.rollout import build_runner
from longshort.trainers.metrics import MetricsLogger, episode_metrics, group_metrics
from longshort.trainers.policy import MicroBatch, Policy
from longshort.trainers.schedule import ProblemStream, Schedule

ModelPair = tuple  # (PreTrainedModel, tokenizer)
logger = logging.getLogger(__name__)

# Config keys a resumed run may change: they decide where the run writes, how often it logs and
# checkpoints, and what the other stages do, never what an RL step computes. Everything else under
# seed, agents, env, rollout, verify, rewards and trainer must match the checkpoint's.
RESUMABLE_CHANGES = ("trainer.save_every", "trainer.log_every", "rollout.max_batch_size", "rollout.pack_weights")
RUN_SECTIONS = ("seed", "agents", "env", "rollout", "verify", "rewards", "trainer")


LOW_DISK = 2**30  # bytes free below which a failed checkpoint write is reported as the disk being full


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (usually a full disk); the previous one is kept."""


class ResumeMismatch(ConfigError):
    """A checkpoint made with another training config: resuming it would silently mix two runs."""


def run_key(config: Config, problems: Sequence[Problem]) -> dict:
    """The settings an RL checkpoint belongs to, flattened to dotted keys, plus the training problems.

    Resuming with any other value would not continue the run: LambdaLR restores the old ``trainer.lr``
    (its ``base_lrs``), another ``trainer.steps`` or ``phase_steps`` moves the cosine horizon mid-run,
    another ``seed`` reshuffles the problem stream under the old cursor. Allowed to change:
    ``RESUMABLE_CHANGES`` (``trainer.save_every``, ``trainer.log_every``, ``rollout.max_batch_size``,
    ``rollout.pack_weights``)
    and every section outside ``RUN_SECTIONS`` (name, output_dir, stages, data, sft, eval, backend).
    """
    flat: dict = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif prefix not in RESUMABLE_CHANGES:
            flat[prefix] = value

    settings = dataclasses.asdict(config)
    walk({section: settings[section] for section in RUN_SECTIONS}, "")
    flat["train_problems"] = [problem.id for problem in problems]
    return flat


def _differences(saved: dict, current: dict) -> str:
    keys = sorted(set(saved) | set(current))
    parts = []
    for key in keys:
        if saved.get(key, "<unset>") != current.get(key, "<unset>"):
            if key == "train_problems":
                parts.append("the training problems (data/train.jsonl)")
            else:
                parts.append(f"{key} ({saved.get(key, '<unset>')!r} -> {current.get(key, '<unset>')!r})")
    return ", ".join(parts)


class GRPOTrainer:
    """Multi-turn, multi-agent GRPO (or REINFORCE++-baseline / RLOO advantages) with PPO-clip.

    ``models`` maps roles to already loaded ``(model, tokenizer)`` pairs (e.g. the SFT stage's
    output); roles not in it are loaded from ``agents.<role>.model``. The trainer takes ownership of
    the models it is given: trainable ones are updated in place and switched to eval mode.
    ``save_episodes`` writes every step's episodes as JSONL; ``progress`` shows a console bar.
    """

    def __init__(self, config: Config, train_problems: Sequence[Problem], out_dir: str | Path,
                 models: Mapping[str, ModelPair] | None = None, *, save_episodes: bool = True,
                 progress: bool = True):
        self.config = config
        self.out_dir = Path(out_dir)
        self.save_episodes = save_episodes
        self.progress = progress
        tc = config.trainer
        ADVANTAGE_ESTIMATORS.get(tc.algorithm)  # an unknown name fails now, not after the first rollout
        if config.rollout.engine != "hf":
            raise ValueError(f"the embedded trainer generates with the 'hf' engine; got rollout.engine="
                             f"{config.rollout.engine} (use backend.name=openrlhf for vLLM)")
        trainable = tuple(role for role, spec in config.agents.items() if spec.trainable)
        unscored = [role for role in trainable if not config.rewards.weights.get(role)]
        for role in unscored:  # its advantages would all be 0: frozen, and said so, rather than "trained"
            logger.warning("rl: agent '%s' has no reward terms (rewards.weights.%s is empty), so it acts but is "
                           "not trained; give it terms (e.g. %s: {correctness: 1.0}) to train it", role, role, role)
        trainable = tuple(role for role in trainable if role not in unscored)
        if not trainable:
            raise ValueError("no agent is trainable: set agents.<role>.trainable: true and rewards.weights.<role> "
                             "for at least one agent")
        self.schedule = Schedule(tc.schedule, trainable, tc.first_agent, tc.phase_steps)
        self.stream = ProblemStream(train_problems, config.seed)
        self.run_key = run_key(config, train_problems)

        held = _own_models(config, dict(models or {}))
        self.engines: dict[str, HFEngine] = {}
        by_model: dict[int, HFEngine] = {}
        for role, (model, tokenizer) in held.items():
            if id(model) not in by_model:  # seeds differ per engine so agents draw independent samples
                by_model[id(model)] = HFEngine(model, tokenizer, max_batch_size=config.rollout.max_batch_size,
                                               seed=config.seed + len(by_model),
                                               kv_cache_budget=config.rollout.kv_cache_budget,
                                               pack_weights=config.rollout.pack_weights)
            self.engines[role] = by_model[id(model)]
        self.policies: dict[str, Policy] = {}
        for role, (model, tokenizer) in held.items():
            if role in trainable:
                steps = self.schedule.updates_of(role, tc.steps) * tc.updates_per_batch
                self.policies[role] = Policy(role, model, tokenizer, tc, optimizer_steps=steps,
                                             temperature=config.agents[role].sampling.temperature)
            else:
                model.requires_grad_(False)
        self.runner = build_runner(config, self.engines)

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Path]:
        """Run (or resume) the RL steps; returns each trained agent's final HF model directory."""
        tc = self.config.trainer
        start = self.resume()
        with MetricsLogger(self.out_dir, tc.steps, start_step=start, progress=self.progress,
                           config=self.config) as logger:
            for step in range(start, tc.steps):
                metrics = self.step(step)
                done = step + 1
                logger.log(done, metrics, write=done % tc.log_every == 0 or done == tc.steps)
                if done % tc.save_every == 0 or done == tc.steps:
                    self.save(done)
        return self.model_dirs()

    def rollout(self, problems: list[Problem]) -> list[list[Episode]]:
        """Play ``rollout.group_size`` episodes of each problem, then free what only generation needed.

        Freed, not trimmed: the engines decode in this thread (``engines.model_thread``), so the update
        reuses the rollout's freed heap memory as it is, and ``malloc_trim`` here and after the update
        only made the next phase page it in again (``longshort/memory.py`` has the measurements)."""
        groups = self.runner.run(problems, self.config.rollout.group_size)
        for engine in self.engines.values():  # not held through the update: laid out again from the new weights
            engine.drop_packed_weights()
        return groups

    def step(self, step: int) -> dict:
        """One RL step (0-based): roll out, then update the agents the schedule trains now."""
        cfg = self.config
        began = time.perf_counter()
        groups = self.rollout(self.stream.take(cfg.rollout.problems_per_step))
        rolled = time.perf_counter()
        episodes = [episode for group in groups for episode in group]
        if self.save_episodes:
            (self.out_dir / "episodes").mkdir(parents=True, exist_ok=True)
            save_episodes(episodes, self.out_dir / "episodes" / f"step_{step + 1:04d}.jsonl")
        metrics: dict = {**episode_metrics(episodes, list(cfg.agents)), **group_metrics(groups, list(cfg.agents))}
        trained = self.schedule.trained(step)
        for role in trained:
            stats = self.update(self.policies[role], self.samples(groups, role))
            metrics.update({f"train/{role}/{name}": value for name, value in stats.items()})
        finished = time.perf_counter()
        metrics.update({"trained": list(trained), "time/rollout_s": rolled - began,
                        "time/update_s": finished - rolled, "time/step_s": finished - began})
        return metrics

    # ------------------------------------------------------------------ advantages
    def samples(self, groups: list[list[Episode]], role: str) -> list[TrainingSample]:
        """``role``'s training samples, each carrying its advantage.

        Rewards are ``episode.totals[role]`` shaped ``[n_groups, G]``; episodes the agent did not
        act in are masked out of the group statistics (``longshort.algos``) and have no sample.
        """
        rewards = torch.tensor([[ep.totals.get(role, 0.0) for ep in group] for group in groups])
        acted = torch.tensor([[any(t.role == role for t in ep.turns) for ep in group] for group in groups])
        advantages = compute_advantages(self.config.trainer.algorithm, rewards, acted)
        acting = [ep for group in groups for ep in group if any(t.role == role for t in ep.turns)]
        samples = self.runner.training_samples(acting, role)
        for sample, advantage in zip(samples, advantages[acted].tolist(), strict=True):
            sample.advantage = advantage
        return samples

    # ------------------------------------------------------------------ the loss and the update
    def update(self, policy: Policy, samples: list[TrainingSample]) -> dict[str, float]:
        """``updates_per_batch`` optimiser steps on one agent's samples; returns its training stats.

        The loss is normalised by the action tokens of *all* samples (token-mean over the batch,
        ``algos.ppo_clip_loss``), so micro-batches accumulate to the full-batch gradient. Without a
        KL term a sample with advantage 0 contributes exactly nothing to that gradient, so it is not
        run through the model at all (it still counts in the normaliser): in a small run most groups
        are all-fail or all-pass, and skipping them is most of the update time. With no sample left,
        the pass makes no AdamW step (``Policy.step``).
        """
        tc = self.config.trainer
        total_tokens = sum(sum(sample.action_mask) for sample in samples)
        active = samples if policy.reference is not None else [s for s in samples if s.advantage != 0.0]
        active = sorted(active, key=lambda s: len(s.input_ids))  # similar lengths share a micro-batch: less padding
        batches = [MicroBatch.collate(active[i: i + tc.micro_batch_size], policy.pad_id, policy.device)
                   for i in range(0, len(active), tc.micro_batch_size)]
        with torch.no_grad():
            refs = [policy.logprobs(b, reference=True)[0] if policy.reference is not None else None for b in batches]
        sums = dict.fromkeys(("policy_loss", "kl", "entropy", "clipped", "logprob_err", "grad_norm", "lr"), 0.0)
        tokens = sum(float(b.action_mask.sum()) for b in batches)
        policy.train_mode()
        try:
            for update in range(tc.updates_per_batch):
                policy.zero_grad()
                prefix = policy.pass_prefix(batches)  # the system prompt: once per pass, not per micro-batch
                for batch, ref in zip(batches, refs):
                    logprobs, entropy = policy.logprobs(batch, with_entropy=update == 0, prefix=prefix)
                    terms = ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, batch.action_mask,
                                          clip_eps=tc.clip_eps, normalizer=max(total_tokens, 1), ref_logprobs=ref,
                                          kl_coef=tc.kl_coef, kl_estimator=tc.kl_estimator)
                    terms.loss.backward()
                    policy.accumulate_grads()
                    sums["policy_loss"] += float(terms.policy_loss)
                    sums["kl"] += float(terms.kl)
                    sums["clipped"] += float(terms.clipped_tokens)
                    if update == 0:  # how far the recomputed log-probs are from the rollout's (~0 is healthy)
                        sums["entropy"] += float(masked_sum(entropy, batch.action_mask))
                        sums["logprob_err"] += float(masked_sum((logprobs.detach() - batch.old_logprobs).abs(),
                                                                batch.action_mask))
                if prefix is not None:
                    prefix.backward()
                    policy.accumulate_grads()
                sums["lr"] += policy.lr
                sums["grad_norm"] += policy.step()
        finally:
            policy.eval_mode()
        passes, seen = tc.updates_per_batch, max(tokens, 1.0)
        stats = {"policy_loss": sums["policy_loss"] / passes, "grad_norm": sums["grad_norm"] / passes,
                 "lr": sums["lr"] / passes, "clip_frac": sums["clipped"] / (seen * passes),
                 "entropy": sums["entropy"] / seen, "logprob_err": sums["logprob_err"] / seen,
                 "samples": float(len(samples)), "trained_samples": float(len(active)),
                 "tokens": float(total_tokens),
                 "adv_abs_mean": sum(abs(s.advantage) for s in samples) / max(len(samples), 1)}
        if policy.reference is not None:
            stats["kl"] = sums["kl"] / (seen * passes)
        return stats

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    def save(self, step: int) -> Path:
        """Write ``checkpoints/step_XXXX`` atomically (a temporary folder renamed into place), then
        remove older checkpoints: only the newest is needed to resume."""
        final = self.checkpoint_root / f"step_{step:04d}"
        state = {"step": step, "data_cursor": self.stream.cursor,
                 "trained_next": list(self.schedule.trained(step)) if step < self.config.trainer.steps else [],
                 "python_rng": random.getstate(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "engine_rng": {role: engine.random_state() for role, engine in self.engines.items()},
                 "run_key": json.dumps(self.run_key, sort_keys=True)}

        def write(tmp: Path) -> None:
            tmp.mkdir()
            for role, policy in self.policies.items():
                policy.save(tmp / role, optimizer=step < self.config.trainer.steps)
            torch.save(state, tmp / "trainer_state.pt")
            (tmp / "state.json").write_text(json.dumps(
                {key: state[key] for key in ("step", "data_cursor", "trained_next")}) + "\n")

        try:
            write_atomically(final, write)
        except (OSError, RuntimeError) as err:  # torch reports a short write as RuntimeError
            free = shutil.disk_usage(self.checkpoint_root).free
            if isinstance(err, RuntimeError) and free > LOW_DISK:
                raise
            previous = self.latest_checkpoint()
            size = f"; a checkpoint of these agents takes {_size(previous) / 2**30:.1f} GiB" if previous else ""
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise CheckpointWriteError(
                f"could not write the step-{step} checkpoint under {self.checkpoint_root} ({reason}); "
                f"{free / 2**30:.1f} GiB free on that disk{size}. Free some space and run the same command "
                f"again: it resumes from {previous.name if previous else 'the start of RL'}") from err
        for old in self.checkpoint_root.glob("step_*"):
            if old != final:
                shutil.rmtree(old)
        return final

    def latest_checkpoint(self) -> Path | None:
        found = sorted(p for p in self.checkpoint_root.glob("step_*") if (p / "trainer_state.pt").is_file())
        return found[-1] if found else None

    def resume(self) -> int:
        """Restore the newest checkpoint, if any; returns the number of RL steps already done.

        Raises ``ResumeMismatch`` (one line naming every differing key and the fix) when the checkpoint
        was made with another training config; see ``run_key`` for what may change."""
        checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            return 0
        state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
        if "run_key" in state:  # checkpoints written before the key existed resume unchecked
            differs = _differences(json.loads(state["run_key"]), self.run_key)
            if differs:
                raise ResumeMismatch(
                    f"rl: the checkpoint {checkpoint} was made with another training config: {differs}; "
                    f"put the old values back to resume it, or start a new run (another output_dir, or "
                    f"delete {self.checkpoint_root})")
        logger.info("rl: resuming from %s (%d of %d steps done)", checkpoint, state["step"], self.config.trainer.steps)
        for role, policy in self.policies.items():
            policy.load(checkpoint / role)
        self.stream.cursor = state["data_cursor"]
        random.setstate(state["python_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for role, engine in self.engines.items():
            engine_rng = state["engine_rng"][role]
            if isinstance(engine_rng, torch.Tensor):  # a torch generator's state: before per-request streams
                logger.warning("rl: %s was saved before the engine drew per-request random streams; sampling "
                               "after this resume differs from an uninterrupted run", checkpoint)
            else:
                engine.set_random_state(engine_rng)
        return state["step"]

    def model_dirs(self) -> dict[str, Path]:
        """Each trained agent's model in the newest checkpoint (what evaluation should load)."""
        checkpoint = self.latest_checkpoint()
        return {role: checkpoint / role for role in self.policies} if checkpoint else {}


def _own_models(config: Config, given: dict[str, ModelPair]) -> dict[str, ModelPair]:
    """A ``(model, tokenizer)`` per role, loading those not given. A trainable agent never shares its
    model object with another agent (it would move the other's weights): it gets a deep copy.
    Frozen agents with the same model share one object, and so one engine and its batches."""
    loaded: dict[tuple, ModelPair] = {}
    held: dict[str, ModelPair] = {}
    claimed: dict[int, bool] = {}  # model id -> whether a trainable agent holds it
    for role, spec in config.agents.items():
        if role in given:
            model, tokenizer = given[role]
        else:
            key = model_key(spec.model)
            if key not in loaded:
                loaded[key] = load_configured(spec.model)
            model, tokenizer = loaded[key]
        if id(model) in claimed and (spec.trainable or claimed[id(model)]):
            model = copy.deepcopy(model)
        claimed[id(model)] = claimed.get(id(model), False) or spec.trainable
        held[role] = (model, tokenizer)
    return held


def _size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
