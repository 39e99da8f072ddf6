"""The OpenRLHF scale-out on CPU: rendered commands, OpenRLHF's own parser, the bridge inside OpenRLHF's
real ``MultiTurnAgentExecutor``, and the partner served by a Ray actor.

Without a GPU nothing here trains: the trained policy's engine is our HF engine (a tiny random model)
or a scripted engine behind an adapter shaped like OpenRLHF's vLLM actor (``RolloutRayActor.generate``),
and samples of one problem are started the way ``RolloutRayActor.generate_responses`` starts them.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from agents import SEPARATOR, Agent, FormatResult, register_agent
from envs import Env, register_env
from longshort.config import AgentConfig, Config, ConfigError, EnvConfig, ModelConfig, RewardsConfig, \
    RolloutConfig, SamplingConfig, load_config
from longshort.engines.base import SamplingParams
from longshort.models import tiny_model, tiny_tokenizer
from longshort.trainers.openrlhf import commands as launcher
from longshort.trainers.openrlhf import launch, preflight
from longshort.trainers.openrlhf.partner import PartnerSpec
from scripted import ScriptedEngine
from vllm_shaped import VLLMSampling, VLLMShaped

NO_OPENRLHF = "openrlhf is not installed (pip install --no-deps openrlhf==0.11.2 && pip install pylatexenc aiohttp)"
QUESTION = "Tom has 2 apples and buys 3 more. How many apples?"


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def chat_prefix(tok, system: str, question: str) -> list[int]:
    return tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=True, return_dict=False)


@pytest.fixture(scope="module")
def bridge():
    """The bridge module; it subclasses OpenRLHF's executor, so it imports only where openrlhf is installed."""
    pytest.importorskip("openrlhf.utils.agent", reason=NO_OPENRLHF)
    from longshort.trainers.openrlhf import bridge

    return bridge


@pytest.fixture(scope="module")
def openrlhf_cli():
    pytest.importorskip("openrlhf", reason=NO_OPENRLHF)


# ----------------------------------------------------------------------------------- OpenRLHF's side, faked


async def generate_responses(executor, engine, tokenizer, n: int, *, max_length: int = 4096, label: str = "5",
                             **sampling):
    """RolloutRayActor.generate_responses: n executions of one prompt, gathered, sharing one sampling object."""
    params = VLLMSampling(**sampling)
    return await asyncio.gather(*[executor.execute(prompt=QUESTION, label=label, sampling_params=params,
                                                   max_length=max_length, hf_tokenizer=tokenizer, llm_engine=engine)
                                  for _ in range(n)])


def check_sample(result: dict, expected_ids: list[int], own_turns: list[list[int]], engine: VLLMShaped) -> None:
    """Tokens, action ranges and rollout log-probabilities of one executor result, against a hand-built view."""
    obs, ranges = result["observation_tokens"], result["action_ranges"]
    assert obs == expected_ids
    assert [obs[start:end] for start, end in ranges] == own_turns
    in_action = [any(start <= i < end for start, end in ranges) for i in range(len(obs))]
    logprobs = result["rollout_log_probs"]
    assert len(logprobs) == len(obs)
    assert all(lp == 0.0 for lp, own in zip(logprobs, in_action) if not own)  # prompt and partner: masked
    for start, end in ranges:  # each action: the policy's tokens and log-probs after exactly this prompt
        [generation] = [g for prompt, _, g in engine.calls if prompt == obs[:start] and g.token_ids == obs[start:end]]
        assert logprobs[start:end] == pytest.approx(generation.logprobs)
    assert result["extra_logs"]["view_exact"] == 1.0


def long_short_config(**rewards) -> Config:
    config = load_config("tiny", ["rollout.group_size=2"])  # the tests roll out groups of 2
    config.rewards = RewardsConfig(weights={"long": {"collaboration": 1.0, "format": 1.0, "length": 1.0},
                                            "short": {"correctness": 1.0, "format": 1.0, "length": 1.0}}, **rewards)
    return config


