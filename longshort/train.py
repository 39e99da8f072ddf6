"""``python -m longshort.train recipe=NAME [key=value ...]``: the training pipeline.

Stages run in the order of ``config.stages`` (data -> sft -> rl -> eval) inside one run directory
that holds the resolved config, each stage's outputs and a ``<stage>/DONE`` marker. A stage with a
marker is skipped, so an interrupted run started again continues where it stopped; drop a stage
from ``stages`` to skip it, or delete its marker to redo it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from rich.console import Console

from longshort import cli
from longshort.config import Config, DataSourceConfig, to_yaml
from longshort.data import Problem, load_problems, save_jsonl

console = Console(stderr=True)

FLAGS = {"--restart": "ignore DONE markers and run every stage again"}


class StageNotImplemented(RuntimeError):
    """A pipeline stage whose implementation has not landed yet."""


def load_source(source: DataSourceConfig, seed: int) -> list[Problem]:
    """The problems a data section names: synthetic splits get disjoint seeds from the run seed."""
    if source.source == "synthetic":
        return load_problems(f"synthetic:{source.split}", limit=source.limit, seed=seed,
                             min_steps=source.min_steps, max_steps=source.max_steps)
    if source.source.endswith(".jsonl") or Path(source.source).is_file():
        return load_problems(source.source, prompt_key=source.prompt_key, answer_key=source.answer_key,
                             limit=source.limit)
    if "/" in source.source:
        return load_problems(source.source, split=source.split, prompt_key=source.prompt_key,
                             answer_key=source.answer_key, limit=source.limit)
    return load_problems(source.source, limit=source.limit)


def stage_data(config: Config, run: Path) -> None:
    """Write the training and held-out problems of the run as JSONL (what every later stage reads).

    Held-out problems that also occur in the training set (short synthetic stories can repeat across
    seeds) are dropped, so evaluation never scores a memorised item.
    """
    out = run / "data"
    train = load_source(config.data.train, config.seed)
    seen = {problem.prompt for problem in train}
    held_out = [problem for problem in load_source(config.data.eval, config.seed) if problem.prompt not in seen]
    for split, problems, source in (("train", train, config.data.train), ("eval", held_out, config.data.eval)):
        save_jsonl(problems, out / f"{split}.jsonl")
        console.print(f"data: {len(problems)} {split} problems from {source.source} -> {out / f'{split}.jsonl'}")


def _not_implemented(name: str) -> Callable[[Config, Path], None]:
    def stage(config: Config, run: Path) -> None:
        raise StageNotImplemented(f"stage '{name}' is not implemented yet; the run stops here "
                                  f"(the config and the completed stages are saved in {run})")
    return stage


STAGE_FUNCTIONS: dict[str, Callable[[Config, Path], None]] = {
    "data": stage_data,
    "sft": _not_implemented("sft"),
    "rl": _not_implemented("rl"),
    "eval": _not_implemented("eval"),
}


def run_pipeline(config: Config, *, restart: bool = False) -> Path:
    run = Path(config.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(to_yaml(config))
    for name in config.stages:
        marker = run / name / "DONE"
        if marker.exists() and not restart:
            console.print(f"[dim]{name}: done already ({marker}); skipping[/dim]")
            continue
        (run / name).mkdir(parents=True, exist_ok=True)
        console.rule(f"stage: {name}")
        STAGE_FUNCTIONS[name](config, run)
        marker.write_text(json.dumps({"stage": name}) + "\n")
    return run


def main(argv: list[str] | None = None) -> int:
    config, invocation = cli.load("longshort.train", argv, FLAGS)
    console.print(to_yaml(config), highlight=False, markup=False)
    try:
        run = run_pipeline(config, restart="--restart" in invocation.flags)
    except StageNotImplemented as err:
        console.print(f"[yellow]{err}[/yellow]")
        return 0
    console.print(f"[green]run complete:[/green] {run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
