"""OpenRLHF's own rollout code on CPU, on what the bridge returns: ``SamplesGenerator._generate_vllm``
(its sampling parameters, with ``logprobs=None`` as the recipe's flags leave it), each prompt's group from
``RolloutRayActor.generate_responses``, ``_process_response_into_experience``, the experience maker's
micro-batching and ``compute_advantages_and_returns``, all with the arguments OpenRLHF's parser makes of
our flags; checked against what the embedded trainer computes for the same episodes.

Ray calls are made in-process (arguments pickled and unpickled, as Ray does per call). vLLM and
DeepSpeed are stand-in modules only so that these files import (nothing here calls them), and
OpenRLHF's model package is entered without its ``__init__`` (PEFT, flash-attn), as OpenRLHF's own
tests load single files. Still only on a node: the model forwards (log-probs, KL), the loss, vLLM.
"""
from __future__ import annotations

import asyncio
import importlib.util
import pickle
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from longshort.algos import compute_advantages
from longshort.config import load_config
from longshort.models import tiny_tokenizer
from longshort.trainers.openrlhf import commands, preflight
from scripted import ScriptedEngine
from vllm_shaped import VLLMShaped

NO_OPENRLHF = "openrlhf is not installed (pip install --no-deps openrlhf==0.11.2 && pip install pylatexenc aiohttp)"
QUESTIONS = [("Tom has 2 apples and buys 3 more. How many apples?", "5"),
             ("Ann has 3 pens and buys 4 more. How many pens?", "7")]