# ----------------------------------------------------------------------------------- (a) the bridge


def test_long_short_group_tokens_masks_and_rewards(bridge):
    """Trained short agent, scripted long partner: exact views, feedback masked, group-relative rewards."""
    tok = tiny_tokenizer()
    think = ["<think>Tom starts with 2 apples and buys 3.</think>", "<think>Add them: 2 + 3 = 5.</think>"]
    answers = ["<answer>So \\boxed{5}</answer>", "<answer>Not sure yet, think again please.</rethink>",
               "<answer>So \\boxed{6}</answer>"]
    partner = ScriptedEngine(tok, [think[0], think[0], think[1]])
    engine = VLLMShaped(ScriptedEngine(tok, answers))
    runtime = bridge.BridgeRuntime(long_short_config(), "short", {"long": partner})
    first, second = asyncio.run(generate_responses(bridge.AgentExecutor(runtime), engine, tok, 2))

    sep, prefix = enc(tok, SEPARATOR), chat_prefix(tok, runtime.agent.system_prompt, QUESTION)
    a = [enc(tok, text) for text in answers]
    t = [enc(tok, text) for text in think]
    check_sample(first, prefix + t[0] + sep + a[0], [a[0]], engine)
    check_sample(second, prefix + t[0] + sep + a[1] + sep + t[1] + sep + a[2], [a[1], a[2]], engine)
    # short rewards: correctness + format + length (group-relative over own tokens, gated when wrong)
    assert len(a[1]) + len(a[2]) > len(a[0])
    assert first["reward"] == pytest.approx(1 + 1 + 0.5) and first["scores"] == 1.0
    assert second["reward"] == pytest.approx(0 + 1 + min(0.0, -0.5)) and second["scores"] == 0.0
    assert first["extra_logs"]["reward_length"] == 0.5 and second["extra_logs"]["tokens_long"] == len(t[0] + t[1])
    # the partner saw its own view: its chat prefix, then the transcript so far
    long_prefix = chat_prefix(tok, runtime.agents["long"].system_prompt, QUESTION)
    assert partner.prompts[-1] == long_prefix + t[0] + sep + a[1] + sep
    # each action was capped at the env's budget and stopped at the agent's closing tags
    assert {tuple(params.stop) for _, params, _ in engine.calls} == {("</answer>", "</rethink>")}
    assert all(params.include_stop_str_in_output and params.max_tokens == 64 for _, params, _ in engine.calls)


def test_long_agent_is_paid_through_its_partner(bridge):
    tok = tiny_tokenizer()
    engine = VLLMShaped(ScriptedEngine(tok, ["<think>2 + 3 = 5.</think>", "<think>So it is 2 + 3, that is 5.</think>"]))
    partner = ScriptedEngine(tok, ["<answer>\\boxed{5}</answer>", "<answer>\\boxed{6}</answer>"])
    runtime = bridge.BridgeRuntime(long_short_config(), "long", {"short": partner})
    first, second = asyncio.run(generate_responses(bridge.AgentExecutor(runtime), engine, tok, 2))
    prefix = chat_prefix(tok, runtime.agent.system_prompt, QUESTION)
    own = enc(tok, "<think>2 + 3 = 5.</think>")
    # the partner's final answer ends the episode right after the action: no feedback is appended
    check_sample(first, prefix + own, [own], engine)
    # collaboration + format + length (the long agent's length term is never gated)
    assert first["reward"] == pytest.approx(1 + 1 + 0.5)
    assert second["reward"] == pytest.approx(0 + 1 - 0.5)


