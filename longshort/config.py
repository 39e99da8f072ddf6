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
import importlib.util
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from longshort.errors import UserError
from longshort.paths import read_user_text
from longshort.registry import did_you_mean


class ConfigError(UserError, ValueError):
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
    split: str = _f("train", "Split for Hub datasets; for synthetic data it selects a disjoint seed: train, dev "
                    "(for choosing levers and settings) or eval (held out, for the final number).")
    limit: Optional[int] = _f(None, "Use at most this many problems (None: all; synthetic: required count).")
    min_steps: int = _f(1, "Synthetic data: fewest arithmetic steps per problem.")
    max_steps: int = _f(3, "Synthetic data: most arithmetic steps per problem.")
    prompt_key: str = _f("problem", "JSONL/Hub field holding the question.")
    answer_key: str = _f("answer", "JSONL/Hub field holding the gold answer.")
    answer_from: str = _f("field", "JSONL/Hub sources: field keeps answer_key's text as the gold answer; boxed takes "
                          "the last \\boxed{} in it (MATH's solutions), keeping the text in meta.solution.",
                          ("field", "boxed"))


@dataclass
class DataConfig:
    train: DataSourceConfig = _f(DataSourceConfig(limit=512), "Problems for SFT data and RL.")
    eval: DataSourceConfig = _f(DataSourceConfig(split="eval", limit=64), "Held-out problems for the run's evaluation stage.")
    seed: Optional[int] = _f(None, "Seed of the synthetic problems (None: the run's seed), so runs with other seeds "
                             "can still train and be evaluated on the same problems.")


@dataclass
class RolloutConfig:
    engine: str = _f("hf", "Generation engine: hf (embedded), vllm, remote (OpenAI-compatible), or your own.")
    group_size: int = _f(4, "Samples per problem (G); advantages are normalised within each group.")
    problems_per_step: int = _f(8, "Problems per RL step; a step rolls out problems_per_step x group_size episodes.")
    max_batch_size: int = _f(32, "Most sequences the engine decodes at once.")
    kv_cache_budget: int = _f(32768, "hf engine: tokens of keys/values kept between an agent's turns of an "
                                     "episode, so its next turn prefills only the new tokens (least recently "
                                     "used evicted first; 0 turns reuse off). SmolLM2-135M: 45 KiB a token in fp32.")
    pack_weights: bool = _f(True, "hf engine, bf16 model on CPU: while generating, run the linear layers on copies "
                                  "of their weights laid out once for oneDNN (same numbers, faster decode steps; "
                                  "the weights' size again in memory during rollouts). false: no copies.")
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


LENGTH_GATES = ("correct", "paper")  # when the length term pays (rewards.core.length)


@dataclass
class RewardsConfig:
    weights: Dict[str, Dict[str, float]] = _f(
        {}, "Per agent role, reward term name -> weight (e.g. short: {correctness: 1.0}); every term is logged.")
    length_mode: str = _f("group_relative", "Token-cost form: the paper's group-relative length reward, or a linear cost.",
                          ("group_relative", "linear"))
    token_cost: float = _f(0.001, "Linear mode: reward lost per token the agent itself generated.")
    length_gate: str = _f("correct", "When the length term pays: correct (in a correct episode only; a wrong one gets "
                          "the group's lowest length value, so no wrong episode out-scores a right one) or paper (the "
                          "paper's code: the long agent's term ungated, the answering agent's Kimi-1.5 style).",
                          LENGTH_GATES)
    skip: SkipRewardsConfig = _f(SkipRewardsConfig(), "Thresholds of the step-entropy [SKIP] terms (skip_ratio, ...).")


@dataclass
class TrainerConfig:
    algorithm: str = _f("group_norm", "Advantage estimator: group_norm (GRPO), reinforce_baseline (REINFORCE++), rloo, "
                        "or your own (@register_advantage).")
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


SYNTHESIS_END_AT = ("last", "first")  # where the synthesis cuts a chain (analysis.synthesis.SynthesisConfig.end_at)


