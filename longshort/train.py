"""``python -m longshort.train recipe=NAME [key=value ...]``: the training pipeline.

Stages run in the order of ``config.stages`` (data -> sft -> rl -> eval) inside one run directory
that holds the resolved config, each stage's outputs and a ``<stage>/DONE`` marker. A stage with a
marker is skipped, so an interrupted run started again continues where it stopped; drop a stage
from ``stages`` to skip it, or delete its marker to redo it. At the end, ``report.html`` shows the
run (``longshort.report``).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from longshort import cli
from longshort.budgets import check_budgets
from longshort.config import Config, to_yaml
from longshort.data import DataError, Problem, load_jsonl, load_source, save_jsonl
from longshort.jsonl import read_log
from longshort.paths import holds_weights, write_text_atomically
from longshort.report import report_after_run
from longshort.run_dir import disk_full_reported, hold_run_dir

# torch and transformers (longshort.models, sft, the trainers) are imported inside the stages that use
# them: --help, --help-config, --print-config and a config error answer without them (tests/test_cli.py).
console = Console(stderr=True)

FLAGS = {"--restart": "ignore DONE markers (SFT and RL still reuse their checkpoints: delete a stage's folder to retrain)",
         "--dry-run": "print what would run and exit; for backend.name=openrlhf a preflight: every command, its flags "
                      "through OpenRLHF's parsers, the GPU layout, a per-GPU memory estimate, and the data and "
                      "cold-start stages run for real on a few problems (exit 2 when a check fails)"}


def stage_data(config: Config, run: Path) -> None:
    """Write the training and held-out problems of the run as JSONL (what every later stage reads).

    Held-out problems that also occur in the training set (short synthetic stories can repeat across
    seeds) are dropped, so evaluation never scores a memorised item.
    """
    out = run / "data"
    train = _load_source("train", config)
    if not train:
        raise DataError(f"data.train.source={config.data.train.source} holds no problems; give it a file with at "
                        "least one {\"problem\", \"answer\"} line (or another source)")
    seen = {problem.prompt for problem in train}
    evaluated = _load_source("eval", config)
    held_out = [problem for problem in evaluated if problem.prompt not in seen]
    if not held_out and "eval" in config.stages:
        why = f"all {len(evaluated)} also occur in the training set" if evaluated else "it holds none"
        raise DataError(f"data.eval.source={config.data.eval.source} leaves no held-out problems ({why}); "
                        "give the eval stage other problems, or drop 'eval' from stages")
    for split, problems, source in (("train", train, config.data.train), ("eval", held_out, config.data.eval)):
        save_jsonl(problems, out / f"{split}.jsonl")
        console.print(f"data: {len(problems)} {split} problems from {source.source} -> {out / f'{split}.jsonl'}")


def _load_source(split: str, config: Config) -> list[Problem]:
    """``data.<split>``'s problems; a source that cannot be read fails naming the config key to fix."""
    source = getattr(config.data, split)
    try:
        return load_source(source, config.seed if config.data.seed is None else config.data.seed)
    except (DataError, FileNotFoundError) as err:
        raise DataError(f"data.{split}.source={source.source}: {err}") from err


def _problems(run: Path, split: str) -> list[Problem]:
    path = run / "data" / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the data stage first (put 'data' back into stages)")
    return load_jsonl(path)


def stage_models(config: Config, run: Path, stage: str) -> dict[str, str]:
    """Where each agent's weights are after ``stage`` ("base", "sft" or "rl"): a Hub id or a folder.

    An agent a stage did not train keeps the weights it had before it (a frozen RL partner keeps its
    SFT weights; a stage that was skipped leaves the previous stage's). SFT weights count only when
    their SFT finished (``sft_finished``), as the OpenRLHF backend's RL decides too.
    """
    models = {role: spec.model.name_or_path for role, spec in config.agents.items()}
    if stage in ("sft", "rl"):
        for role in models:
            if sft_finished(config, run, role):
                models[role] = str(run / "sft" / role / "final")
    if stage == "rl" and (run / "rl" / "final.json").is_file():
        models.update(json.loads((run / "rl" / "final.json").read_text()))
    return models


def sft_finished(config: Config, run: Path, role: str) -> bool:
    """Whether ``sft/<role>/final`` in ``run`` holds a finished SFT: a whole save (the embedded SFT writes it
    atomically), and on the OpenRLHF backend also its step's ``sft/<role>/DONE`` marker, since a failed
    ``train_sft`` can leave a partial save there."""
    folder = run / "sft" / role
    return holds_weights(folder / "final") and (config.backend.name != "openrlhf" or (folder / "DONE").is_file())