def test_sample_whose_partner_ended_the_episode_carries_no_advantage(bridge):
    tok = tiny_tokenizer()
    partner = ScriptedEngine(tok, ["no tags at all", "<think>2 + 3 = 5.</think>"])
    engine = VLLMShaped(ScriptedEngine(tok, ["<answer>placeholder</answer>", "<answer>\\boxed{5}</answer>"]))
    runtime = bridge.BridgeRuntime(long_short_config(), "short", {"long": partner})
    first, second = asyncio.run(generate_responses(bridge.AgentExecutor(runtime), engine, tok, 2))
    skipped, played = sorted((first, second), key=lambda r: r["extra_logs"]["acted"])
    assert skipped["extra_logs"]["acted"] == 0.0 and played["extra_logs"]["acted"] == 1.0
    assert skipped["action_ranges"] == []  # the executor's obligatory placeholder action is not trained
    # scored with its whole group, as the embedded runner does: the length term compares only samples in
    # which the agent acted, so the one played sample has nothing to be shorter than: 0
    assert played["reward"] == pytest.approx(1 + 1 + 0)
    assert played["extra_logs"]["reward_length"] == 0.0 and skipped["extra_logs"]["reward_format"] == 0.0
    assert skipped["reward"] == played["reward"]  # the mean of the acting samples: zero advantage


def test_prompt_cache_is_keyed_by_vocabulary_not_by_tokenizer_object(monkeypatch):
    """OpenRLHF unpickles a new tokenizer for every generate_responses call: one question is one cache entry,
    and the cache stays bounded over a phase's many questions."""
    import pickle

    import agents.base

    tok = tiny_tokenizer()
    agent = Agent("short", system_prompt="Answer.")
    ids = agent.prefix_ids(QUESTION, tok)
    for _ in range(3):
        assert agent.prefix_ids(QUESTION, pickle.loads(pickle.dumps(tok))) == ids
    assert len(agent._prefix_cache) == 1
    monkeypatch.setattr(agents.base, "PREFIX_CACHE_SIZE", 4)
    for index in range(10):
        agent.prefix_ids(f"question {index}", tok)
    assert len(agent._prefix_cache) == 4 and agent.prefix_ids("question 9", tok) == chat_prefix(tok, "Answer.",
                                                                                                "question 9")


def test_samples_that_stop_sharing_one_sampling_object_fail_instead_of_scoring_smaller_groups(bridge):
    """The group is the samples sharing one sampling-params object (OpenRLHF 0.11.2's generate_responses, run
    in test_openrlhf_experience.py); an OpenRLHF that copied it per sample would split every group."""
    tok = tiny_tokenizer()
    partner = ScriptedEngine(tok, ["<think>2 + 3 = 5.</think>"] * 2)
    engine = VLLMShaped(ScriptedEngine(tok, ["<answer>\\boxed{5}</answer>"] * 2))
    executor = bridge.AgentExecutor(bridge.BridgeRuntime(long_short_config(), "short", {"long": partner}))

    async def copied_per_sample():
        return await asyncio.gather(*[executor.execute(QUESTION, "5", VLLMSampling(), 4096, tok, engine)
                                      for _ in range(2)])

    with pytest.raises(RuntimeError, match="scoring the group failed") as failure:
        asyncio.run(copied_per_sample())
    assert "a group of 1 samples, expected rollout.group_size=2" in str(failure.value.__cause__)


@register_agent("test_chatter")
class Chatter(Agent):
    """Accepts anything: lets a random tiny model play several turns."""

    system_prompt = "Say something."

    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        return FormatResult(True, "say")


@register_env("test_ping_pong")
class PingPong(Env):
    roles = ("ping", "pong")

    def first_role(self) -> str:
        return "ping"

    def next_role(self, turn, result) -> str:
        return "pong" if turn.role == "ping" else "ping"


