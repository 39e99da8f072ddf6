"""Playing the evaluation: the protocol's config, its engines, and a resumable run over problem sets.

The protocol (``evaluation_config``) is derived from the recipe, not bolted onto it:

- ``eval.mode=pair`` plays the recipe's env (``long_short``) with the agents it needs, each on its own
  model (``agents.<role>.model``); agents that share a model share one engine and its batches.
- ``eval.mode=single`` is the one-model baseline: the ``single_turn`` env and a ``single`` agent. Its
  model is ``agents.single`` when the recipe defines one (e.g. an R1-distill baseline), else the long
  agent's model (the same base model answering alone), else the first agent's.
- Sampling comes from the ``eval`` section and replaces the agents' training sampling: temperature
  ``eval.temperature``, no top-p/top-k truncation (IMPL-CHOICE: the paper's only evaluation-time
  calls passed just a temperature and a token budget, leaving the server's untruncated defaults),
  ``eval.max_new_tokens`` per turn and ``eval.max_turns`` turns. The episode budget is
  ``max_turns x max_new_tokens``, so in pair mode only the per-turn cap binds; in single mode the one
  turn gets that whole budget (IMPL-CHOICE: both systems may spend the same number of tokens).

Each (item, sample) episode is written to ``records/<set>.jsonl`` as soon as it finishes; a restarted
run skips what is recorded. ``evaluation.json`` pins the protocol of the records in an output folder,
so records from another protocol (another mode, model, temperature, ...) are never mixed in.
At most ``2 x rollout.max_batch_size`` episodes are in flight: enough to keep the engine's batches
full, few enough that episodes finish (and reach the disk) steadily instead of all at the end.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from longshort.errors import UserError
from longshort.config import AgentConfig, Config, EnvConfig, SamplingConfig, to_yaml
from longshort.data import Problem, load_benchmark
from longshort.engines import model_thread
from longshort.engines.base import Engine
from longshort.evaluation.metrics import SetResult, summarize
from longshort.evaluation.published import published_for
from longshort.evaluation.records import Record, RecordFile
from longshort.evaluation.report import ordered_sets, write_report
from longshort.evaluation.results import Results
from longshort.models import MODEL_ALIASES
from longshort.paths import holding, write_text_atomically
from longshort.plain_progress import PlainProgress, on_terminal
from longshort.registry import ENVS
from longshort.rollout import RolloutRunner, build_agents, build_engines, build_env_factory
from longshort.verify import Verifier

console = Console(stderr=True)

# vLLM's names for our dtype strings.
_VLLM_DTYPES = {"auto": "auto", "bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16",
                "float16": "float16", "fp32": "float32", "float32": "float32"}
VLLM_GPU_MEMORY = 0.9  # of one GPU, split evenly between the distinct models an evaluation serves
PROMPT_ROOM = 4096  # tokens of system prompt + question a vLLM context must hold besides an episode's turns


class EvalError(UserError, RuntimeError):
    """An evaluation that cannot run as asked; the message is one line and says how to fix it."""


# ------------------------------------------------------------------------------------ the protocol


def evaluation_config(config: Config) -> Config:
    """The config the evaluation plays: its agents, env and sampling (see the module docstring)."""
    ev = config.eval
    sampling = SamplingConfig(temperature=ev.temperature, top_p=1.0, top_k=0, max_new_tokens=ev.max_new_tokens)
    budget = ev.max_turns * ev.max_new_tokens
    if ev.mode == "pair":
        roles = ENVS.get(config.env.name).roles or tuple(config.agents)
        missing = [role for role in roles if role not in config.agents]
        if missing:
            raise EvalError(f"env '{config.env.name}' needs agents {', '.join(roles)}; the recipe lacks "
                            f"{', '.join(missing)} (define agents.<role>)")
        agents = {role: dataclasses.replace(config.agents[role], sampling=sampling) for role in roles}
        env = EnvConfig(name=config.env.name, max_turns=ev.max_turns, max_total_tokens=budget)
    else:
        base = config.agents.get("single") or config.agents.get("long") or next(iter(config.agents.values()))
        spec = base if "single" in config.agents else AgentConfig(type="single", model=base.model)
        agents = {"single": dataclasses.replace(spec, sampling=dataclasses.replace(sampling, max_new_tokens=budget))}
        env = EnvConfig(name="single_turn", max_turns=1, max_total_tokens=budget)
    return dataclasses.replace(config, agents=agents, env=env)


def system_label(config: Config) -> str:
    return f"{config.name} ({config.eval.mode})"


def default_out_dir(config: Config) -> Path:
    """``<output_dir>/eval`` (the pipeline's eval stage folder) for pairs, ``<output_dir>/eval_single`` else."""
    return Path(config.output_dir) / ("eval" if config.eval.mode == "pair" else f"eval_{config.eval.mode}")


def _fingerprint(eval_config: Config) -> dict:
    """What decides the records' meaning; a folder's records are reused only under the same protocol."""
    return {
        "mode": eval_config.eval.mode, "env": eval_config.env.name,
        "agents": {role: {"type": spec.type, "model": spec.model.name_or_path, "system_prompt": spec.system_prompt}
                   for role, spec in eval_config.agents.items()},
        "temperature": eval_config.eval.temperature, "max_new_tokens": eval_config.eval.max_new_tokens,
        "max_turns": eval_config.eval.max_turns, "verify_fallbacks": eval_config.verify.fallbacks,
    }


@contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for one evaluation at a time: two writers would play the same episodes twice
    (``paths.holding``: a killed evaluation leaves no stale lock)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with holding(out_dir, lambda: EvalError(f"another evaluation is writing to {out_dir}; wait for it to finish, "
                                            "or pass out=<another folder>")):
        yield


def _claim(out_dir: Path, eval_config: Config, restart: bool) -> None:
    """Pin the protocol of ``out_dir``'s records, refusing records from another protocol."""
    pin = out_dir / "evaluation.json"
    expected = _fingerprint(eval_config)
    if restart:
        shutil.rmtree(out_dir / "records", ignore_errors=True)
        (out_dir / "results.json").unlink(missing_ok=True)
    elif pin.is_file():
        found = json.loads(pin.read_text())
        changed = sorted(key for key in expected.keys() | found.keys() if expected.get(key) != found.get(key))
        if changed and (out_dir / "records").is_dir():
            raise EvalError(f"{out_dir} holds records of another evaluation ({', '.join(changed)} differ); "
                            "pass out=<another folder>, or --restart to discard them")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(pin, json.dumps(expected, indent=2) + "\n")
    write_text_atomically(out_dir / "config.yaml", to_yaml(eval_config))


# ------------------------------------------------------------------------------------------ engines


def build_eval_engines(eval_config: Config) -> dict[str, Engine]:
    """One engine per distinct model of the evaluation's agents: ``hf`` (embedded) or ``vllm``."""
    engine = eval_config.rollout.engine
    if engine == "hf":
        return build_engines(eval_config)
    if engine == "vllm":
        return _vllm_engines(eval_config)
    raise EvalError(f"evaluation builds hf or vllm engines, not rollout.engine={engine}; to evaluate models "
                    "behind a server, build RemoteEngines and pass them as engines= to evaluate()")


def _vllm_engines(eval_config: Config) -> dict[str, Engine]:
    """A ``VLLMEngine`` per distinct (model, dtype); vLLM is imported only here.

    The models share one GPU, so each gets an equal part of ``VLLM_GPU_MEMORY``. Each context is
    sized for what an episode can hold (``PROMPT_ROOM`` + the episode budget, within the model's own
    context): vLLM otherwise reserves the model's full context (128k tokens for Llama-3.1), which
    need not fit in a shared GPU. Aliases resolve to their Hub id (vLLM loads by id or directory).
    """
    from transformers import AutoConfig

    from longshort.engines import VLLMEngine

    keys = {role: (spec.model.name_or_path, spec.model.dtype) for role, spec in eval_config.agents.items()}
    distinct = list(dict.fromkeys(keys.values()))
    built: dict[tuple[str, str], Engine] = {}
    for name, dtype in distinct:
        model = MODEL_ALIASES[name].hub_id if name in MODEL_ALIASES else name
        context = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
        length = eval_config.env.max_total_tokens + PROMPT_ROOM
        built[(name, dtype)] = VLLMEngine(model, seed=eval_config.seed, dtype=_VLLM_DTYPES[dtype],
                                          gpu_memory_utilization=round(VLLM_GPU_MEMORY / len(distinct), 3),
                                          max_model_len=min(length, context) if context else length)
    return {role: built[key] for role, key in keys.items()}


def _bind(engines: Mapping[str, Engine], eval_config: Config) -> dict[str, Engine]:
    """Engines by the evaluation's roles; in single mode the long agent's engine may stand in."""
    bound = {}
    for role in eval_config.agents:
        engine = engines.get(role) or (engines.get("long") if role == "single" else None)
        if engine is None:
            raise EvalError(f"no engine for agent '{role}' (engines given for: {', '.join(engines) or 'none'})")
        bound[role] = engine
    return bound


# ------------------------------------------------------------------------------------------ playing


@dataclass
class _Run:
    """One evaluation in progress: what plays the episodes and where their records go.

    The runner (and so the models) is built on first need: a run whose records are all on disk only
    re-renders its results, without loading a model. With ``plain_lines`` (progress asked for, stderr
    not a terminal) each chunk of ``in_flight`` finished episodes, and the last, prints one plain line.
    """

    make_runner: Callable[[], RolloutRunner]
    samples: int
    in_flight: int
    records_dir: Path
    bar: Progress
    plain_lines: bool = False
    generated_tokens: int = 0
    seconds: float = 0.0
    _runner: RolloutRunner | None = None

    @property
    def runner(self) -> RolloutRunner:
        if self._runner is None:
            self._runner = self.make_runner()
        return self._runner

    async def play_set(self, name: str, problems: Sequence[Problem]) -> SetResult:
        """Play every (item, sample) of one set not yet on disk, then summarize all of them."""
        ids = [problem.id for problem in problems]
        if not ids:
            raise EvalError(f"set '{name}' has no problems (check eval.limit and the data source)")
        if len(set(ids)) != len(ids):
            raise EvalError(f"set '{name}' has duplicate problem ids; ids key the records, so make them unique")
        file = RecordFile(self.records_dir / f"{name}.jsonl")
        done = file.load()
        wanted = [(problem, sample) for problem in problems for sample in range(self.samples)]
        todo = [(problem, sample) for problem, sample in wanted if (problem.id, sample) not in done]
        kept = [done[(problem.id, sample)] for problem, sample in wanted if (problem.id, sample) in done]
        runner = self.runner if todo else None  # models load here, before the clock starts
        scored = [len(kept), sum(r.correct for r in kept)]  # episodes and correct ones, for the bar
        task = self.bar.add_task(name, total=len(wanted), completed=len(kept), acc=_accuracy(*scored), tps="-")
        gate, started, tokens_before = asyncio.Semaphore(self.in_flight), time.perf_counter(), self.generated_tokens
        lines = PlainProgress(f"eval {name}", len(wanted), len(kept)) if self.plain_lines else None

        async def one(problem: Problem, sample: int) -> None:
            async with gate:
                try:
                    episode = await runner.episode(problem, sample)
                    record = Record.from_episode(episode)
                except Exception as error:  # a broken item is recorded and counted wrong, never dropped
                    record = Record.broken(problem, sample, error)
            file.append(record)
            done[record.key] = record
            self.generated_tokens += record.total_tokens
            scored[0] += 1
            scored[1] += record.correct
            rate = (self.generated_tokens - tokens_before) / max(time.perf_counter() - started, 1e-9)
            self.bar.update(task, advance=1, acc=_accuracy(*scored), tps=f"{rate:,.0f}")
            if lines is not None and ((scored[0] - len(kept)) % self.in_flight == 0 or scored[0] == len(wanted)):
                lines.line(scored[0], f"acc {_accuracy(*scored)}  {rate:,.0f} tok/s")

        try:
            await asyncio.gather(*(one(problem, sample) for problem, sample in todo))
        finally:
            self.seconds += time.perf_counter() - started
        steps = {problem.id: len(problem.meta["steps"]) for problem in problems if problem.meta.get("steps")}
        return summarize(name, [done[(problem.id, sample)] for problem, sample in wanted], self.samples, steps)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description:>14}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("acc {task.fields[acc]:>6}"), TextColumn("{task.fields[tps]} tok/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled or not on_terminal())


def _accuracy(episodes: int, correct: int) -> str:
    return f"{correct / episodes:.1%}" if episodes else "-"


# --------------------------------------------------------------------------------------- public API


def evaluate(config: Config, problem_sets: Mapping[str, Sequence[Problem]], *, out_dir: str | Path,
             engines: Mapping[str, Engine] | None = None, system: str | None = None, restart: bool = False,
             compare: Sequence[Results] = (), progress: bool = True) -> Results:
    """Evaluate ``config``'s system on named problem sets; write records, results.json, table.md, plot.png.

    An output folder holds one system under one protocol, so its ``results.json`` and table keep
    the sets that earlier calls evaluated there too: the paper's table, with 4 samples on
    AIME/AMC and 1 on MATH500/GPQA, is two calls (two ``eval.samples``) into one folder.

    ``engines`` (role -> Engine) binds models you already hold, e.g. the policies a training run just
    updated; without it they are built from the recipe (``rollout.engine``: hf or vllm). ``compare``
    adds other systems' results as rows of the table and points of the plot; published reference
    rows are added when the recipe names the paper's models. Interrupted, it keeps what finished:
    call it again with the same arguments to resume.
    """
    if not problem_sets:
        raise EvalError("nothing to evaluate: no problem sets given (eval.benchmarks is empty?)")
    eval_config = evaluation_config(config)
    out_dir = Path(out_dir)
    with _exclusive(out_dir):
        _claim(out_dir, eval_config, restart)
        bound = _bind(engines, eval_config) if engines is not None else None
        verifier = Verifier(fallbacks=config.verify.fallbacks, timeout=config.verify.timeout)

        def make_runner() -> RolloutRunner:
            agents = build_agents(eval_config)
            return RolloutRunner(build_env_factory(eval_config, agents), agents,
                                 bound or build_eval_engines(eval_config), verifier=verifier)

        ev = eval_config.eval
        results = Results(
            system=system or system_label(config), mode=ev.mode,
            models={role: spec.model.name_or_path for role, spec in eval_config.agents.items()},
            settings={"temperature": ev.temperature, "max_new_tokens": ev.max_new_tokens,
                      "max_turns": ev.max_turns, "engine": eval_config.rollout.engine},
        )
        earlier = Results.load(out_dir).sets if (out_dir / "results.json").is_file() else {}
        played: dict[str, SetResult] = {}

        async def play_all(run: _Run) -> None:  # one event loop for every set: engines may be bound to it
            for name, problems in problem_sets.items():
                played[name] = await run.play_set(name, problems)

        with _progress(progress) as bar:
            run = _Run(make_runner, ev.samples, 2 * eval_config.rollout.max_batch_size,
                       out_dir / "records", bar, plain_lines=progress and not on_terminal())
            model_thread.run(play_all(run))
        results.sets = ordered_sets({**earlier, **played})
        results.generated_tokens, results.generation_seconds = run.generated_tokens, run.seconds
        results.save(out_dir / "results.json")
        write_report(out_dir, [results, *compare], published_for(config))
    return results


def evaluate_problems(config: Config, problems: Sequence[Problem], *, out_dir: str | Path, label: str = "heldout",
                      **kwargs) -> Results:
    """One problem set (e.g. a training run's held-out problems) under the label ``label``."""
    return evaluate(config, {label: problems}, out_dir=out_dir, **kwargs)


def load_benchmarks(config: Config) -> dict[str, list[Problem]]:
    """``eval.benchmarks``, each cut to ``eval.limit`` items (from ``$LONGSHORT_DATA_DIR`` or the Hub)."""
    return {name: load_benchmark(name, limit=config.eval.limit) for name in config.eval.benchmarks}


def evaluate_benchmarks(config: Config, *, out_dir: str | Path | None = None, **kwargs) -> Results:
    """``eval.benchmarks``, written to ``out_dir`` (default ``default_out_dir(config)``)."""
    return evaluate(config, load_benchmarks(config), out_dir=out_dir or default_out_dir(config), **kwargs)