class _SamplingParams:
    """vllm.SamplingParams as far as OpenRLHF's samples generator builds it (keyword fields only)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


@pytest.fixture(scope="module")
def openrlhf_rollout():
    pytest.importorskip("openrlhf.utils.agent", reason=NO_OPENRLHF)
    pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]==2.55.0')")
    saved = set(sys.modules)

    def stand_in(name: str, package: str | None = None, **attributes) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        if package is not None:
            module.__path__ = [package]
        sys.modules[name] = module

    try:
        if importlib.util.find_spec("vllm") is None:
            stand_in("vllm", "", SamplingParams=_SamplingParams, __version__="0.29.0")
            _SamplingParams.__module__, _SamplingParams.__qualname__ = "vllm", "SamplingParams"  # pickled by name
            stand_in("vllm.inputs", TokensPrompt=dict)
            stand_in("vllm.utils", random_uuid=lambda: "0")
        if importlib.util.find_spec("deepspeed") is None:
            stand_in("deepspeed")
        stand_in("openrlhf.trainer.ray.launcher", RayActorGroup=object)  # DeepSpeed actors: node only
        stand_in("openrlhf.models", str(Path(importlib.util.find_spec("openrlhf").origin).parent / "models"))
        from openrlhf.trainer.ppo_utils import samples_generator
        from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
        from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
        from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

        yield SimpleNamespace(samples_generator=samples_generator, RemoteExperienceMaker=RemoteExperienceMaker,
                              FixedKLController=FixedKLController,
                              RolloutRayActor=RolloutRayActor.__ray_metadata__.modified_class)
    finally:
        for name in set(sys.modules) - saved:
            del sys.modules[name]


class _Remote:
    """``actor.method.remote(...)`` run here: arguments through pickle, as each Ray call gets its own copies."""

    def __init__(self, function):
        self.function = function

    def remote(self, *args, **kwargs):
        args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
        result = self.function(*args, **kwargs)
        return asyncio.run(result) if asyncio.iscoroutine(result) else result


class RolloutActor:
    """One OpenRLHF rollout actor: ``RolloutRayActor``'s own ``generate_responses`` with our bridge as its
    executor, over a vLLM-shaped engine."""

    def __init__(self, rollout_actor_cls, executor, engine: VLLMShaped):
        self.executor = executor
        self.engine = engine
        self.generate_responses = _Remote(lambda **kw: rollout_actor_cls.generate_responses(self, **kw))
        self.get_num_unfinished_requests = _Remote(lambda: 0)

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        return await self.engine.generate(prompt_token_ids, sampling_params, multi_modal_data)


def grpo_args(config):
    grpo = next(c for c in commands.plan(config, ["rl"]) if c.module == "openrlhf.cli.train_ppo_ray")
    return preflight.parse_flags(grpo.module, grpo.flags)


def test_openrlhfs_experience_processing_trains_what_the_embedded_trainer_trains(openrlhf_rollout, monkeypatch):
    from longshort.trainers.openrlhf import bridge

    config = load_config("qwen7b", ["rollout.group_size=4", "rollout.problems_per_step=2",
                                    "backend.gpus_per_node=3"])  # 1 training GPU: 8 episodes pack into one
    args = grpo_args(config)
    assert args.algo.advantage.estimator == "group_norm" and args.rollout.n_samples_per_prompt == 4
    tok = tiny_tokenizer()
    think = "<think>Add: the total is the sum.</think>"
    # problem 1: right, wrong, the partner's malformed turn ends the episode (a placeholder action), right
    # and longer; problem 2: every sample acts
    partner = ScriptedEngine(tok, [think, think, "no tags at all", think] + [think] * 5)
    policy = VLLMShaped(ScriptedEngine(tok, [
        "<answer>\\boxed{5}</answer>", "<answer>\\boxed{6}</answer>", "<answer>x</answer>",
        "<answer>So 2 + 3 = 5, \\boxed{5}</answer>",
        "<answer>\\boxed{7}</answer>", "<answer>\\boxed{8}</answer>", "<answer>\\boxed{7} it is</answer>",
        "<answer>Not sure.</rethink>", "<answer>\\boxed{9}</answer>"]))
    samples: list = []
    init = bridge._Sample.__init__

    def recording_init(self, *a, **kw):
        init(self, *a, **kw)
        samples.append(self)

    monkeypatch.setattr(bridge._Sample, "__init__", recording_init)
    runtime = bridge.BridgeRuntime(config, "short", {"long": partner})
    actor = RolloutActor(openrlhf_rollout.RolloutRayActor, bridge.AgentExecutor(runtime), policy)
    sg = openrlhf_rollout.samples_generator
    monkeypatch.setattr(sg, "ray", SimpleNamespace(get=lambda refs: refs,
                                                   wait=lambda refs, num_returns, timeout: (refs[:1], refs[1:])))
    generator = sg.SamplesGenerator(SimpleNamespace(args=args), None, None, tok, [actor])
    generate_kwargs = dict(do_sample=True, max_len=args.data.max_len, max_new_tokens=args.rollout.max_new_tokens,
                           temperature=args.rollout.temperature, top_p=args.rollout.top_p)  # train_ppo_ray's train()
    batches = iter([(None, [question], [answer], [None]) for question, answer in QUESTIONS])
    experiences, _, _ = generator._generate_vllm(batches, len(QUESTIONS), False, **generate_kwargs)

    assert len(experiences) == len(samples) == 8
    assert all(call[1].logprobs is None for call in policy.calls)  # the recipe's sampling: no log-probs asked
    assert all(e.rollout_log_probs is None for e in experiences)
    assert [s.acted for s in samples] == [True, True, False, True] + [True] * 4

    maker = openrlhf_rollout.RemoteExperienceMaker(None, None, None, None,
                                                   openrlhf_rollout.FixedKLController(args.algo.kl.init_coef),
                                                   SimpleNamespace(args=args), tok)
    batch = maker.split_rollout_samples(experiences)  # packing: token-budgeted micro-batches
    for micro in batch:
        micro.kl = torch.zeros_like(micro.action_mask, dtype=torch.float32)  # make_experience under kl.use_loss
    batch = maker.compute_advantages_and_returns(batch)
    rows = {index: (micro, row) for micro in batch for row, index in enumerate(micro.index)}

    # what the embedded trainer trains: the agent's training sample per acting episode, group-relative advantages
    episodes = [s.episode for s in samples]
    rewards = torch.tensor([[e.totals["short"] for e in episodes[g: g + 4]] for g in (0, 4)])
    acted = torch.tensor([[s.acted for s in samples[g: g + 4]] for g in (0, 4)])
    embedded = compute_advantages("group_norm", rewards, acted).reshape(-1)
    agent = runtime.agent
    for index, (sample, episode) in enumerate(zip(samples, episodes)):
        micro, row = rows[index]
        mask = micro.action_mask[row].bool()
        trained = micro.sequences[row][1:][mask].tolist()
        advantages = micro.advantages[row][mask]
        if not sample.acted:
            assert trained == [] and micro.advantages[row].abs().max() == 0  # the placeholder: nothing trained
            continue
        own = agent.training_sample(episode.prompt, episode.turns, tok)
        assert trained == [t for t, m in zip(own.input_ids, own.action_mask) if m]
        # OpenRLHF keeps the non-acting sample in the group at the mean reward: same mean, and the std over 4
        # samples with one at the mean instead of over the 3 acting ones (the bridge's docstring)
        scale = (3 / 2) ** 0.5 if index < 4 else 1.0
        assert advantages.tolist() == pytest.approx([embedded[index].item() * scale] * len(trained), rel=1e-3,
                                                    abs=1e-6)
    assert embedded[4:].abs().sum() > 0 and embedded[:4].abs().sum() > 0  # both groups carry a signal