def ping_pong_config(model: str, max_new_tokens: int = 5, group_size: int = 3) -> Config:
    agent = AgentConfig(type="test_chatter", model=ModelConfig(name_or_path=model),
                        sampling=SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens))
    return Config(agents={"ping": agent, "pong": replace(agent, trainable=False)},
                  env=EnvConfig(name="test_ping_pong", max_turns=5, max_total_tokens=400),
                  rollout=RolloutConfig(group_size=group_size),
                  # the paper's ungated length term: no ping-pong episode is ever correct, so the default
                  # gate would give every sample the same length value and leave nothing to check
                  rewards=RewardsConfig(weights={"ping": {"format": 1.0, "length": 1.0}}, length_gate="paper"))


def test_tiny_model_policy_through_the_real_executor(bridge):
    """Our HF engine (a random tiny model) as the policy: 3 actions a sample, 2 partner turns masked."""
    from longshort.engines.hf import HFEngine

    model, tok = tiny_model(seed=1)
    engine = VLLMShaped(HFEngine(model, tok, seed=0))
    partner = ScriptedEngine(tok, ["pong."] * 6)
    runtime = bridge.BridgeRuntime(ping_pong_config("unused", max_new_tokens=5), "ping", {"pong": partner})
    results = asyncio.run(generate_responses(bridge.AgentExecutor(runtime), engine, tok, 3, temperature=1.0))
    counts = []
    for result in results:
        ranges, obs = result["action_ranges"], result["observation_tokens"]
        assert len(ranges) == 3 and all(0 < end - start <= 5 for start, end in ranges)
        own = [obs[start:end] for start, end in ranges]
        pong, sep = enc(tok, "pong."), enc(tok, SEPARATOR)
        prefix = chat_prefix(tok, runtime.agent.system_prompt, QUESTION)
        check_sample(result, prefix + own[0] + sep + pong + sep + own[1] + sep + pong + sep + own[2], own, engine)
        counts.append(sum(len(ids) for ids in own))
    low, high = min(counts), max(counts)
    expected = [1 + (0.5 - (n - low) / (high - low) if high > low else 0.0) for n in counts]
    assert [r["reward"] for r in results] == pytest.approx(expected)


# ----------------------------------------------------------------------------------- (b) OpenRLHF's parser


@pytest.mark.parametrize("recipe", ["qwen7b", "llama8b"])
def test_rendered_flags_pass_openrlhfs_own_parser(openrlhf_cli, recipe):
    commands = launcher.plan(load_config(recipe))
    parsed = {c.title: preflight.parse_flags(c.module, c.flags) for c in commands if c.module}
    assert len(parsed) == 4  # SFT of both agents, then one GRPO phase each
    sft = parsed["cold-start SFT of the long agent"]
    grpo = next(args for title, args in parsed.items() if title.startswith("phase 1"))
    assert sft.data.input_template == "" and sft.data.output_key == "output" and sft.train.batch_size == 8
    assert grpo.reward.remote_url == ["agent"] and grpo.critic.model_name_or_path is None  # the agent path is on
    assert (grpo.actor.num_gpus_per_node, grpo.vllm.num_engines, grpo.rollout.n_samples_per_prompt) == (6, 1, 2)
    assert grpo.algo.kl.use_loss and grpo.algo.kl.estimator == "k3" and grpo.algo.kl.init_coef == 0.04


def test_parser_check_has_teeth(openrlhf_cli):
    with pytest.raises(ValueError, match="unrecognized arguments: --pretrain"):
        preflight.parse_flags("openrlhf.cli.train_ppo_ray", ["--pretrain", "Qwen/Qwen2.5-7B-Instruct"])
    with pytest.raises(ValueError, match="requires n_samples_per_prompt > 1"):
        preflight.parse_flags("openrlhf.cli.train_ppo_ray", ["--algo.advantage.estimator", "group_norm"])


# ----------------------------------------------------------------------------------- the plan