def stage_sft(config: Config, run: Path) -> None:
    """Cold-start transcripts from the training problems (the ``sft.coldstart`` builder: a teacher's scored
    thoughts, gold steps, or [SKIP]-pruned chains), then SFT of each agent in its style."""
    from longshort.coldstart import load_coldstart
    from longshort.models import load_configured
    from longshort.registry import COLDSTART
    from longshort.rollout import build_agents
    from longshort.sft import run_sft

    problems = _problems(run, "train")[: config.sft.examples]
    paths = COLDSTART.get(config.sft.coldstart)(config, problems, run / "sft" / "coldstart")
    if config.backend.name == "openrlhf":
        from longshort.trainers.openrlhf import launch

        launch.run(config, stages=["sft"])
        return
    agents = build_agents(config)
    for role, spec in config.agents.items():
        if role not in paths:  # a team's own builder may cover some roles; the others keep their weights
            console.print(f"sft: {role} agent has no cold-start data from sft.coldstart={config.sft.coldstart}; "
                          "it starts RL from its base weights")
            continue
        transcripts = load_coldstart(paths[role])
        console.print(f"sft: {role} agent on {len(transcripts)} cold-start transcripts")
        model, tokenizer = load_configured(spec.model, dtype="fp32")
        run_sft(model, tokenizer, agents[role], transcripts, config.sft, run / "sft" / role, seed=config.seed)


def stage_rl(config: Config, run: Path) -> None:
    """Multi-turn GRPO from the SFT weights; ``rl/final.json`` names each trained agent's final weights."""
    if config.backend.name == "openrlhf":
        from longshort.trainers.openrlhf import launch

        launch.run(config, stages=["rl"])
        finals = launch.final_checkpoints(config)
        write_text_atomically(run / "rl" / "final.json", json.dumps({role: str(p) for role, p in finals.items()}) + "\n")
        return
    from longshort.models import load_configured
    from longshort.trainers import GRPOTrainer

    models = {role: load_configured(config.agents[role].model, path=path)
              for role, path in stage_models(config, run, "sft").items()}
    finals = GRPOTrainer(config, _problems(run, "train"), run / "rl", models).train()
    write_text_atomically(run / "rl" / "final.json",
                          json.dumps({role: str(path) for role, path in finals.items()}) + "\n")


def stage_eval(config: Config, run: Path) -> None:
    """The held-out problems with the base, SFT and RL weights; ``summary.md`` puts them side by side."""
    from longshort.evaluation import evaluate_problems

    heldout = _problems(run, "eval")
    rows = []
    for checkpoint in [w for w in ("base", "sft", "rl") if w in config.eval.weights and w in ("base", *config.stages)]:
        staged = copy.deepcopy(config)
        for role, path in stage_models(config, run, checkpoint).items():
            staged.agents[role].model.name_or_path = path
        console.print(f"eval: {checkpoint} weights on {len(heldout)} held-out problems")
        results = evaluate_problems(staged, heldout, out_dir=run / "eval" / checkpoint, system=checkpoint)
        rows.append((checkpoint, results.sets["heldout"]))
    summary = summary_table(rows, list(config.agents)) + paired_summary(run, [name for name, _ in rows])
    if (run / "rl" / "metrics.jsonl").is_file():
        summary += "\n" + reward_trend(run / "rl" / "metrics.jsonl", list(config.agents))
    write_text_atomically(run / "summary.md", summary)
    write_text_atomically(run / "summary.json",
                          json.dumps({name: result.to_dict() for name, result in rows}, indent=2) + "\n")
    console.print(summary, markup=False, highlight=False)


