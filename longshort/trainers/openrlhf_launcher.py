"""Scale-out on OpenRLHF 0.11.x: the Long-Short pipeline rendered as OpenRLHF commands, and run.

``plan(config)`` turns a recipe with ``backend.name=openrlhf`` into the commands of the paper's
pipeline, in order:

1. cold-start SFT of every agent: a small conversion step (its cold-start transcripts rendered as
   the exact text the agent sees, one row per own turn), then ``deepspeed --module
   openrlhf.cli.train_sft``;
2. alternating RL phases: a step that writes the phase's slice of the training problems, then
   ``python -m openrlhf.cli.train_ppo_ray`` training one agent with GRPO while the other agent's
   current checkpoint is served frozen (``longshort.trainers.partner``). Our env, agents and reward
   terms run inside OpenRLHF through the bridge file (``openrlhf_bridge.py``, passed as
   ``--train.agent_func_path``); it learns its role and partners from one JSON environment
   variable (``LONGSHORT_BRIDGE_CONFIG``), set in the process environment for a local run (Ray's
   local workers inherit it) or in the job's runtime env for ``ray job submit``.

WHY commands rather than calls: OpenRLHF's parsers are built inline under ``if __name__ ==
"__main__"``, so its CLI is the only stable interface, and a printed plan can be copied to a
cluster by hand. ``parse_flags`` runs OpenRLHF's own parser on rendered flags (no training), which
``run`` does before anything starts and the tests do for every recipe, so an upstream flag rename
fails fast. Nothing here imports openrlhf, ray, vllm or deepspeed at module level.

Run layout under ``output_dir``: ``data/train.jsonl`` (the data stage), ``sft/coldstart/<role>.jsonl``
(an agent's cold-start transcripts, ``longshort.coldstart``), ``sft/<role>/final`` (its SFT
checkpoint) and ``rl/phase<k>_<role>/{prompts.jsonl, model, ckpt, tensorboard}``. A step that
succeeds writes a marker (``DONE`` in its folder) and is skipped when run again.
"""
from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import importlib.util
import io
import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from omegaconf import OmegaConf

from longshort.config import Config, ConfigError, load_config, to_yaml
from longshort.trainers import tracking
from longshort.extensions import worker_env
from longshort.trainers.partner import PartnerSpec

OPENRLHF_VERSION = "0.11.2"  # the version whose flags these commands use (tests parse them with it)
BRIDGE_ENV = "LONGSHORT_BRIDGE_CONFIG"
BRIDGE_FILE = Path(__file__).with_name("openrlhf_bridge.py")
PROMPT_TOKENS = 1024  # room for an agent's chat-templated system prompt and question (~300 + question)
SEPARATOR_TOKENS = 4  # per turn, for the separators between turns
PARTNER_GPU_MEMORY = 0.9  # the partner has its GPU to itself (the paper's partner servers use 0.9)


# ------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Command:
    """One step of the plan: a process, the environment it adds, and the marker written when it succeeds.

    ``module`` and ``flags`` repeat the OpenRLHF part of ``argv`` (None for our own steps), so the
    flags can be checked against OpenRLHF's parser without parsing the launcher prefix.
    """

    stage: str
    title: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    marker: str | None = None
    module: str | None = None
    flags: tuple[str, ...] = ()

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
                "longshort.trainers.openrlhf_launcher. A local run passes it by inheritance to the Ray instance that "
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


def _initial_checkpoints(config: Config) -> dict[str, str]:
    """Every agent's weights before RL: its SFT output when the run has an sft stage, else its base model."""
    return {role: str(sft_model_dir(config, role)) if "sft" in config.stages else agent.model.name_or_path
            for role, agent in config.agents.items()}


def final_checkpoints(config: Config) -> dict[str, str]:
    """The checkpoint of every agent once the planned stages have run (what evaluation should load)."""
    latest = _initial_checkpoints(config)
    if "rl" in config.stages:
        for phase in phases(config):
            latest[phase.role] = str(phase.dir / "model")
    return latest


# ------------------------------------------------------------------------------------------- rendering