def test_plan_renders_the_papers_pipeline():
    config = load_config("qwen7b")
    commands = launcher.plan(config)
    run = Path(config.output_dir).resolve()
    assert [c.title.split(":")[0] for c in commands if c.stage == "rl"] == ["phase 1"] * 2 + ["phase 2"] * 2
    phase1, phase2 = [c for c in commands if c.module == "openrlhf.cli.train_ppo_ray"]
    flag = lambda c, name: c.flags[c.flags.index(f"--{name}") + 1]  # noqa: E731
    # short trains first from its SFT checkpoint against the long SFT checkpoint; then long against phase 1's short
    assert flag(phase1, "actor.model_name_or_path") == str(run / "sft/short/final")
    assert flag(phase2, "actor.model_name_or_path") == str(run / "sft/long/final")
    bridges = [launcher.BridgeConfig.from_json(dict(c.env)[launcher.BRIDGE_ENV]) for c in (phase1, phase2)]
    assert [(b.role, [(p.role, p.model) for p in b.partners]) for b in bridges] == [
        ("short", [("long", str(run / "sft/long/final"))]),
        ("long", [("short", str(run / "rl/phase1_short/model"))])]
    assert bridges[0].load_config() == config
    assert flag(phase1, "train.agent_func_path") == str(launcher.BRIDGE_FILE) and launcher.BRIDGE_FILE.is_file()
    assert (flag(phase1, "rollout.batch_size"), flag(phase1, "train.batch_size")) == ("384", "768")
    assert flag(phase1, "data.max_len") == str(1024 + 16384 + 4 * 8)
    sft = next(c for c in commands if c.module == "openrlhf.cli.train_sft")
    assert flag(sft, "ckpt.output_dir") == str(run / "sft/long/final")  # where the later stages look for it
    assert launcher.final_checkpoints(config) == {"short": str(run / "rl/phase1_short/model"),
                                                  "long": str(run / "rl/phase2_long/model")}


def test_rl_after_a_finished_sft_starts_from_its_weights_on_both_backends(tmp_path, tiny_dir):
    """``stages=[rl, eval]`` after the SFT: RL (and eval's sft row) use the SFT weights only once that SFT
    finished; an empty or unmarked ``final`` folder (a failed train_sft) is not weights."""
    import shutil

    from longshort.paths import holds_weights
    from longshort.train import stage_models

    config = load_config("qwen7b", [f"output_dir={tmp_path}", "stages=[rl,eval]"])
    base = {role: agent.model.name_or_path for role, agent in config.agents.items()}
    finals = {role: str(launcher.sft_model_dir(config, role)) for role in config.agents}

    def starts() -> tuple[dict, dict]:
        return {p.role: p.init for p in launcher.phases(config)}, stage_models(config, tmp_path, "sft")

    for path in finals.values():
        Path(path).mkdir(parents=True)  # what a failed train_sft leaves
    assert starts() == (base, base)
    for path in finals.values():
        shutil.rmtree(path)
        shutil.copytree(tiny_dir, path)
    assert starts() == (base, base)  # weights without the step's DONE marker: maybe a partial save
    for role in config.agents:
        (tmp_path / "sft" / role / "DONE").write_text("{}\n")
    assert starts() == (finals, finals)
    assert stage_models(replace(config, backend=replace(config.backend, name="embedded")), tmp_path, "sft") == finals
    index = Path(finals["long"]) / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    assert not holds_weights(Path(finals["long"]))  # a sharded save with a shard missing


def test_two_runs_of_one_recipe_never_share_a_partner(tmp_path):
    def names(folder: str) -> list[str]:
        config = load_config("qwen7b", [f"output_dir={tmp_path}/{folder}"])
        return [spec.name for phase in launcher.phases(config) for spec in launcher.partner_specs(config, phase)]

    first, second = names("a"), names("b")
    assert len(set(first)) == 2 and not set(first) & set(second) and names("a") == first