@dataclass
class SynthesisColdstartConfig:
    """``sft.coldstart: synthesis``: the paper's cold start from a teacher's long chains of thought."""

    teacher: str = _f("smollm2-135m", "Model that writes the long chains and answers the Monte Carlo rollouts "
                      "(the paper: an R1-distill model, e.g. deepseek-ai/DeepSeek-R1-Distill-Qwen-7B).")
    engine: str = _f("hf", "Engine serving the teacher: hf (embedded), vllm (on the node's GPUs), remote (a served model).",
                     ("hf", "vllm", "remote"))
    remote_url: Optional[str] = _f(None, "engine=remote: base URL of the OpenAI-compatible server serving `teacher`.")
    dtype: str = _f("auto", "Teacher weights dtype (hf and vllm engines).")
    chains: Optional[str] = _f(None, "JSONL of existing chains ({id or problem/question, response or thought}) used "
                               "instead of generating them; the teacher still scores the thoughts.")
    format: str = _f("forced", "r1: no system prompt, the teacher answers freely after </think> (R1-distill models); "
                     "forced: a step-by-step system prompt and a forced '\\boxed{' answer (chat models).", ("r1", "forced"))
    chain_tokens: int = _f(2048, "Token budget of one generated chain of thought.")
    chain_temperature: float = _f(0.6, "Sampling temperature of the chains (R1's recommended 0.6).")
    chunker: str = _f("rule", "How steps are grouped into thoughts: rule (discourse markers) or llm (the paper's "
                      "prompt, on the teacher; falls back to rule when it fails).", ("rule", "llm"))
    thought_min_steps: int = _f(1, "Rule chunker: a marker starts a new thought only after this many steps.")
    thought_max_steps: int = _f(1, "Rule chunker: most steps in one thought. 1: every step (paragraph) is scored and "
                                "placed on its own, so a redundant step never rides into a long turn with an "
                                "important one, and long turns fit the long agent's max_new_tokens.")
    rollouts: int = _f(5, "N: answers sampled after every prefix of thoughts (the paper's Fig. 1: 5; fewer make "
                       "one lucky sample a thought's whole gain).")
    rollout_temperature: float = _f(0.6, "Sampling temperature of the rollouts.")
    answer_tokens: int = _f(512, "Token budget of one rollout's answer after </think>.")
    decay: str = _f("exp", "delta(y_i) of the importance score S_i = (A_i - A_(i-1)) * delta(y_i), A_0 the "
                    "no-thinking accuracy (our reading of the paper).", ("exp", "linear"))
    lam: float = _f(1.0, "Rate of the exp decay.")
    top_fraction: float = _f(0.3, "Share of a chain's thoughts (highest S_i, positive only) the long agent writes "
                             "in full.")
    threshold: Optional[float] = _f(None, "Instead of top_fraction: thoughts with S_i >= threshold (and > 0) are the "
                                    "long agent's.")
    max_chars: int = _f(300, "compressor=llm: longest rewrite accepted (else the rule's equations are used).")
    keep_first: bool = _f(False, "The first thought is always the long agent's too. Either way the equations of the "
                          "thoughts before the first important one open the first long turn (never deleted).")
    end_at: str = _f("last", "Where a chain is cut: at its last prefix whose rollouts reach the gold answer, or at "
                     "the first with the chain's best accuracy (what follows is left out instead of compressed).",
                     SYNTHESIS_END_AT)
    compressor: str = _f("rule", "How the short agent's turns are compressed: rule (the equations the thoughts state "
                         "that repeat no earlier one), or llm (the teacher rewrites).", ("rule", "llm"))
    batch_problems: int = _f(16, "Problems processed together; progress is saved after each batch (resumable).")
    max_batch_size: int = _f(32, "hf engine: most sequences decoded at once.")
    tensor_parallel_size: int = _f(1, "vllm engine: GPUs per teacher engine.")
    gpu_memory_utilization: float = _f(0.9, "vllm engine: fraction of GPU memory the teacher may take.")