def _flags(pairs: Sequence[tuple[str, Any]]) -> tuple[str, ...]:
    """``--key value`` pairs; True renders a bare switch, False and None render nothing."""
    out: list[str] = []
    for key, value in pairs:
        if value is None or value is False:
            continue
        out.append(f"--{key}")
        if value is not True:
            out.append(str(value))
    return tuple(out)


def _param_dtype(dtype: str) -> str:
    return "fp16" if dtype in ("fp16", "float16") else "bf16"  # DeepSpeed trains in bf16 or fp16 only


def _python(config: Config) -> str:
    """This interpreter locally; ``python3`` of the cluster's image when the command is submitted."""
    return "python3" if config.backend.ray_address else sys.executable


def _launch(config: Config, argv: Sequence[str], env: dict[str, str], *, entrypoint_gpus: int = 0
            ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Wrap a command in ``ray job submit`` when ``backend.ray_address`` is set (its environment then
    travels in the job's runtime env, which every actor of the job inherits)."""
    if not config.backend.ray_address:
        return tuple(argv), tuple(sorted(env.items()))
    submit = ["ray", "job", "submit", f"--address={config.backend.ray_address}"]
    if env:
        submit += ["--runtime-env-json", json.dumps({"env_vars": env}, sort_keys=True)]
    if entrypoint_gpus:
        submit += ["--entrypoint-num-gpus", str(entrypoint_gpus)]
    return (*submit, "--", *argv), ()


def _step(config: Config, stage: str, title: str, subcommand: str, *args: str, marker: Path) -> Command:
    """One of our own preparation steps (``python -m longshort.trainers.openrlhf_launcher ...``), run locally."""
    argv = (sys.executable, "-m", "longshort.trainers.openrlhf_launcher", subcommand,
            "--config", str(run_dir(config) / "config.yaml"), *args)
    return Command(stage, title, argv, marker=str(marker))


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
            ("lr_scheduler", "cosine_with_min_lr"),
            ("lr_warmup_ratio", sft.warmup_ratio),
            ("min_lr_ratio", 0.0),
            ("ds.zero_stage", config.backend.zero_stage),
            ("ds.param_dtype", _param_dtype(agent.model.dtype)),
            ("model.gradient_checkpointing_enable", sft.gradient_checkpointing),
            ("ckpt.output_dir", sft_model_dir(config, role)),
            ("ckpt.path", folder / "ckpt"),
            ("ckpt.save_steps", sft.save_every),
            ("ckpt.load_enable", True),
            ("logger.tensorboard_dir", folder / "tensorboard"),
            *tracking.openrlhf_flags(config, f"{config.name}-sft-{role}"),
            ("train.seed", config.seed),
        ])
        # The examples are already the exact text the agent sees; an empty template keeps OpenRLHF
        # from wrapping them in its default "User: {}\nAssistant: ".
        flags += ("--data.input_template", "")
        module = "openrlhf.cli.train_sft"
        argv, env = _launch(config, ["deepspeed", "--num_gpus", str(gpus), "--module", module, *flags],
                            tracking.openrlhf_env(config), entrypoint_gpus=gpus)
        commands.append(Command("sft", f"cold-start SFT of the {role} agent", argv, env,
                                str(folder / "DONE"), module, flags))
    return commands


def partner_specs(config: Config, phase: Phase) -> list[PartnerSpec]:
    """The frozen partners of a phase, each on ``backend.partner_gpus`` GPUs (one vLLM engine per GPU)."""
    specs = []
    for role, checkpoint in phase.partners.items():
        agent = config.agents[role]
        specs.append(PartnerSpec(
            role=role, model=checkpoint, name=f"longshort-{config.name}-phase{phase.index}-{role}",
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
            ("train.agent_func_path", BRIDGE_FILE),
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
            ("train.max_epochs", trainer.updates_per_batch),
            ("train.num_episodes", 1),
            ("ds.zero_stage", backend.zero_stage),
            ("ds.param_dtype", _param_dtype(agent.model.dtype)),
            ("actor.gradient_checkpointing_enable", trainer.gradient_checkpointing),
            ("actor.adam.lr", trainer.lr),
            ("actor.lr_scheduler", "cosine_with_min_lr"),
            ("actor.lr_warmup_ratio", trainer.warmup_ratio),
            ("actor.min_lr_ratio", 0.0),
            ("actor.max_norm", trainer.grad_clip),
            ("ckpt.output_dir", phase.dir / "model"),
            ("ckpt.path", phase.dir / "ckpt"),
            ("ckpt.save_steps", trainer.save_every),
            ("ckpt.save_hf", True),
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
                                str(phase.dir / "DONE"), module, flags))
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


