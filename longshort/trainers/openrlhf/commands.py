"""The Long-Short pipeline rendered as OpenRLHF 0.11.x commands (``plan``), in order:

1. cold-start SFT of every agent: a small conversion step (its cold-start transcripts rendered as
   the exact text and token ids the agent sees, one row per own turn: ``launch.write_sft_data``), then
   ``deepspeed --module longshort.trainers.openrlhf.sft_main``: ``openrlhf.cli.train_sft`` on those ids;
2. alternating RL phases: a step that writes the phase's slice of the training problems, then
   ``python -m openrlhf.cli.train_ppo_ray`` training one agent with GRPO while the other agent's
   current checkpoint is served frozen (``partner``). Our env, agents and reward terms run inside
   OpenRLHF through the bridge file (``bridge.py``, passed as ``--train.agent_func_path``); it
   learns its role and partners from one JSON environment variable (``LONGSHORT_BRIDGE_CONFIG``),
   set in the process environment for a local run (Ray's local workers inherit it) or in the job's
   runtime env for ``ray job submit``.

WHY commands rather than calls: OpenRLHF's parsers are built inline under ``if __name__ ==
"__main__"``, so its CLI is the only stable interface, and a printed plan can be copied to a
cluster by hand. ``preflight.parse_flags`` runs OpenRLHF's own parser on rendered flags.

Where the flags differ from OpenRLHF's defaults, on purpose: AdamW betas (0.9, 0.999) as the
embedded trainer and TRL (OpenRLHF: 0.9, 0.95); the attention implementation is a backend setting;
no ``--ckpt.save_hf`` (it writes a full, never rotated HF copy at every save; the final model goes
to ``ckpt.output_dir`` anyway); packing with token-budgeted micro-batches when ``backend.packing``.
One phase per agent at most: OpenRLHF builds the optimiser, the LR schedule and the KL reference
per run, so a second phase of an agent would restart all three (``phases`` refuses it).

Run layout under ``output_dir``: ``data/train.jsonl`` (the data stage), ``sft/coldstart/<role>.jsonl``
(an agent's cold-start transcripts, ``longshort.coldstart``), ``sft/<role>/final`` (its SFT
checkpoint) and ``rl/phase<k>_<role>/{prompts.jsonl, model, ckpt, tensorboard}``. A step that
succeeds writes a marker (``DONE`` in its folder) and is skipped when run again; its DeepSpeed
checkpoints (``ckpt``), which only resume it, are then deleted (``disk``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from longshort.config import Config, ConfigError
from longshort.extensions import is_file_entry, worker_env
from longshort.paths import holds_weights
from longshort.trainers import tracking
from longshort.trainers.openrlhf.partner import PartnerSpec

OPENRLHF_VERSION = "0.11.2"  # the version whose flags these commands use (tests parse them with it)
BRIDGE_ENV = "LONGSHORT_BRIDGE_CONFIG"
BRIDGE_FILE = Path(__file__).with_name("bridge.py")
# A submitted job's agent file: it only imports the bridge, which travels with the job (py_modules).
AGENT_FILE_TEXT = "from longshort.trainers.openrlhf.bridge import AgentExecutor  # noqa: F401\n"
PROMPT_TOKENS = 1024  # room for an agent's chat-templated system prompt and question (~300 + question)
SEPARATOR_TOKENS = 4  # per turn, for the separators between turns
PARTNER_GPU_MEMORY = 0.9  # the partner has its GPU to itself (the paper's partner servers use 0.9)
ADAM_BETAS = (0.9, 0.999)  # torch's AdamW default: the embedded trainer's and TRL's (the paper trained with TRL)
CKPT_KEEP = 2  # DeepSpeed checkpoints kept per run (--ckpt.max_num): the latest resumes, one spare; deleted once DONE
CODE_PACKAGES = ("longshort", "agents", "envs")  # shipped with a submitted job (runtime env py_modules)


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Command:
    """One step of the plan: a process, the environment it adds, and the marker written when it succeeds.

    ``module`` and ``flags`` repeat the OpenRLHF part of ``argv`` (None for our own steps), so the
    flags can be checked against OpenRLHF's parser without parsing the launcher prefix. ``cleanup``:
    folders only a resume of this step reads (its DeepSpeed checkpoints), deleted once it is done.
    """

    stage: str
    title: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    marker: str | None = None
    module: str | None = None
    flags: tuple[str, ...] = ()
    cleanup: tuple[str, ...] = ()

    def shell(self) -> str:
        """The command as one shell line (environment assignments first)."""
        assignments = [f"{key}={shlex.quote(value)}" for key, value in self.env]
        return " ".join([*assignments, *(shlex.quote(arg) for arg in self.argv)])


@dataclass
class BridgeConfig:
    """What the bridge inside OpenRLHF must know: the recipe, the trained agent and how to reach its partners."""

    role: str
    config: dict[str, Any]
    partners: list[PartnerSpec] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "config": self.config,
                           "partners": [partner.to_dict() for partner in self.partners]}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BridgeConfig":
        data = json.loads(text)
        return cls(data["role"], data["config"], [PartnerSpec(**partner) for partner in data["partners"]])

    @classmethod
    def from_env(cls) -> "BridgeConfig":
        text = os.environ.get(BRIDGE_ENV)
        if not text:
            raise RuntimeError(
                f"{BRIDGE_ENV} is not set in this Ray worker: the OpenRLHF bridge runs only in a phase started by "
                "longshort.trainers.openrlhf.launch. A local run passes it by inheritance to the Ray instance that "
                "train_ppo_ray starts; if that connected to a cluster already running (`ray start`), set "
                "backend.ray_address so the job is submitted with the variable in its runtime env")
        return cls.from_json(text)

    def load_config(self) -> Config:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), self.config))


@dataclass(frozen=True)
class Layout:
    """Where each part of a phase runs: actor GPUs = all GPUs - policy vLLM engines - partner replicas."""

    actor_nodes: int
    actor_gpus_per_node: int


@dataclass(frozen=True)
class Phase:
    """One alternating RL phase: ``role`` trains from ``init`` for ``steps`` steps against frozen ``partners``."""

    index: int
    role: str
    steps: int
    first_problem: int  # where this phase's slice of the training problems starts (phases continue the stream)
    init: str
    partners: dict[str, str]  # partner role -> checkpoint
    dir: Path


# ------------------------------------------------------------------------------------------- layout


def run_dir(config: Config) -> Path:
    return Path(config.output_dir).resolve()


def coldstart_path(config: Config, role: str) -> Path:
    """The agent's cold-start transcripts (``longshort.coldstart.write_coldstart`` writes ``<role>.jsonl``)."""
    return run_dir(config) / "sft" / "coldstart" / f"{role}.jsonl"