def summary_table(rows, roles: list[str]) -> str:
    """Markdown: accuracy with its 95% interval, mean generated tokens (total and per agent) and format
    rate per checkpoint."""
    header = ["weights", "items", "accuracy [95% CI]", "tokens", *[f"tokens ({role})" for role in roles],
              "format rate", "turns"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, result in rows:
        low, high = result.accuracy_ci or (result.accuracy, result.accuracy)
        cells = [name, str(result.items), f"{100 * result.accuracy:.1f}% [{100 * low:.1f}, {100 * high:.1f}]",
                 f"{result.tokens:.1f}",
                 *[f"{result.tokens_by_role.get(role, 0.0):.1f}" for role in roles],
                 f"{100 * (1 - result.format_failure_rate):.1f}%", f"{result.turns:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_summary(run: Path, checkpoints: list[str]) -> str:
    """Markdown: each evaluated checkpoint against the one before it, paired on the held-out items, so
    two equal-looking rows are read with the interval of their difference (on a few dozen problems
    it spans many points)."""
    from longshort.evaluation import paired

    if len(checkpoints) < 2:
        return ""
    parts = []
    for before, after in zip(checkpoints, checkpoints[1:]):
        diffs = paired.compare_sets(run / "eval" / after, run / "eval" / before, ["heldout"])
        parts.append(paired.markdown(after, before, diffs))
    return "\n" + "\n".join(parts)


def reward_trend(metrics_path: Path, roles: list[str]) -> str:
    """Markdown: the RL rollouts' mean total reward per agent, and accuracy, over the first and the last
    quarter of the steps (at least one step each): whether RL moved the reward, on its own episodes."""
    steps = read_log(metrics_path)
    k = max(1, len(steps) // 4)
    first, last = steps[:k], steps[-k:]

    def mean(rows: list[dict], key: str) -> float:
        values = [row[key] for row in rows if key in row]
        return sum(values) / len(values) if values else float("nan")

    keys = [(f"reward ({role})", f"reward/{role}/total") for role in roles if f"reward/{role}/total" in steps[0]]
    keys.append(("accuracy", "episode/accuracy"))
    lines = [f"RL rollouts: steps 1-{k} against steps {len(steps) - k + 1}-{len(steps)} of {len(steps)}",
             "", "| measure | first steps | last steps | change |", "| --- | --- | --- | --- |"]
    for label, key in keys:
        a, b = mean(first, key), mean(last, key)
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    return "\n".join(lines) + "\n"


STAGE_FUNCTIONS: dict[str, Callable[[Config, Path], None]] = {
    "data": stage_data,
    "sft": stage_sft,
    "rl": stage_rl,
    "eval": stage_eval,
}


def run_pipeline(config: Config, *, restart: bool = False) -> Path:
    """Run the stages in ``output_dir``, which this process holds (``longshort.run_dir``) until they end.

    Every file a later stage or a resume reads is written atomically, DONE markers included, so a run
    killed at any moment and started again with the same command ends as an uninterrupted one would
    (``tests/test_kill_anywhere.py``; the README's "Interrupted runs" section says what may differ)."""
    run = Path(config.output_dir)
    check_budgets(config)
    with hold_run_dir(run), disk_full_reported(run):
        write_text_atomically(run / "config.yaml", to_yaml(config))
        for name in config.stages:
            marker = run / name / "DONE"
            if marker.exists() and not restart:
                console.print(f"[dim]{name}: done already ({marker}); skipping[/dim]")
                continue
            (run / name).mkdir(parents=True, exist_ok=True)
            console.rule(f"stage: {name}")
            began = time.perf_counter()
            STAGE_FUNCTIONS[name](config, run)
            write_text_atomically(marker, json.dumps({"stage": name,
                                                      "seconds": round(time.perf_counter() - began, 1)}) + "\n")
        console.print(report_after_run(run), markup=False, highlight=False, soft_wrap=True)
    return run


def dry_run(config: Config) -> int:
    """Embedded: what would run. OpenRLHF: the preflight (``longshort.trainers.openrlhf.preflight``):
    every command, then everything that needs no GPU checked for real; 2 when a check failed."""
    if config.backend.name == "openrlhf":
        from longshort.trainers.openrlhf.preflight import run_preflight

        return run_preflight(config, echo=lambda text: print(text, flush=True))  # unwrapped: tables and commands
    for name in config.stages:
        done = (Path(config.output_dir) / name / "DONE").exists()
        console.print(f"{name}: {'done, would be skipped' if done else 'would run'} (embedded backend)")
    return 0


def main(argv: list[str] | None = None) -> int:
    config, invocation = cli.load("longshort.train", argv, FLAGS)

    def body() -> int:
        console.print(to_yaml(config), highlight=False, markup=False)
        if "--dry-run" in invocation.flags:
            return dry_run(config)
        run = run_pipeline(config, restart="--restart" in invocation.flags)
        console.print(f"[green]run complete:[/green] {run}")
        return 0

    return cli.guarded(body, invocation)


if __name__ == "__main__":
    sys.exit(main())