# ------------------------------------------------------------------------------------------- running


def parse_flags(module: str, flags: Sequence[str]) -> SimpleNamespace:
    """The arguments OpenRLHF's own parser and validation block make of ``flags``, without training.

    The parser is built inline under ``if __name__ == "__main__"``, so the module's source is run
    under that name with its ``train`` replaced by a function that keeps the arguments. Top-level
    imports that fail on this machine (vLLM, DeepSpeed, flash-attn and what imports them: GPU-only)
    are skipped, since only ``train`` uses them; a parser that needed one would fail loudly with a
    NameError. Raises ValueError with OpenRLHF's message when it rejects the flags.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"{module} is not installed: pip install --no-deps openrlhf=={OPENRLHF_VERSION}")
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    captured: list[SimpleNamespace] = []
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": spec.origin, "__builtins__": builtins}
    saved, output = sys.argv, io.StringIO()
    sys.argv = [spec.origin, *flags]
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            for node in tree.body:
                code = compile(ast.Module([node], type_ignores=[]), spec.origin, "exec")
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    with contextlib.suppress(Exception):
                        exec(code, namespace)
                elif isinstance(node, ast.FunctionDef) and node.name == "train":
                    namespace["train"] = captured.append
                else:
                    exec(code, namespace)
    except (SystemExit, AssertionError) as error:
        lines = output.getvalue().strip().splitlines()  # argparse prints its usage, then the error
        raise ValueError(f"{module} rejects the flags: {lines[-1] if lines else error}") from None
    finally:
        sys.argv = saved
    if not captured:
        raise AssertionError(f"{module} has no `if __name__ == '__main__'` block that calls train(args)")
    return captured[0]


def check_flags(commands: Sequence[Command]) -> None:
    """Raise ValueError when the installed OpenRLHF rejects the flags of any command."""
    for command in commands:
        if command.module is not None:
            try:
                parse_flags(command.module, command.flags)
            except ValueError as error:
                raise ValueError(f"{command.title}: {error}") from None


def run(config: Config, dry_run: bool = False, stages: Sequence[str] | None = None,
        echo: Callable[[str], None] = print) -> list[Command]:
    """Run (or with ``dry_run`` only print) the planned commands in order; finished steps are skipped.

    Before anything starts, the flags go through the installed OpenRLHF's parser when it is
    importable here (with ``ray job submit`` the submitting machine may not have it).
    """
    commands = plan(config, stages)
    if dry_run:
        echo(format_plan(commands))
        return commands
    if importlib.util.find_spec("openrlhf") is not None:
        check_flags(commands)
    run_dir(config).mkdir(parents=True, exist_ok=True)
    (run_dir(config) / "config.yaml").write_text(to_yaml(config))
    for command in commands:
        if command.marker and Path(command.marker).exists():
            echo(f"# done already: {command.title} ({command.marker})")
            continue
        echo(f"# [{command.stage}] {command.title}\n{command.shell()}")
        subprocess.run(command.argv, env={**os.environ, **dict(command.env)}, check=True)
        if command.marker:
            Path(command.marker).parent.mkdir(parents=True, exist_ok=True)
            Path(command.marker).write_text(json.dumps({"title": command.title}) + "\n")
    return commands


# ------------------------------------------------------------------------------------------- preparation steps


def write_phase_prompts(config: Config, phase_index: int) -> Path:
    """The phase's problems: the ones the embedded trainer draws for the same steps.

    OpenRLHF runs over its prompt file ``train.num_episodes`` times; giving each phase exactly the
    problems of its steps (``trainers.schedule.ProblemStream``: a seeded order per epoch, continued
    across phases) makes it stop after ``steps`` steps, on the same problems as the embedded backend.
    """
    from longshort.data import Problem
    from longshort.trainers.schedule import ProblemStream

    phase = next(p for p in phases(config) if p.index == phase_index)
    source = run_dir(config) / "data" / "train.jsonl"
    with source.open(encoding="utf-8") as rows:  # written by the data stage with save_jsonl
        problems = [Problem.from_dict(json.loads(line)) for line in rows if line.strip()]
    if not problems:
        raise ConfigError(f"no training problems in {source}: run the data stage first")
    drawn = ProblemStream(problems, config.seed, cursor=phase.first_problem).take(
        phase.steps * config.rollout.problems_per_step)
    target = phase.dir / "prompts.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for problem in drawn:
            handle.write(json.dumps({"prompt": problem.prompt, "answer": problem.answer}, ensure_ascii=False) + "\n")
    return target


def openrlhf_sft_rows(example, tokenizer) -> list[dict[str, str]]:
    """One embedded SFT example (``longshort.sft.build_examples``) as OpenRLHF SFT rows, one per own turn.

    OpenRLHF's SFT trains one response per row after a plain-text prompt (its multi-turn mode would
    re-render chat messages, and our turns live inside one assistant message). A causal LM's loss on
    a token depends only on the tokens before it, so one row per own turn, with everything before the
    turn as the prompt, trains exactly the token losses of the embedded example; only the batching
    differs. The prompt is decoded with its special tokens; OpenRLHF re-tokenizes ``input + output``
    as one text, which can differ from our turn-by-turn tokens only where the two meet. The output ends
    with the EOS token, which OpenRLHF always trains (ending it ourselves avoids its `` <eos>`` with a
    space); the embedded SFT trains no EOS, since our engines end a turn at its closing tag.
    """
    ids, mask, rows, start = example.input_ids, example.loss_mask, [], None
    for index, own in enumerate([*mask, 0]):
        if own and start is None:
            start = index
        elif not own and start is not None:
            rows.append({"input": tokenizer.decode(ids[:start]),
                         "output": tokenizer.decode(ids[start:index]) + tokenizer.eos_token})
            start = None
    return rows


def write_sft_data(config: Config, role: str) -> Path:
    """Render the agent's cold-start transcripts (``longshort.coldstart`` records) for OpenRLHF's SFT."""
    from transformers import AutoTokenizer

    from longshort.coldstart import load_coldstart
    from longshort.rollout import build_agents
    from longshort.sft import build_examples

    source = coldstart_path(config, role)
    if not source.is_file():
        raise ConfigError(f"no cold-start transcripts for the {role} agent at {source} "
                          "(write them with longshort.coldstart.write_coldstart before the sft stage)")
    tokenizer = AutoTokenizer.from_pretrained(config.agents[role].model.name_or_path)
    examples = build_examples(build_agents(config)[role], load_coldstart(source, role), tokenizer,
                              config.sft.max_length)
    target = run_dir(config) / "sft" / "openrlhf" / f"{role}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as out:
        for example in examples:
            for row in openrlhf_sft_rows(example, tokenizer):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """A plan's preparation steps: ``sft-data --role R`` and ``prompts --phase K`` (``--config``: the run's YAML)."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    sub = parser.add_subparsers(dest="step", required=True)
    sft = sub.add_parser("sft-data", help="render an agent's cold-start examples as OpenRLHF SFT data")
    sft.add_argument("--config", required=True)
    sft.add_argument("--role", required=True)
    prompts = sub.add_parser("prompts", help="write the training problems of one RL phase")
    prompts.add_argument("--config", required=True)
    prompts.add_argument("--phase", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        path = write_sft_data(config, args.role) if args.step == "sft-data" else write_phase_prompts(config, args.phase)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
