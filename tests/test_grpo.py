"""The embedded GRPO trainer on tiny random models: it learns, trains the right agent at the right step,
keeps frozen agents frozen, logs, checkpoints, and resumes a killed run exactly.

The agents here write free text for one turn each (``solo_test``: one agent; ``duo_test``: ``a`` then
``b``), and the reward is the fraction of an agent's own tokens with an even id: dense, about 0.5 for
a random model, and learnable in a few steps.
"""
from __future__ import annotations

import copy
import json
from statistics import fmean

import pytest
import torch

from agents import Agent, FormatResult, register_agent
from envs import Env, register_env
from longshort.algos import compute_advantages
from longshort.config import AgentConfig, Config, EnvConfig, RewardsConfig, RolloutConfig, SamplingConfig, TrainerConfig
from longshort.data import Problem
from longshort.engines.packed_weights import applies as packed_weights_apply
from longshort.models import load_model, tiny_model
from longshort.rewards import register_reward
from longshort.trainers import GRPOTrainer
from longshort.trainers.grpo import ResumeMismatch
from longshort.trainers.optim import cosine_with_warmup
from longshort.trainers.schedule import ProblemStream, Schedule

PROBLEMS = [Problem(f"p{i}", f"Say {i}.", "0") for i in range(6)]


@register_agent("free_test")
class FreeAgent(Agent):
    system_prompt = "Write."

    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        return FormatResult(True, "think")  # never final: the turn cap ends the episode, nothing to verify


@register_env("solo_test")
class SoloEnv(Env):
    roles = ("solo",)

    def first_role(self) -> str:
        return "solo"


@register_env("duo_test")
class DuoEnv(Env):
    roles = ("a", "b")

    def first_role(self) -> str:
        return "a"

    def next_role(self, turn, result) -> str:
        return "b"


@register_reward("even_tokens_test")
def even_tokens(group, role, ctx) -> list[float]:
    values = []
    for episode in group:
        ids = [i for turn in episode.turns if turn.role == role for i in turn.action_ids]
        values.append(fmean(i % 2 == 0 for i in ids) if ids else 0.0)
    return values


def make_config(roles=("solo",), *, frozen=(), steps=3, new_tokens=8, temperature=1.0, **trainer) -> Config:
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=new_tokens)
    return Config(
        seed=7,
        agents={role: AgentConfig(type="free_test", sampling=sampling, trainable=role not in frozen) for role in roles},
        env=EnvConfig(name="solo_test" if roles == ("solo",) else "duo_test", max_turns=len(roles), max_total_tokens=64),
        rollout=RolloutConfig(group_size=4, problems_per_step=3, max_batch_size=32),
        rewards=RewardsConfig(weights={role: {"even_tokens_test": 1.0} for role in roles}),
        trainer=TrainerConfig(**{"steps": steps, "lr": 3e-3, "schedule": "joint", "warmup_ratio": 0.0, "save_every": 100,
                                 "micro_batch_size": 4, **trainer}),
    )


def tiny_pair(seed: int = 0):
    return tiny_model(seed=seed, hidden_size=32, num_layers=1, num_heads=2)


def trainer_for(config: Config, out_dir, models=None) -> GRPOTrainer:
    models = models or {role: tiny_pair() for role in config.agents}
    return GRPOTrainer(config, PROBLEMS, out_dir, models, progress=False)