STEP_SCORES = ("mean", "sum", "body")  # what analysis.scoring.StepEntropy.ranking can rank steps by


@dataclass
class SFTConfig:
    coldstart: str = _f("long_short", "Cold-start builder (longshort.coldstart): long_short transcripts from gold steps, "
                        "synthesis: the paper's (a teacher's long chains, chunked, scored by Monte Carlo rollouts), "
                        "entropy_skip: gold chains with their lowest-entropy steps pruned to [SKIP], or longcot: "
                        "one model's long chains with known redundancy (longshort.data.longchains).")
    synthesis: SynthesisColdstartConfig = _f(SynthesisColdstartConfig(), "Settings of sft.coldstart=synthesis.")
    skip_kappa: float = _f(0.8, "entropy_skip: share of each chain's steps pruned (the lowest step entropy first).")
    skip_score: str = _f("mean", "entropy_skip: the step score ranked for pruning (analysis.scoring.StepEntropy): mean "
                         "(the paper's length-normalised step entropy), sum (its v1) or body (the mean after each "
                         "step's opener words).", STEP_SCORES)
    chains: str = _f("gold", "entropy_skip: prune the gold solutions, or long chains with known redundancy "
                     "(longshort.data.longchains; the longcot builder always uses those).", ("gold", "long"))
    redundancy: float = _f(0.8, "Long chains (longcot, entropy_skip with chains=long): share of redundant steps.")
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
    weights: List[str] = _f(["base", "sft", "rl"], "Pipeline eval stage: which weights to evaluate on the held-out "
                            "problems (base, and the sft / rl stages that are in `stages`).")


@dataclass
class BackendConfig:
    name: str = _f("embedded", "embedded: one process, PyTorch (CPU or one GPU); openrlhf: Ray + vLLM + DeepSpeed.",
                   ("embedded", "openrlhf"))
    ray_address: Optional[str] = _f(None, "Submit with `ray job submit` to this cluster (None: run locally).")
    num_nodes: int = _f(1, "OpenRLHF: nodes for the trained actor.")
    gpus_per_node: int = _f(8, "OpenRLHF: GPUs per node.")
    vllm_num_engines: int = _f(1, "OpenRLHF: vLLM engines serving the trained policy.")
    vllm_tensor_parallel_size: int = _f(1, "OpenRLHF: tensor parallel size of each vLLM engine.")
    vllm_gpu_memory_utilization: float = _f(0.9, "OpenRLHF: fraction of its GPU the policy's vLLM engine may take "
                                            "(it has GPUs of its own: training is not colocated with it).")
    partner_gpus: int = _f(1, "OpenRLHF: GPUs serving the frozen partner agent.")
    zero_stage: int = _f(2, "OpenRLHF: DeepSpeed ZeRO stage.")
    gpu_memory_gib: float = _f(80.0, "OpenRLHF: memory of one GPU; the preflight's per-GPU estimate must fit in it.")
    attn_implementation: str = _f("flash_attention_2", "OpenRLHF: attention of the trained models (--ds.attn_implementation: "
                                  "flash_attention_2 needs the flash-attn package; sdpa or eager need nothing).")
    packing: bool = _f(False, "OpenRLHF: pack episodes into token-budgeted micro-batches (--ds.packing_samples "
                       "--train.dynamic_batch_enable) instead of trainer.micro_batch_size episodes.")
    max_tokens_per_gpu: Optional[int] = _f(None, "OpenRLHF with packing: tokens per micro-batch and GPU, in training "
                                           "and for log-probs (None: one longest episode: the prompt and env.max_turns turns at their cap).")
    disk_gib: Optional[float] = _f(None, "OpenRLHF: disk the run may fill under output_dir, in GiB; the preflight's "
                                   "disk estimate must fit in it (None: the free space of output_dir's filesystem here).")
    shared_dir: Optional[str] = _f(None, "OpenRLHF with ray_address: a filesystem mounted at this same path on every "
                                   "node and here; output_dir must lie under it (jobs read and write run files there).")


