"""The whole pipeline's configuration: a typed schema, recipes, and command-line overrides.

A recipe is a YAML file in ``recipes/`` (shipped inside the package, so ``recipe=tiny`` resolves from
any working directory and after a plain ``pip install .``) or any path to a YAML file. It is merged
onto the structured schema below, then ``key=value`` overrides are applied. OmegaConf enforces the
types; this module turns its errors into one line that names the offending key and the closest
valid one, because a recipe typo should cost a user seconds, not a stack trace.

Every field carries its documentation in ``metadata["help"]`` (shown by ``--help-config``), and
string fields with a fixed set of values carry ``metadata["choices"]``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from longshort.registry import did_you_mean


class ConfigError(ValueError):
    """A recipe or override that cannot be applied; the message is one line and says how to fix it."""


def _f(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A documented dataclass field; mutable defaults are copied per instance."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)


# ----------------------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    name_or_path: str = _f("smollm2-135m", "Hub id, local HF directory, or alias (smollm2-135m).")
    dtype: str = _f("auto", "Weights dtype; auto picks bf16 where the hardware supports it.",
                    ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"))
    device: str = _f("auto", "Device for the embedded backend: auto, cpu, cuda, cuda:N.")
    add_tokens: List[str] = _f([], "Tokens added to the vocabulary after loading, each as one token with a "
                               "freshly drawn embedding row (e.g. ['[SKIP]'] for step-entropy compression).")


@dataclass
class SamplingConfig:
    temperature: float = _f(0.3, "Sampling temperature (0 = greedy).")
    top_p: float = _f(1.0, "Nucleus sampling mass.")
    top_k: int = _f(0, "Top-k cut-off (0 = off).")
    max_new_tokens: int = _f(2048, "Token budget of one turn of this agent.")


@dataclass
class AgentConfig:
    type: str = _f("long", "Registered agent type (agents/): long, short, single, or your own.")
    model: ModelConfig = _f(ModelConfig(), "The policy model of this agent.")
    sampling: SamplingConfig = _f(SamplingConfig(), "Sampling settings of this agent's turns.")
    trainable: bool = _f(True, "Whether RL updates this agent (False: a frozen partner).")
    system_prompt: Optional[str] = _f(None, "Replaces the agent type's built-in system prompt.")


@dataclass
class EnvConfig:
    name: str = _f("long_short", "Registered environment (envs/): long_short, single_turn, or your own.")
    max_turns: int = _f(8, "Turn cap: an episode still running after this many turns ends as a format failure.")
    max_total_tokens: int = _f(8192, "Budget of generated tokens over all agents and turns of one episode.")


@dataclass
class DataSourceConfig:
    source: str = _f("synthetic", "synthetic, a benchmark name (math500, gsm8k, ...), a .jsonl path, or a Hub id.")
    split: str = _f("train", "Split for Hub datasets; for synthetic data it selects a disjoint seed.")
    limit: Optional[int] = _f(None, "Use at most this many problems (None: all; synthetic: required count).")
    min_steps: int = _f(1, "Synthetic data: fewest arithmetic steps per problem.")
    max_steps: int = _f(3, "Synthetic data: most arithmetic steps per problem.")
    prompt_key: str = _f("problem", "JSONL/Hub field holding the question.")
    answer_key: str = _f("answer", "JSONL/Hub field holding the gold answer.")


@dataclass
class DataConfig:
    train: DataSourceConfig = _f(DataSourceConfig(limit=512), "Problems for SFT data and RL.")
    eval: DataSourceConfig = _f(DataSourceConfig(split="eval", limit=64), "Held-out problems for the run's evaluation stage.")


@dataclass
class RolloutConfig:
    engine: str = _f("hf", "Generation engine: hf (embedded), vllm, or remote (OpenAI-compatible).",
                     ("hf", "vllm", "remote"))
    group_size: int = _f(4, "Samples per problem (G); advantages are normalised within each group.")
    problems_per_step: int = _f(8, "Problems per RL step; a step rolls out problems_per_step x group_size episodes.")
    max_batch_size: int = _f(32, "Most sequences the engine decodes at once.")
    kv_cache_budget: int = _f(32768, "hf engine: tokens of keys/values kept between an agent's turns of an "
                                     "episode, so its next turn prefills only the new tokens (least recently "
                                     "used evicted first; 0 turns reuse off). SmolLM2-135M: 45 KiB a token in fp32.")
    remote_url: Optional[str] = _f(None, "Base URL of an OpenAI-compatible server for engine=remote.")


@dataclass
class VerifyConfig:
    fallbacks: bool = _f(True, "Without \\boxed{}, also accept 'the answer is X' phrases and the last number.")
    timeout: float = _f(5.0, "Seconds one equivalence check may take before it counts as wrong.")


@dataclass
class SkipRewardsConfig:
    ratio_high: float = _f(0.8, "skip_ratio: share of [SKIP] steps that earns bonus_high.")
    ratio_low: float = _f(0.5, "skip_ratio: share of [SKIP] steps that earns bonus_low.")
    bonus_high: float = _f(1.0, "skip_ratio: reward for ratio >= ratio_high (verified answers only).")
    bonus_low: float = _f(0.5, "skip_ratio: reward for ratio_low <= ratio < ratio_high (verified answers only).")
    max_skips: int = _f(100, "skip_count: more placeholders than this are penalised.")
    count_penalty: float = _f(-1.0, "skip_count: the penalty (the paper's text: -1.0; its code: -2.0).")
    max_tokens: int = _f(3500, "skip_length: more generated tokens than this are penalised.")
    length_penalty: float = _f(-1.0, "skip_length: the penalty.")
    placeholder: str = _f("[SKIP]", "The text that marks a skipped step.")


@dataclass
class RewardsConfig:
    weights: Dict[str, Dict[str, float]] = _f(
        {}, "Per agent role, reward term name -> weight (e.g. short: {correctness: 1.0}); every term is logged.")
    length_mode: str = _f("group_relative", "Token-cost form: the paper's group-relative length reward, or a linear cost.",
                          ("group_relative", "linear"))
    token_cost: float = _f(0.001, "Linear mode: reward lost per token the agent itself generated.")
    skip: SkipRewardsConfig = _f(SkipRewardsConfig(), "Thresholds of the step-entropy [SKIP] terms (skip_ratio, ...).")


@dataclass
class TrainerConfig:
    algorithm: str = _f("group_norm", "Advantage estimator: group_norm (GRPO), reinforce_baseline (REINFORCE++), rloo.",
                        ("group_norm", "reinforce_baseline", "rloo"))
    schedule: str = _f("alternating", "joint: all trainable agents learn from the same episodes; "
                       "alternating: one trains while the others are frozen, then swap.", ("joint", "alternating"))
    first_agent: str = _f("short", "Alternating schedule: the agent trained in the first phase.")
    phase_steps: int = _f(10, "Alternating schedule: RL steps before the trained agent swaps.")
    steps: int = _f(40, "Total RL steps (episodes batches).")
    lr: float = _f(1e-5, "Learning rate of every trained agent.")
    warmup_ratio: float = _f(0.1, "Fraction of steps with linear learning-rate warm-up, then cosine decay.")
    kl_coef: float = _f(0.0, "Weight of the KL penalty to the frozen reference (0: no reference model).")
    kl_estimator: str = _f("k3", "KL estimator of the penalty.", ("k1", "k2", "k3"))
    clip_eps: float = _f(0.2, "PPO clip range around the rollout's log-probabilities.")
    updates_per_batch: int = _f(1, "Optimiser passes over each batch of episodes.")
    micro_batch_size: int = _f(8, "Sequences per forward/backward; gradients accumulate to the batch.")
    grad_clip: float = _f(1.0, "Global gradient-norm clip.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory in the policy forward pass.")
    save_every: int = _f(10, "Checkpoint every this many RL steps (a killed run resumes from the last one).")
    log_every: int = _f(1, "Write metrics every this many RL steps.")


@dataclass
class SFTConfig:
    coldstart: str = _f("long_short", "Cold-start builder (longshort.coldstart): long_short transcripts from gold steps, "
                        "or entropy_skip: gold chains with their lowest-entropy steps pruned to [SKIP].")
    skip_kappa: float = _f(0.8, "entropy_skip: share of each chain's steps pruned (the lowest step entropy first).")
    examples: Optional[int] = _f(None, "Cold-start transcripts built from the training problems (None: one per problem).")
    lr: float = _f(1e-5, "Peak learning rate of cold-start SFT.")
    epochs: int = _f(3, "Passes over the cold-start examples.")
    batch_size: int = _f(8, "Examples per optimiser step (before accumulation).")
    grad_accum: int = _f(1, "Micro-batches accumulated per optimiser step.")
    warmup_ratio: float = _f(0.1, "Fraction of steps with linear warm-up before cosine decay.")
    max_length: int = _f(4096, "Examples are truncated to this many tokens.")
    gradient_checkpointing: bool = _f(False, "Trade compute for memory.")
    save_every: int = _f(50, "Checkpoint every this many optimiser steps.")


@dataclass
class EvalConfig:
    benchmarks: List[str] = _f(["math500", "aime24", "aime25", "amc23", "gpqa_diamond"],
                               "Benchmarks to evaluate (names from the benchmark registry).")
    mode: str = _f("pair", "pair: the Long-Short two-agent protocol; single: one model answers alone.", ("pair", "single"))
    samples: int = _f(1, "Samples per item; pass@1 is averaged over them and pass@k reported.")
    limit: Optional[int] = _f(None, "Evaluate at most this many items per benchmark.")
    temperature: float = _f(0.3, "Sampling temperature during evaluation.")
    max_new_tokens: int = _f(2048, "Token budget per turn during evaluation.")
    max_turns: int = _f(8, "Turn cap during evaluation.")


@dataclass
class BackendConfig:
    name: str = _f("embedded", "embedded: one process, PyTorch (CPU or one GPU); openrlhf: Ray + vLLM + DeepSpeed.",
                   ("embedded", "openrlhf"))
    ray_address: Optional[str] = _f(None, "Submit with `ray job submit` to this cluster (None: run locally).")
    num_nodes: int = _f(1, "OpenRLHF: nodes for the trained actor.")
    gpus_per_node: int = _f(8, "OpenRLHF: GPUs per node.")
    vllm_num_engines: int = _f(1, "OpenRLHF: vLLM engines serving the trained policy.")
    vllm_tensor_parallel_size: int = _f(1, "OpenRLHF: tensor parallel size of each vLLM engine.")
    vllm_gpu_memory_utilization: float = _f(0.5, "OpenRLHF: fraction of GPU memory vLLM may take.")
    partner_gpus: int = _f(1, "OpenRLHF: GPUs serving the frozen partner agent.")
    zero_stage: int = _f(2, "OpenRLHF: DeepSpeed ZeRO stage.")


@dataclass
class Config:
    name: str = _f("tiny", "Run name; the default output directory is runs/<name>.")
    output_dir: str = _f("runs/${name}", "Where the run writes config, data, checkpoints, logs and the summary.")
    seed: int = _f(42, "Seed of data generation, sampling and initialisation.")
    stages: List[str] = _f(["data", "sft", "rl", "eval"], "Pipeline stages to run, in order.")
    agents: Dict[str, AgentConfig] = _f({}, "The agents by role (long, short, ...); each has its own model and sampling.")
    env: EnvConfig = _f(EnvConfig(), "The environment that runs an episode.")
    data: DataConfig = _f(DataConfig(), "Training and held-out problems.")
    rollout: RolloutConfig = _f(RolloutConfig(), "How episodes are generated.")
    verify: VerifyConfig = _f(VerifyConfig(), "Answer extraction and equivalence.")
    rewards: RewardsConfig = _f(RewardsConfig(), "Reward terms and weights per agent.")
    trainer: TrainerConfig = _f(TrainerConfig(), "Multi-turn RL.")
    sft: SFTConfig = _f(SFTConfig(), "Cold-start supervised fine-tuning.")
    eval: EvalConfig = _f(EvalConfig(), "Benchmark evaluation.")
    backend: BackendConfig = _f(BackendConfig(), "Where training runs.")


STAGES = ("data", "sft", "rl", "eval")

# ------------------------------------------------------------------------------------------ recipes


def recipe_dir() -> Path:
    """The installed ``recipes`` package folder (the repository's ``recipes/`` after ``pip install -e .``)."""
    return Path(str(resources.files("recipes")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe name from ``recipes/`` or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if path.is_file():
            return path
        raise ConfigError(f"recipe file '{name_or_path}' does not exist")
    found = recipe_dir() / f"{name_or_path}.yaml"
    if found.is_file():
        return found
    names = list_recipes()
    raise ConfigError(f"no recipe '{name_or_path}'{did_you_mean(name_or_path, names)}; "
                      f"available: {', '.join(names)} (or pass a path to a .yaml file)")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe's mapping, with ``inherit: other_recipe`` merged underneath it."""
    if path in seen:
        raise ConfigError(f"recipe inheritance loops: {' -> '.join(p.stem for p in (*seen, path))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of config keys, got {type(data).__name__}")
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    base = _read_yaml(resolve_recipe(str(parent)), (*seen, path))
    return OmegaConf.to_container(OmegaConf.merge(base, data))


def load_config(recipe: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed, validated configuration for a recipe (name or path) plus ``key=value`` overrides."""
    schema = OmegaConf.structured(Config)
    layers: list[tuple[str, DictConfig]] = []
    if recipe is not None:
        path = resolve_recipe(recipe)
        layers.append((f"recipe {path}", _as_layer(_read_yaml(path))))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value (e.g. trainer.lr=1e-5)")
        layers.append((f"override {item}", _as_layer(OmegaConf.from_dotlist([item]))))
    merged = schema
    for where, layer in layers:
        merged = _merge(merged, layer, where)
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    _check_choices(config)
    _check_consistency(config)
    return config


def _as_layer(data: Any) -> DictConfig:
    return data if isinstance(data, DictConfig) else OmegaConf.create(data)


def _merge(base: DictConfig, layer: DictConfig, where: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{_explain(err)} [in {where}]") from None


def _explain(err: OmegaConfBaseException) -> str:
    """OmegaConf's multi-line error as one line naming the full key and a fix."""
    key = str(getattr(err, "full_key", None) or getattr(err, "key", None) or "?")
    first_line = str(err).splitlines()[0]
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        parent, _, leaf = key.rpartition(".")
        valid = _keys_at(parent)
        where = f"'{parent}'" if parent else "the top level"
        return f"unknown config key '{key}'{did_you_mean(leaf, valid)}; valid keys at {where}: {', '.join(valid)}"
    if isinstance(err, ValidationError):
        expected = _expected_type(key)
        return f"wrong type for '{key}': {first_line}" + (f" (expected {expected})" if expected else "")
    return f"invalid config at '{key}': {first_line}"


def _schema_at(path: str) -> tuple[Any, dataclasses.Field | None]:
    """Walk the schema along a dotted path: (the type found there, the last dataclass field), or (None, None)."""
    node: Any = Config
    last: dataclasses.Field | None = None
    for part in [p for p in path.split(".") if p]:
        if last is not None and last.name == "agents" and node is AgentConfig:
            last = _ROLE  # agents.<role> is a dict entry; its value is an AgentConfig
            continue
        if not dataclasses.is_dataclass(node):
            return None, None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None, None
        last = fields[part]
        node = _field_type(node, last)
    return node, last


_ROLE = field(metadata={"help": "an agent role"})


def _field_type(owner: type, f: dataclasses.Field) -> Any:
    """The annotated type of a field; for ``Dict[str, Dataclass]`` the dataclass."""
    hint = typing.get_type_hints(owner)[f.name]
    if typing.get_origin(hint) is dict:
        value_type = typing.get_args(hint)[1]
        if dataclasses.is_dataclass(value_type):
            return value_type
    return hint


def _keys_at(path: str) -> list[str]:
    node, _ = _schema_at(path)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _expected_type(path: str) -> str | None:
    node, last = _schema_at(path)
    return None if last is None or last is _ROLE else _type_name(node)


def _check_choices(config: Config) -> None:
    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{prefix}{key}.")
            return
        if not dataclasses.is_dataclass(obj):
            return
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"invalid value {value!r} for '{prefix}{f.name}'{did_you_mean(str(value), choices)}; "
                                  f"choose one of: {', '.join(choices)}")
            walk(value, f"{prefix}{f.name}.")

    walk(config, "")


def _check_consistency(config: Config) -> None:
    """Cross-field rules a type system cannot express."""
    if not config.agents:
        raise ConfigError("the config defines no agents: set agents.<role> in the recipe (see recipes/tiny.yaml)")
    for stage in config.stages:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage '{stage}' in 'stages'{did_you_mean(stage, STAGES)}; "
                              f"stages are: {', '.join(STAGES)}")
    for role in config.rewards.weights:
        if role not in config.agents:
            raise ConfigError(f"rewards.weights names agent '{role}'{did_you_mean(role, list(config.agents))} "
                              f"but agents are: {', '.join(config.agents)}")
    if config.trainer.schedule == "alternating" and config.trainer.first_agent not in config.agents:
        raise ConfigError(f"trainer.first_agent '{config.trainer.first_agent}' is not an agent"
                          f"{did_you_mean(config.trainer.first_agent, list(config.agents))}; "
                          f"agents are: {', '.join(config.agents)}")
    if config.rollout.group_size < 2 and config.trainer.algorithm in ("group_norm", "reinforce_baseline", "rloo"):
        raise ConfigError(f"rollout.group_size must be at least 2 for trainer.algorithm={config.trainer.algorithm} "
                          f"(advantages compare samples within a group), got {config.rollout.group_size}")
    if config.rollout.kv_cache_budget < 0:
        raise ConfigError(f"rollout.kv_cache_budget is a number of tokens (0 turns reuse off), got "
                          f"{config.rollout.kv_cache_budget}")




def to_yaml(config: Config) -> str:
    """The resolved configuration as YAML (what a run saves beside its outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def describe_schema() -> str:
    """Every config key with its type, default and documentation, for ``--help-config``."""
    lines: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            hint = _field_type(cls, f)
            if dataclasses.is_dataclass(hint) and f.name != "agents":
                lines.append(f"{prefix}{f.name}: {f.metadata['help']}")
                walk(hint, f"{prefix}{f.name}.")
                continue
            if f.name == "agents":
                lines.append(f"{prefix}agents.<role>: {f.metadata['help']}")
                walk(AgentConfig, f"{prefix}agents.<role>.")
                continue
            choices = f.metadata.get("choices")
            extra = f" [{' | '.join(choices)}]" if choices else ""
            lines.append(f"{prefix}{f.name} ({_type_name(hint)}){extra}: "
                         f"{f.metadata['help']}")

    walk(Config, "")
    return "\n".join(lines)