def snapshot(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def changed(model, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- learning


def test_rl_raises_the_reward(tmp_path):
    config = make_config(steps=20, lr=3e-2)
    trainer = trainer_for(config, tmp_path)
    policy = trainer.policies["solo"]
    ids = torch.tensor([trainer.runner.agents["solo"].prefix_ids(p.prompt, policy.tokenizer) for p in PROBLEMS[:1]])

    def even_mass() -> float:  # probability of an even token at the first generated position
        with torch.no_grad():
            probs = torch.softmax(policy.model(input_ids=ids).logits[0, -1].float(), dim=-1)
        return float(probs[0::2].sum())

    before = even_mass()
    trainer.train()
    rewards = [m["reward/solo/total"] for m in read_metrics(tmp_path)]
    assert fmean(rewards[-4:]) > fmean(rewards[:4]) + 0.1, rewards
    assert even_mass() > before + 0.15


def test_recomputed_logprobs_match_the_rollout_and_stats_are_sane(tmp_path):
    trainer = trainer_for(make_config(steps=1, kl_coef=0.05, temperature=0.7), tmp_path)
    metrics = trainer.step(0)
    assert metrics["train/solo/logprob_err"] < 1e-4  # same tokens, positions and temperature as the engine
    assert metrics["train/solo/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the step
    assert metrics["train/solo/clip_frac"] == 0.0  # first pass: ratio 1
    assert 0 < metrics["train/solo/entropy"] <= torch.log(torch.tensor(len(trainer.policies["solo"].tokenizer)))
    assert metrics["train/solo/grad_norm"] > 0 and metrics["train/solo/samples"] == 12
    assert trainer.step(1)["train/solo/kl"] > 0  # the policy has moved away from the reference


def test_several_passes_per_batch_step_the_optimiser_each_time_and_clip(tmp_path):
    trainer = trainer_for(make_config(steps=2, updates_per_batch=3, lr=3e-2), tmp_path)
    metrics = trainer.step(0)
    assert trainer.policies["solo"].scheduler.last_epoch == 3
    assert metrics["train/solo/clip_frac"] > 0  # later passes move the ratio away from 1


def test_no_reference_model_without_a_kl_term(tmp_path):
    trainer = trainer_for(make_config(steps=1), tmp_path)
    assert trainer.policies["solo"].reference is None
    assert "train/solo/kl" not in trainer.step(0)


# ------------------------------------------------------------------------------------------- schedules


def test_joint_schedule_updates_every_trainable_agent_at_every_step(tmp_path):
    trainer = trainer_for(make_config(("a", "b"), schedule="joint"), tmp_path)
    for step in range(2):
        before = {role: snapshot(p.model) for role, p in trainer.policies.items()}
        assert trainer.step(step)["trained"] == ["a", "b"]
        assert all(changed(p.model, before[role]) for role, p in trainer.policies.items())


def test_alternating_schedule_trains_one_agent_per_phase_starting_with_first_agent(tmp_path):
    shared = tiny_pair()  # both agents on one base model: each must get its own copy
    config = make_config(("a", "b"), schedule="alternating", first_agent="b", phase_steps=2, steps=6)
    trainer = trainer_for(config, tmp_path, {"a": shared, "b": shared})
    a, b = trainer.policies["a"].model, trainer.policies["b"].model
    assert a is not b and trainer.engines["a"] is not trainer.engines["b"]
    for step, expected in enumerate(["b", "b", "a", "a", "b"]):
        before = {"a": snapshot(a), "b": snapshot(b)}
        assert trainer.step(step)["trained"] == [expected]
        assert changed(trainer.policies[expected].model, before[expected])
        other = "a" if expected == "b" else "b"
        assert not changed(trainer.policies[other].model, before[other])
    # each policy's cosine schedule spans only the steps in which it trains (b: 4 of 6, a: 2 of 6):
    # cosine from 1 to 0 over 2 (a) and 4 (b) updates, no warm-up here; sized to 6 it would be 1, 0.93, ...
    factors = {role: [p.scheduler.lr_lambdas[0](s) for s in range(6)] for role, p in trainer.policies.items()}
    assert factors["a"][:2] == pytest.approx([1.0, 0.5]) and factors["a"][2] == 0.0
    assert factors["b"][:4] == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6) and factors["b"][4] == 0.0
    assert Schedule("alternating", ("a", "b"), "b", 2).updates_of("b", 6) == 4


def test_frozen_agents_act_but_never_train(tmp_path):
    frozen_model = tiny_pair(seed=1)
    config = make_config(("a", "b"), frozen=("b",), schedule="joint", steps=2)
    trainer = trainer_for(config, tmp_path, {"a": tiny_pair(), "b": frozen_model})
    before = snapshot(frozen_model[0])
    trainer.train()
    assert set(trainer.policies) == {"a"}
    assert not changed(frozen_model[0], before)
    metrics = read_metrics(tmp_path)
    assert all(m["trained"] == ["a"] and m["tokens/b"] > 0 for m in metrics)  # b acted in every step
    assert "train/b/policy_loss" not in metrics[0]


def test_schedule_and_config_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="first_agent 'b' is not a trainable agent"):
        trainer_for(make_config(("a", "b"), frozen=("b",), schedule="alternating", first_agent="b"), tmp_path)
    with pytest.raises(ValueError, match="no agent is trainable"):
        trainer_for(make_config(("solo",), frozen=("solo",)), tmp_path)
    config = make_config()
    config.rewards.weights = {}
    with pytest.raises(ValueError, match="no agent is trainable.*rewards.weights"):
        trainer_for(config, tmp_path)


def test_an_agent_without_reward_terms_is_frozen_with_a_message(tmp_path, caplog):
    config = make_config(("a", "b"), schedule="joint", steps=1)
    del config.rewards.weights["b"]
    with caplog.at_level("WARNING", logger="longshort.trainers.grpo"):
        trainer = trainer_for(config, tmp_path)
    assert set(trainer.policies) == {"a"}
    assert "agent 'b' has no reward terms" in caplog.text and "not trained" in caplog.text
    metrics = trainer.step(0)
    assert metrics["trained"] == ["a"] and "train/b/policy_loss" not in metrics
    assert "reward/a/even_tokens_test" in metrics and not any(k.startswith("reward/b/") and k != "reward/b/total"
                                                              for k in metrics)


def test_problem_stream_is_seeded_and_cycles_through_every_problem():
    stream = ProblemStream(PROBLEMS, seed=3)
    first_epoch = stream.take(6)
    assert sorted(p.id for p in first_epoch) == sorted(p.id for p in PROBLEMS)
    second = stream.take(6)
    assert sorted(p.id for p in second) == sorted(p.id for p in PROBLEMS)
    assert [p.id for p in ProblemStream(PROBLEMS, seed=3, cursor=6).take(6)] == [p.id for p in second]


def test_cosine_schedule_with_warmup():
    factors = [cosine_with_warmup(s, total=10, warmup=2) for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert all(a >= b for a, b in zip(factors[2:], factors[3:])) and 0 < factors[-1] < 0.05


# ------------------------------------------------------------------------------------------- precision


def test_bf16_model_trains_through_fp32_master_weights(tmp_path):
    model, tokenizer = tiny_pair()
    model.to(torch.bfloat16)
    trainer = trainer_for(make_config(steps=1, lr=1e-6), tmp_path, {"solo": (model, tokenizer)})
    policy = trainer.policies["solo"]
    assert all(m.dtype == torch.float32 for m in policy.master)
    start = [m.detach().clone() for m in policy.master]
    trainer.step(0)
    # an update of relative size 1e-6 is invisible in bf16 but kept by the master weights ...
    assert any(not torch.equal(m, s) for m, s in zip(policy.master, start))
    # ... and the model always holds the master weights rounded to bf16
    assert all(torch.equal(p, m.to(torch.bfloat16)) for p, m in zip(policy.params, policy.master))
    # the applied gradients are not carried into the next rollout (fp32: 4 bytes a parameter), nor the
    # engine's laid-out weights (engines/packed_weights.py) into the update
    assert all(m.grad is None for m in policy.master) and all(p.grad is None for p in policy.params)
    packed = trainer.engines["solo"]._packed
    assert (packed is not None) == packed_weights_apply(model) and not (packed and packed._layers)
    unpacked = make_config(steps=1, lr=1e-6)
    unpacked.rollout.pack_weights = False  # the copies can be turned off
    other, tokenizer = tiny_pair()
    assert trainer_for(unpacked, tmp_path / "off", {"solo": (other.to(torch.bfloat16), tokenizer)}
                       ).engines["solo"]._packed is None
    # a checkpoint keeps the fp32 masters (tied embeddings included), so a resumed run continues from them
    trainer.save(1)
    fresh, tokenizer = tiny_pair()
    resumed = trainer_for(make_config(steps=1, lr=1e-6), tmp_path, {"solo": (fresh.to(torch.bfloat16), tokenizer)})
    assert resumed.resume() == 1
    assert all(torch.equal(a, b) for a, b in zip(resumed.policies["solo"].master, policy.master))
    assert all(torch.equal(a, b) for a, b in zip(resumed.policies["solo"].params, policy.params))


def test_gradient_checkpointing_recomputes_and_gives_the_same_update(tmp_path):
    norms, calls = [], []
    for checkpointing in (False, True):
        trainer = trainer_for(make_config(steps=1, gradient_checkpointing=checkpointing), tmp_path / str(checkpointing))
        mlp = trainer.policies["solo"].model.model.layers[0].mlp
        count = []
        mlp.register_forward_pre_hook(lambda *_: count.append(1) if torch.is_grad_enabled() else None)
        norms.append(trainer.step(0)["train/solo/grad_norm"])
        calls.append(len(count))
    assert calls[1] > calls[0] > 0  # the backward pass ran the layer again (row by row: see test_policy_logprobs)
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)


# ------------------------------------------------------------------------------------------- outputs


def test_metrics_episodes_tensorboard_and_checkpoints(tmp_path):
    config = make_config(("a", "b"), schedule="joint", steps=3, save_every=2, log_every=1)
    paths = trainer_for(config, tmp_path).train()
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    expected = {"episode/accuracy", "episode/finished", "episode/turns", "episode/tokens", "trained",
                "reward/a/even_tokens_test", "reward/a/total", "tokens/a", "format/a", "reward/b/total",
                "time/rollout_s", "time/update_s", "time/step_s", "groups/a/all_equal", "groups/b/all_equal",
                *(f"train/{r}/{k}" for r in "ab" for k in ("policy_loss", "entropy", "clip_frac", "grad_norm",
                                                          "lr", "samples", "tokens", "logprob_err"))}
    assert expected <= set(metrics[0])
    assert metrics[0]["episode/turns"] == 2 and metrics[0]["format/b"] == 1.0
    assert sorted(p.name for p in (tmp_path / "episodes").iterdir()) == [f"step_000{i}.jsonl" for i in (1, 2, 3)]
    assert len((tmp_path / "episodes" / "step_0001.jsonl").read_text().splitlines()) == 12
    assert any((tmp_path / "tensorboard").iterdir())
    # only the newest checkpoint is kept; it holds HF models that load_model reads
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0003"]
    assert json.loads((tmp_path / "checkpoints" / "step_0003" / "state.json").read_text())["data_cursor"] == 9
    model, _ = load_model(str(paths["a"]), dtype="fp32", device="cpu")
    trained = trainer_for(config, tmp_path / "again").policies  # a fresh trainer: different (initial) weights
    assert not torch.equal(next(model.parameters()), next(trained["a"].model.parameters()))


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_identically(tmp_path):
    """One engine (a single agent) decodes deterministically, so the resumed run must end with exactly
    the weights of the uninterrupted one."""
    config = make_config(steps=5, save_every=2)
    reference = trainer_for(config, tmp_path / "straight")
    reference.train()

    killed = trainer_for(config, tmp_path / "killed")
    real_step = killed.step

    def dies_in_step_four(step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(step)

    killed.step = dies_in_step_four
    with pytest.raises(KeyboardInterrupt):
        killed.train()  # steps 1-3 ran, the checkpoint holds step 2, step 3's metrics were written
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()] == ["step_0002"]

    resumed = trainer_for(config, tmp_path / "killed")  # started again: same config, same starting models
    resumed.train()
    for p, q in zip(resumed.policies["solo"].model.parameters(), reference.policies["solo"].model.parameters()):
        assert torch.equal(p, q)
    straight, again = read_metrics(tmp_path / "straight"), read_metrics(tmp_path / "killed")
    assert [m["step"] for m in again] == [1, 2, 3, 4, 5]
    for a, b in zip(straight, again):
        assert a["reward/solo/total"] == b["reward/solo/total"]
        assert a["train/solo/policy_loss"] == b["train/solo/policy_loss"]


def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, monkeypatch):
    import errno

    from longshort.errors import UserError
    from longshort.trainers.policy import Policy

    trainer = trainer_for(make_config(steps=3, save_every=1), tmp_path)
    real_save, saves = Policy.save, []

    def disk_fills_at_the_second_save(policy, directory, **kwargs):
        saves.append(directory)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(policy, directory, **kwargs)

    monkeypatch.setattr(Policy, "save", disk_fills_at_the_second_save)
    with pytest.raises(UserError, match="step-2 checkpoint") as err:
        trainer.train()
    message = str(err.value)
    assert "No space left on device" in message and "resumes from step_0001" in message and "\n" not in message
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0001"]  # no half-written folder
    monkeypatch.setattr(Policy, "save", real_save)
    assert trainer_for(make_config(steps=3, save_every=1), tmp_path).resume() == 1