@dataclass
class WandbConfig:
    project: Optional[str] = _f(None, "Weights & Biases project: set it to log the RL metrics and episode samples there "
                                "too (pip install 'longshort[wandb]'); None: W&B is off and never imported.")
    mode: str = _f("online", "online: stream to the W&B server; offline: keep the run under <output_dir>/rl/wandb "
                   "(upload it later with `wandb sync`).", ("online", "offline"))
    entity: Optional[str] = _f(None, "W&B entity (user or team); None: the account's default.")
    group: Optional[str] = _f(None, "W&B group of the run (e.g. one per sweep).")
    name: Optional[str] = _f(None, "W&B run name; None: the config's name.")
    tags: List[str] = _f([], "W&B tags of the run.")
    episodes_per_step: int = _f(8, "Episodes per logged RL step in the W&B episode table (round-robin over outcomes).")


@dataclass
class LoggingConfig:
    wandb: WandbConfig = _f(WandbConfig(), "Weights & Biases (optional): the metrics of metrics.jsonl/TensorBoard and "
                            "a table of episode samples per step.")


@dataclass
class Config:
    name: str = _f("tiny", "Run name; the default output directory is runs/<name>.")
    imports: List[str] = _f([], "Your own modules (dotted names) or .py files (relative to the recipe) that register "
                            "agents, envs, reward terms, estimators, cold-start builders or engines; imported before "
                            "anything is built, in every process that loads the recipe (longshort.extensions).")
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
    logging: LoggingConfig = _f(LoggingConfig(), "Experiment trackers besides metrics.jsonl and TensorBoard.")


STAGES = ("data", "sft", "rl", "eval")

# ------------------------------------------------------------------------------------------ recipes


def recipe_dir() -> Path:
    """The installed ``recipes`` package folder (the repository's ``recipes/`` after ``pip install -e .``)."""
    return Path(str(resources.files("recipes")))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe name from ``recipes/`` or a path to a YAML file."""
    return resolve_yaml(name_or_path, recipe_dir(), "recipe", ConfigError)


def resolve_yaml(name_or_path: str, folder: Path, kind: str, error: type[Exception]) -> Path:
    """A YAML spec by name from ``folder`` or by path; ``error`` (one line, with did-you-mean) when missing.
    Recipes and ``longshort.reproduce``'s table specs share this rule."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        if path.is_file():
            return path
        raise error(f"{kind} file '{name_or_path}' does not exist")
    found = folder / f"{name_or_path}.yaml"
    if found.is_file():
        return found
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    raise error(f"no {kind} '{name_or_path}'{did_you_mean(name_or_path, names)}; "
                f"available: {', '.join(names)} (or pass a path to a .yaml file)")


class _Replace(dict):
    """A mapping tagged ``!replace`` in a recipe: it replaces the inherited mapping instead of merging."""


class _RecipeLoader(yaml.SafeLoader):
    pass


_RecipeLoader.add_constructor("!replace", lambda loader, node: _Replace(loader.construct_mapping(node, deep=True)))