def test_ray_address_submits_jobs_with_code_and_paths_the_cluster_can_reach(tmp_path):
    with pytest.raises(ConfigError, match="set backend.shared_dir"):
        launcher.plan(load_config("qwen7b", ["backend.ray_address=http://head:8265"]))
    with pytest.raises(ConfigError, match="is not under backend.shared_dir"):
        launcher.plan(load_config("qwen7b", ["backend.ray_address=http://head:8265", f"backend.shared_dir={tmp_path}"]))
    config = load_config("qwen7b", ["backend.ray_address=http://head:8265", f"backend.shared_dir={tmp_path}",
                                    f"output_dir={tmp_path}/qwen7b"])
    commands = launcher.plan(config)
    sft = next(c for c in commands if c.module == "openrlhf.cli.train_sft")
    grpo = next(c for c in commands if c.module == "openrlhf.cli.train_ppo_ray")
    assert sft.argv[:4] == ("ray", "job", "submit", "--address=http://head:8265")
    assert sft.argv[sft.argv.index("--entrypoint-num-gpus") + 1] == "8"
    assert grpo.argv[grpo.argv.index("--") + 1:][:3] == ("python3", "-m", "openrlhf.cli.train_ppo_ray")
    runtime_env = json.loads(grpo.argv[grpo.argv.index("--runtime-env-json") + 1])
    assert launcher.BridgeConfig.from_json(runtime_env["env_vars"][launcher.BRIDGE_ENV]).role == "short"
    # our code travels with the job; the agent file lies on the shared filesystem and only imports the bridge
    assert {Path(d).name for d in runtime_env["py_modules"]} == {"longshort", "agents", "envs"}
    agent_path = Path(grpo.flags[grpo.flags.index("--train.agent_func_path") + 1])
    assert agent_path.is_relative_to(tmp_path) and grpo.env == ()
    assert all(Path(c.flags[c.flags.index("--ckpt.path") + 1]).is_relative_to(tmp_path) for c in commands if c.module)


def test_a_submitted_jobs_agent_file_is_the_bridge(bridge):
    namespace: dict = {}
    exec(launcher.AGENT_FILE_TEXT, namespace)  # what OpenRLHF's _load_agent_executor runs on a worker
    assert namespace["AgentExecutor"] is bridge.AgentExecutor


def test_dry_run_prints_every_command_and_runs_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("dry run started a process"))
    config = load_config("qwen7b", [f"output_dir={tmp_path}/run"])
    printed: list[str] = []
    commands = launch.run(config, dry_run=True, echo=printed.append)
    assert all(c.shell() in printed[0] for c in commands) and not (tmp_path / "run").exists()


def test_a_done_stage_leaves_its_saves_and_loses_its_deepspeed_checkpoints(monkeypatch, tmp_path):
    """Each OpenRLHF step writes a DeepSpeed checkpoint and its model; once a step is DONE its checkpoint goes
    (only a resume of that step reads it), its model stays; a failed step keeps its checkpoint to resume from."""
    config = load_config("qwen7b", [f"output_dir={tmp_path}/run"])
    trained = [c for c in launcher.plan(config) if c.module]  # SFT of both agents, then phases 1 and 2
    last = trained[-1].cleanup[0]

    def fake_run(argv, env, check):
        if "--ckpt.path" in argv:
            for name in ("ckpt.path", "ckpt.output_dir"):
                folder = Path(argv[argv.index(f"--{name}") + 1])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "weights").write_text("w")
            if last in argv:
                raise subprocess.CalledProcessError(1, argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(subprocess.CalledProcessError):
        launch.run(config, echo=lambda text: None)
    assert [Path(c.cleanup[0]).exists() for c in trained] == [False, False, False, True]
    assert all(Path(c.flags[c.flags.index("--ckpt.output_dir") + 1], "weights").is_file() for c in trained)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.schedule=joint"], "alternating only"),
    (["backend.gpus_per_node=2"], "left for training"),
    (["trainer.micro_batch_size=5"], "must be a multiple of"),
    (["backend.name=embedded"], "needs backend.name=openrlhf"),
])
def test_impossible_settings_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        launcher.plan(load_config("qwen7b", overrides))