def test_a_finished_run_started_again_does_nothing(tmp_path):
    config = make_config(steps=2)
    first = trainer_for(config, tmp_path).train()
    assert not list(tmp_path.rglob("optimizer.pt"))  # the last checkpoint keeps weights only
    again = trainer_for(config, tmp_path)
    assert again.train() == first
    assert len(read_metrics(tmp_path)) == 2


@pytest.mark.parametrize("change, message", [
    ({"trainer.lr": 1e-3}, r"trainer\.lr \(0\.003 -> 0\.001\)"),
    ({"trainer.steps": 4}, r"trainer\.steps \(3 -> 4\)"),
    ({"seed": 8}, r"seed \(7 -> 8\)"),
])
def test_resume_refuses_a_changed_training_config(tmp_path, change, message):
    config = make_config(steps=3, save_every=1)
    killed = trainer_for(config, tmp_path)
    real_step = killed.step

    def dies_in_step_two(step):
        if step == 1:
            raise KeyboardInterrupt
        return real_step(step)

    killed.step = dies_in_step_two
    with pytest.raises(KeyboardInterrupt):
        killed.train()  # step 1 checkpointed, then killed
    changed_config = make_config(steps=3, save_every=1)
    for key, value in change.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(changed_config, section) if section else changed_config, name, value)
    with pytest.raises(ResumeMismatch, match=message) as err:
        trainer_for(changed_config, tmp_path).train()
    assert "\n" not in str(err.value) and "start a new run" in str(err.value)
    allowed = make_config(steps=3, save_every=2, log_every=3)  # logging and checkpoint cadence may change,
    allowed.rollout.pack_weights = False  # and the engine's speed-for-memory trade (same numbers either way)
    assert trainer_for(allowed, tmp_path).resume() == 1