def _replace_marked(base: dict, data: dict) -> dict:
    """``data`` with its ``!replace`` mappings made plain, after dropping what they replace from ``base``."""
    out = {}
    for key, value in data.items():
        if isinstance(value, _Replace):
            base.pop(key, None)
            value = dict(value)
        if isinstance(value, dict):
            value = _replace_marked(base.get(key) if isinstance(base.get(key), dict) else {}, value)
        out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A recipe's mapping, with ``inherit: other_recipe`` merged underneath it.

    Mappings merge key by key, so a recipe that inherits keeps its parent's agents beside its own. To
    define a mapping anew (a team whose env has other roles than the parent's), tag it ``!replace``:
    ``agents: !replace {planner: ..., solver: ...}`` (also ``weights: !replace`` under ``rewards``).
    ``imports:`` lists add up along the chain, and a relative ``.py`` entry is taken from the folder of
    the recipe that names it.
    """
    if path in seen:
        raise ConfigError(f"recipe inheritance loops: {' -> '.join(p.stem for p in (*seen, path))}")
    try:
        data = yaml.load(read_user_text(path), Loader=_RecipeLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of config keys, got {type(data).__name__}")
    if "imports" in data:
        data["imports"] = _absolute_imports(data["imports"], path.parent, f"recipe {path}")
    parent = data.pop("inherit", None)
    if parent is None:
        return _replace_marked({}, data)
    base = _read_yaml(resolve_recipe(str(parent)), (*seen, path))
    if "imports" in data:
        data["imports"] = list(dict.fromkeys([*base.get("imports", []), *data["imports"]]))
    data = _replace_marked(base, data)
    return OmegaConf.to_container(OmegaConf.merge(base, data))


def _absolute_imports(entries: Any, folder: Path, where: str) -> list[str]:
    """``imports:`` with relative ``.py`` paths made absolute from ``folder``; module names kept."""
    from longshort.extensions import is_file_entry

    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"'imports' must be a list of module names or .py paths [in {where}]")
    return [str((folder / Path(e).expanduser()).resolve()) if is_file_entry(e) else e for e in entries]


def load_config(recipe: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed, validated configuration for a recipe (name or path) plus ``key=value`` overrides."""
    schema = OmegaConf.structured(Config)
    layers: list[tuple[str, DictConfig]] = []
    if recipe is not None:
        path = resolve_recipe(recipe)
        layers.append((f"recipe {path}", _as_layer(_read_yaml(path))))
    for item in overrides:
        if "=" not in item or not item.partition("=")[0].strip():
            raise ConfigError(f"override '{item}' is not key=value (e.g. trainer.lr=1e-5)")
        layers.append((f"override {item}", _as_layer(OmegaConf.from_dotlist([item]))))
    merged = schema
    for where, layer in layers:
        merged = _merge(merged, layer, where)
    try:
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(_explain(err)) from None
    from longshort.extensions import check_names, import_extensions

    config.imports = _absolute_imports(config.imports, Path.cwd(), "imports")  # from a command-line override
    import_extensions(config.imports)  # before the names it registers are checked
    _check_choices(config)
    _check_ranges(config)
    _check_consistency(config)
    check_names(config)
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


def _fields(obj: Any, prefix: str = ""):
    """Every (dotted prefix, field, value, owning section) of a config, depth first, through role mappings."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _fields(value, f"{prefix}{key}.")
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        yield prefix, f, value, obj
        yield from _fields(value, f"{prefix}{f.name}.")


def _check_choices(config: Config) -> None:
    for prefix, f, value, _ in _fields(config):
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"invalid value {value!r} for '{prefix}{f.name}'{did_you_mean(str(value), choices)}; "
                              f"choose one of: {', '.join(choices)}")


# Values that cannot work, by (section class, field): (lowest, highest, lowest excluded). None: no bound.
# Checked at load time so that e.g. env.max_turns=0 fails in one line instead of deep inside a run.
_AT_LEAST_1 = (1, None, False)
_POSITIVE = (0, None, True)
_NON_NEGATIVE = (0, None, False)
_RATIO = (0, 1, False)
_RANGES: dict[tuple[str, str], tuple[float | None, float | None, bool]] = {
    **{("SamplingConfig", f): r for f, r in (("temperature", _NON_NEGATIVE), ("top_p", (0, 1, True)),
                                              ("top_k", _NON_NEGATIVE), ("max_new_tokens", _AT_LEAST_1))},
    ("EnvConfig", "max_turns"): _AT_LEAST_1, ("EnvConfig", "max_total_tokens"): _AT_LEAST_1,
    **{("DataSourceConfig", f): _AT_LEAST_1 for f in ("limit", "min_steps", "max_steps")},
    **{("RolloutConfig", f): _AT_LEAST_1 for f in ("group_size", "problems_per_step", "max_batch_size")},
    ("RolloutConfig", "kv_cache_budget"): _NON_NEGATIVE,
    ("VerifyConfig", "timeout"): _POSITIVE,
    **{("TrainerConfig", f): _AT_LEAST_1 for f in ("phase_steps", "steps", "updates_per_batch", "micro_batch_size",
                                                    "save_every", "log_every")},
    **{("TrainerConfig", f): _POSITIVE for f in ("lr", "clip_eps", "grad_clip")},
    ("TrainerConfig", "warmup_ratio"): _RATIO, ("TrainerConfig", "kl_coef"): _NON_NEGATIVE,
    **{("SFTConfig", f): _AT_LEAST_1 for f in ("examples", "epochs", "batch_size", "grad_accum", "max_length",
                                                "save_every")},
    ("SFTConfig", "lr"): _POSITIVE, ("SFTConfig", "warmup_ratio"): _RATIO, ("SFTConfig", "skip_kappa"): _RATIO,
    **{("EvalConfig", f): _AT_LEAST_1 for f in ("samples", "limit", "max_new_tokens", "max_turns")},
    ("EvalConfig", "temperature"): _NON_NEGATIVE,
    **{("BackendConfig", f): _AT_LEAST_1 for f in ("num_nodes", "gpus_per_node", "vllm_num_engines",
                                                    "vllm_tensor_parallel_size")},
    ("BackendConfig", "partner_gpus"): _NON_NEGATIVE, ("BackendConfig", "zero_stage"): (0, 3, False),
    ("BackendConfig", "vllm_gpu_memory_utilization"): (0, 1, True),
}


def _check_ranges(config: Config) -> None:
    """Numbers that cannot work (a turn cap of 0, a negative limit) fail at load, naming the key."""
    for prefix, f, value, owner in _fields(config):
        bounds = _RANGES.get((type(owner).__name__, f.name))
        if bounds is None or value is None:
            continue
        low, high, open_low = bounds
        if (low is not None and (value <= low if open_low else value < low)) or (high is not None and value > high):
            rule = (f"> {low}" if open_low else f">= {low}") if high is None else \
                (f"in ({low}, {high}]" if open_low else f"in [{low}, {high}]")
            none = " (or null for no limit)" if f.name in ("limit", "examples") else ""
            raise ConfigError(f"invalid value {value!r} for '{prefix}{f.name}': it must be {rule}{none}")
    for split in ("train", "eval"):
        source = getattr(config.data, split)
        if source.min_steps > source.max_steps:
            raise ConfigError(f"data.{split}.min_steps ({source.min_steps}) is larger than data.{split}.max_steps "
                              f"({source.max_steps}): make min_steps <= max_steps")


def _check_consistency(config: Config) -> None:
    """Cross-field rules a type system cannot express."""
    if not config.agents:
        raise ConfigError("the config defines no agents: set agents.<role> in the recipe (see recipes/tiny.yaml)")
    for stage in config.stages:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage '{stage}' in 'stages'{did_you_mean(stage, STAGES)}; "
                              f"stages are: {', '.join(STAGES)}")
    for weights in config.eval.weights:
        if weights not in ("base", "sft", "rl"):
            raise ConfigError(f"unknown weights '{weights}' in 'eval.weights'{did_you_mean(weights, ('base', 'sft', 'rl'))}; "
                              "choose from: base, sft, rl")
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
    if (config.logging.wandb.project is not None and config.backend.name == "embedded" and "rl" in config.stages
            and not module_available("wandb")):
        raise ConfigError("logging.wandb.project is set but wandb is not installed: pip install 'longshort[wandb]' "
                          "(or unset logging.wandb.project)")


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (W&B's import takes seconds)."""
    return importlib.util.find_spec(name) is not None




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