def test_phase_prompts_are_the_embedded_trainers_draws(tmp_path):
    from longshort.data import Problem
    from longshort.trainers.schedule import ProblemStream

    config = load_config("qwen7b", [f"output_dir={tmp_path}", "trainer.phase_steps=2", "trainer.steps=3",
                                    "rollout.problems_per_step=3"])
    problems = [Problem(str(i), f"q{i}", str(i)) for i in range(5)]
    (tmp_path / "data").mkdir()
    (tmp_path / "data/train.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems))
    rows = [[json.loads(line) for line in launch.write_phase_prompts(config, k).read_text().splitlines()]
            for k in (1, 2)]
    stream = ProblemStream(problems, config.seed)  # what the embedded trainer draws, 3 problems a step
    assert rows == [[{"prompt": p.prompt, "answer": p.answer} for p in stream.take(n)] for n in (6, 3)]
    assert sorted(r["prompt"] for r in rows[0][:5]) == [p.prompt for p in problems]  # one epoch, shuffled


def test_sft_rows_train_exactly_the_embedded_examples_tokens(openrlhf_cli, tmp_path, tiny_dir):
    """Cold-start transcripts -> OpenRLHF rows -> OpenRLHF's own SFTDataset: each own turn trained once,
    after exactly the prompt the embedded SFT example holds before it (plus the EOS OpenRLHF always trains)."""
    import datasets
    from openrlhf.datasets import SFTDataset
    from transformers import AutoTokenizer

    from longshort.rollout import build_agents
    from longshort.sft import build_examples

    config = load_config("qwen7b", [f"output_dir={tmp_path}", f"agents.short.model.name_or_path={tiny_dir}"])
    turns = [{"role": "long", "text": "<think>\nTom starts with 2.\n</think>"},
             {"role": "short", "text": "<answer>Then buys 3.</rethink>"},
             {"role": "long", "text": "<think>\n2 + 3 = 5.\n</think>"},
             {"role": "short", "text": "<answer>\\boxed{5} </answer>"}]
    record = {"id": "p0", "question": QUESTION, "answer": "5", "plan": "handback", "turns": turns, "role": "short"}
    launcher.coldstart_path(config, "short").parent.mkdir(parents=True)
    launcher.coldstart_path(config, "short").write_text(json.dumps(record) + "\n")
    path = launch.write_sft_data(config, "short").path

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    args = SimpleNamespace(data=SimpleNamespace(input_key="input", output_key="output", apply_chat_template=False))
    dataset = SFTDataset(datasets.load_dataset("json", data_files=str(path), split="train"), tok, 4096,
                         SimpleNamespace(args=args), input_template="")  # train_sft's 8 processes: pickled tokenizer
    [embedded] = build_examples(build_agents(config)["short"], [record], tok, 4096)
    own = [i for i, m in enumerate(embedded.loss_mask) if m]
    assert len(dataset) == 2
    trained_positions = []
    for row in range(len(dataset)):
        input_ids, _, loss_mask = dataset[row]
        ids, mask = input_ids[0].tolist(), loss_mask[0].tolist()
        trained = [i + 1 for i, m in enumerate(mask[:-1]) if m]  # mask[i] trains the prediction of token i + 1
        assert ids[-1] == tok.eos_token_id and trained[-1] == len(ids) - 1
        assert ids[:-1] == embedded.input_ids[: len(ids) - 1]  # the embedded example's tokens, up to the turn's end
        trained_positions += trained[:-1]
    assert trained_positions == own


def test_a_turn_cut_by_the_length_cap_is_trained_on_neither_backend(tmp_path, tiny_dir):
    """sft.max_length inside the agent's second turn: the embedded example and the OpenRLHF rows both train the
    first turn only; no row ends, with the EOS OpenRLHF always trains, in the middle of a turn."""
    from transformers import AutoTokenizer

    from longshort.rollout import build_agents
    from longshort.sft import build_examples

    config = load_config("qwen7b", [f"output_dir={tmp_path}", f"agents.short.model.name_or_path={tiny_dir}"])
    turns = [{"role": "long", "text": "<think>\nTom starts with 2.\n</think>"},
             {"role": "short", "text": "<answer>Then buys 3.</rethink>"},
             {"role": "long", "text": "<think>\n2 + 3 = 5.\n</think>"},
             {"role": "short", "text": "<answer>So the answer is \\boxed{5} </answer>"}]
    record = {"id": "p0", "question": QUESTION, "answer": "5", "turns": turns, "role": "short"}
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    agent = build_agents(config)["short"]
    [full] = build_examples(agent, [record], tok, 4096)
    config.sft.max_length = len(full.input_ids) - 3  # inside the last answer
    launcher.coldstart_path(config, "short").parent.mkdir(parents=True)
    launcher.coldstart_path(config, "short").write_text(json.dumps(record) + "\n")
    rows = [json.loads(line) for line in launch.write_sft_data(config, "short").path.read_text().splitlines()]
    [embedded] = build_examples(agent, [record], tok, config.sft.max_length)
    first = enc(tok, turns[1]["text"])
    assert [row["ids"][len(row["input_ids"]):] for row in rows] == [first + [tok.eos_token_id]]
    assert [token for token, own in zip(embedded.input_ids, embedded.loss_mask) if own] == first


# ----------------------------------------------------------------------------------- (c) the partner on Ray


def test_partner_served_by_a_ray_actor_answers_the_bridge(bridge, tiny_dir, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]==2.55.0')")
    from longshort.engines.hf import HFEngine
    from longshort.models import load_model
    from longshort.trainers.openrlhf.partner import connect_partner

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a warning about future defaults
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        spec = PartnerSpec(role="pong", model=str(tiny_dir), name="test-partner", engine="hf", num_gpus=0,
                           dtype="fp32", seed=7)
        partner = connect_partner(spec)
        model, tok = load_model(str(tiny_dir), dtype="fp32")
        # the actor's engine is the same model with the same seed: one request gives the same tokens
        request = (enc(tok, "Hello there"), SamplingParams(temperature=1.0, max_new_tokens=6))
        remote = asyncio.run(partner.generate(*request))
        local = asyncio.run(HFEngine(model, tok, seed=7).generate(*request))
        assert (remote.token_ids, remote.text) == (local.token_ids, local.text)

        engine = VLLMShaped(HFEngine(model, tok, seed=0))
        runtime = bridge.BridgeRuntime(ping_pong_config(str(tiny_dir), max_new_tokens=4, group_size=2), "ping",
                                       {"pong": partner})
        results = asyncio.run(generate_responses(bridge.AgentExecutor(runtime), engine, tok, 2))
        for result in results:
            ranges, obs = result["action_ranges"], result["observation_tokens"]
            assert len(ranges) == 3 and result["extra_logs"]["tokens_pong"] > 0
            check_sample(result, obs, [obs[s:e] for s, e in ranges], engine)
            # between the actions: separator, the actor's turn, separator (masked)
            gaps = [obs[ranges[i][1]: ranges[i + 1][0]] for i in range(2)]
            assert sum(map(len, gaps)) == result["extra_logs"]["tokens_pong"] + 4 * len(enc(tok, SEPARATOR))
    finally:
        ray.shutdown()


def test_launcher_and_partner_import_no_scale_out_package():
    code = ("import sys, json, longshort.trainers.openrlhf.launch, longshort.trainers.openrlhf.preflight, "
            "longshort.trainers.openrlhf.memory, longshort.trainers.openrlhf.partner; "
            "print(json.dumps([m for m in ('openrlhf', 'ray', 'vllm', 'deepspeed') if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