def sft_model_dir(config: Config, role: str) -> Path:
    """Where an agent's SFT weights go: the embedded SFT's ``final`` folder, so later stages find them either way."""
    return run_dir(config) / "sft" / role / "final"


def max_len(config: Config) -> int:
    """OpenRLHF's ``data.max_len``: the whole episode as the trained agent sees it (prompt and all turns)."""
    return PROMPT_TOKENS + config.env.max_total_tokens + SEPARATOR_TOKENS * config.env.max_turns


def episode_tokens(config: Config) -> int:
    """The longest episode the trained agent can hold: the prompt, ``env.max_turns`` turns each at the largest
    per-turn cap (``sampling.max_new_tokens``, within ``env.max_total_tokens`` together) and their separators.

    ``max_len`` budgets every turn at the episode's whole budget; the turn caps bound it tighter, and a
    micro-batch budget of ``max_len`` would reserve logits (and their gradient) for tokens no episode has.
    Counted in the trained agent's tokens: a partner of another vocabulary, re-tokenized, can run longer
    (then set ``backend.max_tokens_per_gpu``).
    """
    cap = max(agent.sampling.max_new_tokens for agent in config.agents.values())
    env = config.env
    return PROMPT_TOKENS + min(env.max_total_tokens, env.max_turns * cap) + SEPARATOR_TOKENS * env.max_turns


def train_tokens_per_gpu(config: Config) -> int:
    """With packing: tokens of one training micro-batch per GPU (default: one longest episode)."""
    return config.backend.max_tokens_per_gpu or episode_tokens(config)