def test_skipping_zero_advantage_samples_leaves_the_gradient_unchanged(tmp_path):
    """Without a KL term the update runs only samples with a non-zero advantage; run with every sample
    (a reference model present, kl_coef 0: its term has zero gradient), the gradient must be the same."""
    trainer = trainer_for(make_config(steps=1, micro_batch_size=3), tmp_path)
    policy = trainer.policies["solo"]
    samples = trainer.samples(trainer.runner.run(PROBLEMS[:3], 4), "solo")
    for i, sample in enumerate(samples):
        sample.advantage = 0.0 if i % 3 else (1.0 if i % 2 else -0.5)  # 8 of 12 carry no signal
    grads = []
    policy.step = lambda: grads.append([p.grad.clone() for p in policy.master]) or 0.0
    skipped = trainer.update(policy, samples)
    policy.reference = copy.deepcopy(policy.model)
    every = trainer.update(policy, samples)
    assert (skipped["trained_samples"], every["trained_samples"]) == (4, 12)
    assert skipped["tokens"] == every["tokens"]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_the_prompt_shared_by_every_micro_batch_runs_once_with_the_same_gradient(tmp_path):
    """Micro-batches of one sample each share the chat-templated system prompt, which the update then
    encodes once per pass; the gradient equals one micro-batch of all samples."""
    trainer = trainer_for(make_config(steps=1), tmp_path)
    policy = trainer.policies["solo"]
    samples = trainer.samples(trainer.runner.run(PROBLEMS[:3], 4), "solo")
    for i, sample in enumerate(samples):
        sample.advantage = (1.0, -0.5, 0.25)[i % 3]
    grads, prefixes = [], []
    policy.step = lambda: grads.append([p.grad.clone() for p in policy.master]) or 0.0
    encode = policy.pass_prefix
    policy.pass_prefix = lambda batches: prefixes.append(encode(batches)) or prefixes[-1]
    for micro_batch_size in (1, len(samples)):
        trainer.config.trainer.micro_batch_size = micro_batch_size
        trainer.update(policy, samples)
    assert prefixes[0] is not None and prefixes[0].length >= 16 and prefixes[1] is None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["rloo", "reinforce_baseline"])
def test_other_advantage_estimators_train_through_the_trainer(tmp_path, algorithm):
    trainer = trainer_for(make_config(steps=1, algorithm=algorithm), tmp_path)
    policy = trainer.policies["solo"]
    groups = trainer.runner.run(PROBLEMS[:3], 4)
    rewards = torch.tensor([[episode.totals["solo"] for episode in group] for group in groups])
    expected = compute_advantages(algorithm, rewards).flatten().tolist()
    samples = trainer.samples(groups, "solo")
    assert [s.advantage for s in samples] == pytest.approx(expected)
    before = snapshot(policy.model)
    stats = trainer.update(policy, samples)
    assert stats["trained_samples"] > 0 and stats["grad_norm"] > 0
    assert changed(policy.model, before)