def layout(config: Config) -> Layout:
    """The paper's placement, generalised: 8 GPUs = 6 actor + 1 policy vLLM + 1 partner."""
    backend = config.backend
    partner_roles = len(config.agents) - 1
    total = backend.num_nodes * backend.gpus_per_node
    actor = total - backend.vllm_num_engines * backend.vllm_tensor_parallel_size - backend.partner_gpus * partner_roles
    if actor < backend.num_nodes or actor % backend.num_nodes:
        raise ConfigError(
            f"backend has {total} GPUs ({backend.num_nodes} x {backend.gpus_per_node}); after "
            f"{backend.vllm_num_engines} x {backend.vllm_tensor_parallel_size} for vLLM and {backend.partner_gpus} per "
            f"partner agent ({partner_roles}), {actor} are left for training, which must be a positive multiple of "
            f"backend.num_nodes={backend.num_nodes}: lower backend.partner_gpus or backend.vllm_num_engines")
    return Layout(backend.num_nodes, actor // backend.num_nodes)


def phases(config: Config) -> list[Phase]:
    """The alternating schedule of the embedded trainer (``trainers.schedule.Schedule``) cut into runs:
    trainable agents take turns from ``trainer.first_agent``, each phase ``trainer.phase_steps`` steps
    (the last one shorter), each from the latest checkpoint of its agent against the latest
    checkpoints of the others."""
    from longshort.trainers.schedule import Schedule

    if config.trainer.schedule != "alternating":
        raise ConfigError("backend openrlhf trains one policy per run, so it supports trainer.schedule=alternating "
                          f"only (got {config.trainer.schedule}); use backend.name=embedded for joint training")
    trainable = tuple(role for role, agent in config.agents.items() if agent.trainable)
    try:
        order = Schedule("alternating", trainable, config.trainer.first_agent, config.trainer.phase_steps).order
    except ValueError as error:
        raise ConfigError(str(error)) from None
    latest = _initial_checkpoints(config)
    count = math.ceil(config.trainer.steps / config.trainer.phase_steps)
    if count > len(order):
        raise ConfigError(
            f"trainer.steps={config.trainer.steps} in phases of trainer.phase_steps={config.trainer.phase_steps} gives "
            f"{count} phases for {len(order)} trainable agent(s): OpenRLHF builds the optimiser, the LR schedule and the "
            "KL reference anew in every run, so a second phase of an agent would restart them; on backend openrlhf set "
            f"trainer.phase_steps >= {math.ceil(config.trainer.steps / len(order))} (one phase per agent), or use "
            "backend.name=embedded")
    result, first_problem = [], 0
    for index in range(1, count + 1):
        role = order[(index - 1) % len(order)]
        steps = min(config.trainer.phase_steps, config.trainer.steps - (index - 1) * config.trainer.phase_steps)
        folder = run_dir(config) / "rl" / f"phase{index}_{role}"
        result.append(Phase(index, role, steps, first_problem, latest[role],
                            {other: latest[other] for other in config.agents if other != role}, folder))
        latest[role] = str(folder / "model")
        first_problem += steps * config.rollout.problems_per_step
    return result


def sft_finished(config: Config, role: str) -> bool:
    """Whether the agent's SFT finished: its step's ``DONE`` marker and a whole save in ``sft/<role>/final``
    (a failed ``train_sft`` leaves that folder empty or partial)."""
    return (run_dir(config) / "sft" / role / "DONE").is_file() and holds_weights(sft_model_dir(config, role))


def _initial_checkpoints(config: Config) -> dict[str, str]:
    """Every agent's weights before RL: its SFT output when the run has an sft stage or a finished SFT
    (``stages=[rl, ...]`` after it, as the embedded backend's ``train.stage_models``), else its base model."""
    return {role: str(sft_model_dir(config, role)) if "sft" in config.stages or sft_finished(config, role)
            else agent.model.name_or_path for role, agent in config.agents.items()}


def final_checkpoints(config: Config) -> dict[str, str]:
    """The checkpoint of every agent once the planned stages have run (what evaluation should load)."""
    latest = _initial_checkpoints(config)
    if "rl" in config.stages:
        for phase in phases(config):
            latest[phase.role] = str(phase.dir / "model")
    return latest


# ------------------------------------------------------------------------------------------- rendering


def _flags(pairs: Sequence[tuple[str, Any]]) -> tuple[str, ...]:
    """``--key value`` pairs; True renders a bare switch, a tuple several values, False and None nothing."""
    out: list[str] = []
    for key, value in pairs:
        if value is None or value is False:
            continue
        out.append(f"--{key}")
        if isinstance(value, tuple):
            out.extend(str(v) for v in value)
        elif value is not True:
            out.append(str(value))
    return tuple(out)


def _param_dtype(dtype: str) -> str:
    return "fp16" if dtype in ("fp16", "float16") else "bf16"  # DeepSpeed trains in bf16 or fp16 only


def _python(config: Config) -> str:
    """This interpreter locally; ``python3`` of the cluster's image when the command is submitted."""
    return "python3" if config.backend.ray_address else sys.executable


def code_dirs() -> list[str]:
    """The folders of our packages, as ``ray job submit`` ships them (``py_modules``) to every worker."""
    import importlib

    return [str(Path(importlib.import_module(name).__file__).parent) for name in CODE_PACKAGES]


def check_shared_dir(config: Config) -> None:
    """A submitted job reads and writes the run's files (prompts, SFT data, checkpoints, the agent file)
    on the cluster's nodes: they must be on a filesystem every node and this machine mount at one path."""
    backend = config.backend
    if not backend.ray_address:
        return
    if not backend.shared_dir:
        raise ConfigError(f"backend.ray_address={backend.ray_address} submits jobs that read and write the run's files "
                          "on the cluster's nodes: set backend.shared_dir to a filesystem mounted at the same path on "
                          "every node and here, and output_dir under it")
    shared = Path(backend.shared_dir).expanduser().resolve()
    if not run_dir(config).is_relative_to(shared):
        raise ConfigError(f"output_dir {run_dir(config)} is not under backend.shared_dir {shared}: the cluster's nodes "
                          f"could not see the run's files; set output_dir={shared}/{config.name}")
    for entry in config.imports:
        if is_file_entry(entry) and not Path(entry).expanduser().resolve().is_relative_to(shared):
            raise ConfigError(f"imports: {entry} is not under backend.shared_dir {shared}: the cluster's workers import "
                              "it by that path; move it (and the files it imports) under the shared folder")


def agent_file(config: Config) -> Path:
    """``--train.agent_func_path``: the bridge itself locally; for a submitted job a one-line file under
    the shared run folder that imports it from the shipped code (``launch`` writes it)."""
    return run_dir(config) / "openrlhf" / "agent_func.py" if config.backend.ray_address else BRIDGE_FILE


def _launch(config: Config, argv: Sequence[str], env: dict[str, str], *, entrypoint_gpus: int = 0
            ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Wrap a command in ``ray job submit`` when ``backend.ray_address`` is set: its environment and our
    code (``py_modules``, so the cluster needs no longshort installed) travel in the job's runtime env,
    which every actor of the job inherits."""
    if not config.backend.ray_address:
        return tuple(argv), tuple(sorted(env.items()))
    check_shared_dir(config)
    submit = ["ray", "job", "submit", f"--address={config.backend.ray_address}",
              "--runtime-env-json", json.dumps({"env_vars": env, "py_modules": code_dirs()}, sort_keys=True)]
    if entrypoint_gpus:
        submit += ["--entrypoint-num-gpus", str(entrypoint_gpus)]
    return (*submit, "--", *argv), ()


def _step(config: Config, stage: str, title: str, subcommand: str, *args: str, marker: Path) -> Command:
    """One of our own preparation steps (``python -m longshort.trainers.openrlhf.launch ...``), run locally."""
    argv = (sys.executable, "-m", "longshort.trainers.openrlhf.launch", subcommand,
            "--config", str(run_dir(config) / "config.yaml"), *args)
    return Command(stage, title, argv, marker=str(marker))


def _adam(prefix: str) -> list[tuple[str, Any]]:
    return [(f"{prefix}adam.betas", ADAM_BETAS), (f"{prefix}adam.weight_decay", 0.0)]


def sft_commands(config: Config) -> list[Command]:
    """Per agent: render its cold-start examples for OpenRLHF, then full-parameter SFT on one node."""
    gpus, sft = config.backend.gpus_per_node, config.sft
    global_batch = sft.batch_size * sft.grad_accum
    if global_batch % gpus:
        raise ConfigError(f"sft.batch_size x sft.grad_accum = {global_batch} examples per optimiser step must be a "
                          f"multiple of backend.gpus_per_node={gpus} (one example per GPU per micro-batch)")
    commands = []
    for role, agent in config.agents.items():
        folder = run_dir(config) / "sft" / role
        data = run_dir(config) / "sft" / "openrlhf" / f"{role}.jsonl"
        commands.append(_step(config, "sft", f"render the {role} agent's cold-start examples as OpenRLHF SFT data",
                              "sft-data", "--role", role, marker=data.with_suffix(".done")))
        flags = _flags([
            ("model.model_name_or_path", agent.model.name_or_path),
            ("data.dataset", data),
            ("data.input_key", "input"),
            ("data.output_key", "output"),
            ("data.max_len", sft.max_length),
            ("train.max_epochs", sft.epochs),
            ("train.batch_size", global_batch),
            ("train.micro_batch_size", 1),
            ("adam.lr", sft.lr),
            *_adam(""),
            ("lr_scheduler", "cosine_with_min_lr"),
            ("lr_warmup_ratio", sft.warmup_ratio),
            ("min_lr_ratio", 0.0),
            ("ds.zero_stage", config.backend.zero_stage),
            ("ds.param_dtype", _param_dtype(agent.model.dtype)),
            ("ds.attn_implementation", config.backend.attn_implementation),
            ("model.gradient_checkpointing_enable", sft.gradient_checkpointing),
            ("ckpt.output_dir", sft_model_dir(config, role)),
            ("ckpt.path", folder / "ckpt"),
            ("ckpt.save_steps", sft.save_every),
            ("ckpt.max_num", CKPT_KEEP),
            ("ckpt.load_enable", True),
            ("logger.tensorboard_dir", folder / "tensorboard"),
            *tracking.openrlhf_flags(config, f"{config.name}-sft-{role}"),
            ("train.seed", config.seed),
        ])
        # The examples are already the exact text the agent sees; an empty template keeps OpenRLHF
        # from wrapping them in its default "User: {}\nAssistant: ".
        flags += ("--data.input_template", "")
        module = "openrlhf.cli.train_sft"  # run through sft_main, which feeds it our exact token ids
        argv, env = _launch(config, ["deepspeed", "--num_gpus", str(gpus), "--module",
                                     "longshort.trainers.openrlhf.sft_main", *flags],
                            tracking.openrlhf_env(config), entrypoint_gpus=gpus)
        commands.append(Command("sft", f"cold-start SFT of the {role} agent", argv, env,
                                str(folder / "DONE"), module, flags, cleanup=(str(folder / "ckpt"),)))
    return commands


def partner_specs(config: Config, phase: Phase) -> list[PartnerSpec]:
    """The frozen partners of a phase, each on ``backend.partner_gpus`` GPUs (one vLLM engine per GPU), named
    per run folder and phase: Ray actor names are cluster-wide, and two runs sharing one ``name`` must not
    share a partner (one would play against the other's checkpoint)."""
    run = hashlib.sha1(str(run_dir(config)).encode()).hexdigest()[:12]  # two runs of one recipe on a cluster
    specs = []
    for role, checkpoint in phase.partners.items():
        agent = config.agents[role]
        specs.append(PartnerSpec(
            role=role, model=checkpoint, name=f"longshort-{config.name}-{run}-phase{phase.index}-{role}",
            replicas=config.backend.partner_gpus, engine="vllm", num_gpus=1.0, dtype=agent.model.dtype,
            seed=config.seed,
            engine_kwargs={"gpu_memory_utilization": PARTNER_GPU_MEMORY, "max_model_len": max_len(config),
                           "enable_prefix_caching": True}))
    return specs


def rl_commands(config: Config) -> list[Command]:
    """Per phase: write its problems, then one OpenRLHF GRPO run of the phase's agent."""
    placement = layout(config)
    rollout, trainer, backend = config.rollout, config.trainer, config.backend
    samples = rollout.problems_per_step * rollout.group_size
    actor_gpus = placement.actor_nodes * placement.actor_gpus_per_node
    if samples % (trainer.micro_batch_size * actor_gpus):
        raise ConfigError(
            f"rollout.problems_per_step x rollout.group_size = {samples} episodes per step must be a multiple of "
            f"trainer.micro_batch_size x training GPUs = {trainer.micro_batch_size} x {actor_gpus} "
            "(one optimiser step per RL step, as the paper)")
    container = OmegaConf.to_container(OmegaConf.structured(config))
    commands = []
    for phase in phases(config):
        agent = config.agents[phase.role]
        prompts = phase.dir / "prompts.jsonl"
        commands.append(_step(config, "rl", f"phase {phase.index}: write its {phase.steps * rollout.problems_per_step} "
                              "training problems", "prompts", "--phase", str(phase.index),
                              marker=prompts.with_suffix(".done")))
        kl = trainer.kl_coef > 0
        flags = _flags([
            ("actor.model_name_or_path", phase.init),
            ("train.agent_func_path", agent_file(config)),
            ("actor.num_nodes", placement.actor_nodes),
            ("actor.num_gpus_per_node", placement.actor_gpus_per_node),
            ("vllm.num_engines", backend.vllm_num_engines),
            ("vllm.tensor_parallel_size", backend.vllm_tensor_parallel_size),
            ("vllm.gpu_memory_utilization", backend.vllm_gpu_memory_utilization),
            ("vllm.enable_prefix_caching", True),  # every turn re-reads the transcript so far
            ("algo.advantage.estimator", trainer.algorithm),
            ("rollout.n_samples_per_prompt", rollout.group_size),
            ("algo.kl.init_coef", trainer.kl_coef),  # 0: OpenRLHF builds no reference model
            ("algo.kl.use_loss", kl),
            ("algo.kl.estimator", trainer.kl_estimator if kl else None),
            ("train.colocate_actor_ref", kl),  # the reference shares the actor's GPUs, as in TRL
            ("ref.num_nodes", placement.actor_nodes if kl else None),
            ("ref.num_gpus_per_node", placement.actor_gpus_per_node if kl else None),
            ("actor.eps_clip", trainer.clip_eps),
            ("data.prompt_dataset", prompts),
            ("data.input_key", "prompt"),
            ("data.label_key", "answer"),
            ("data.max_len", max_len(config)),
            ("rollout.max_new_tokens", agent.sampling.max_new_tokens),
            ("rollout.temperature", agent.sampling.temperature),
            ("rollout.top_p", agent.sampling.top_p),
            ("rollout.batch_size", rollout.problems_per_step),
            ("rollout.micro_batch_size", trainer.micro_batch_size),
            ("train.batch_size", samples),
            ("train.micro_batch_size", trainer.micro_batch_size),
            ("ds.packing_samples", backend.packing),
            ("train.dynamic_batch_enable", backend.packing),
            ("train.max_tokens_per_gpu", train_tokens_per_gpu(config) if backend.packing else None),
            ("rollout.max_tokens_per_gpu", train_tokens_per_gpu(config) if backend.packing else None),
            ("ds.attn_implementation", backend.attn_implementation),
            ("train.max_epochs", trainer.updates_per_batch),
            ("train.num_episodes", 1),
            ("ds.zero_stage", backend.zero_stage),
            ("ds.param_dtype", _param_dtype(agent.model.dtype)),
            ("actor.gradient_checkpointing_enable", trainer.gradient_checkpointing),
            ("actor.adam.lr", trainer.lr),
            *_adam("actor."),
            ("actor.lr_scheduler", "cosine_with_min_lr"),
            ("actor.lr_warmup_ratio", trainer.warmup_ratio),
            ("actor.min_lr_ratio", 0.0),
            ("actor.max_norm", trainer.grad_clip),
            ("ckpt.output_dir", phase.dir / "model"),
            ("ckpt.path", phase.dir / "ckpt"),
            ("ckpt.save_steps", trainer.save_every),
            ("ckpt.max_num", CKPT_KEEP),
            ("ckpt.load_enable", True),
            ("logger.logging_steps", trainer.log_every),
            ("logger.tensorboard_dir", phase.dir / "tensorboard"),
            *tracking.openrlhf_flags(config, f"{config.name}-phase{phase.index}-{phase.role}"),
            ("train.seed", config.seed),
        ])
        bridge = BridgeConfig(phase.role, container, partner_specs(config, phase))
        module = "openrlhf.cli.train_ppo_ray"
        env = {BRIDGE_ENV: bridge.to_json(), **worker_env(config.imports), **tracking.openrlhf_env(config)}
        argv, env_pairs = _launch(config, [_python(config), "-m", module, *flags], env)
        partners = ", ".join(f"{role} frozen at {path}" for role, path in phase.partners.items())
        commands.append(Command("rl", f"phase {phase.index}: GRPO of the {phase.role} agent for {phase.steps} steps "
                                f"from {phase.init} ({partners})", argv, env_pairs,
                                str(phase.dir / "DONE"), module, flags, cleanup=(str(phase.dir / "ckpt"),)))
    return commands


def plan(config: Config, stages: Sequence[str] | None = None) -> list[Command]:
    """Every command of the ``sft`` and ``rl`` stages (of ``stages``, default ``config.stages``), in order."""
    if config.backend.name != "openrlhf":
        raise ConfigError(f"the OpenRLHF launcher needs backend.name=openrlhf (got {config.backend.name})")
    stages = config.stages if stages is None else stages
    commands: list[Command] = []
    if "sft" in stages:
        commands += sft_commands(config)
    if "rl" in stages:
        commands += rl_commands(config)
    return commands


def format_plan(commands: Sequence[Command]) -> str:
    return "\n".join(f"# [{command.stage}] {command.title}\n{command.shell()}\n" for command in commands)
