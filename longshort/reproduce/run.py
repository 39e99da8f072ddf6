"""``python -m longshort.reproduce table=tiny|paper|PATH [out=DIR] [--dry-run]``: reproduce a paper table.

Reads a table spec (``longshort.reproduce.tables``; ``recipes/tables/*.yaml``), turns it into a list of
commands of the existing entry points (``python -m longshort.train``, ``python -m longshort.evaluate``,
``python -m longshort.analysis.entropy``), runs those not yet done, and writes ``table.md``,
``table.json`` and ``plot.png`` into the output folder (default: the spec's ``output_dir``).

Resuming: every command is resumable by itself (the pipeline's ``DONE`` markers and checkpoints,
the evaluation's per-episode records), and reproduce adds ``steps/<key>-<hash>.done`` after each
finished command (the hash is of its arguments, so a changed spec runs the command again). A table
run killed anywhere and started again skips what finished and lets the command it was in continue
from its own last save. The analysis command keeps only its sampled chains (``chains.json``), so a
kill inside it redoes its entropy pass and answers, not the chains. ``--dry-run`` loads every command's config (a
typo fails here, not hours later) and prints them all, marking those already done; it runs nothing.

Commands run in this process one after another (``gc`` and ``malloc_trim`` between them), with
``OMP``/torch threads as the caller set them; each one's wall time goes to ``timings.json``, summed over
attempts and written every minute while it runs, so a table killed mid-command (a session's end, an
out-of-memory kill) still says what it cost.
"""
from __future__ import annotations

import gc
import hashlib
import importlib
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console

from longshort.errors import UserError
from longshort.config import ConfigError, load_config
from longshort.paths import write_text_atomically
from longshort.reproduce.tables import RowSpec, TableError, TableSpec, load_table, seed_runs
from longshort.reproduce.timing import Timings

console = Console(stderr=True)

PROG = "longshort.reproduce"
FLAGS = {"--dry-run": "load every command's config, print the commands (marking those done) and exit"}
ARGUMENTS = {"table=NAME|PATH": "the table spec: a name in recipes/tables (tiny, paper) or a YAML file",
             "out=DIR": "output folder (default: the spec's output_dir)"}
WEIGHTS = re.compile(r"\{weights\.([A-Za-z0-9_\-]+)\.(sft|rl)\.([A-Za-z0-9_\-]+)\}")


class StepFailed(RuntimeError):
    """A command of the table ended with an error; its message names the command."""


@dataclass
class Command:
    """One invocation of an entry point; ``key`` names its done marker."""

    key: str
    module: str
    args: list[str]
    what: str
    recipe: str | None = None  # config-loading commands: the recipe and overrides checked at plan time
    overrides: list[str] = field(default_factory=list)

    def shell(self) -> str:
        return f"python -m {self.module} " + " ".join(shlex.quote(arg) for arg in self.args)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower() or "row"


# ------------------------------------------------------------------------------------------ planning


@dataclass
class Layout:
    """Where a table's outputs go under its output folder."""

    root: Path

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    def eval(self, row: RowSpec) -> Path:
        return self.root / "eval" / slug(row.label)

    def analysis(self, name: str) -> Path:
        return self.root / "analysis" / name

    def marker(self, command: Command) -> Path:
        """The done marker of a command; named by its arguments too, so a changed spec runs it again (the
        command itself then skips whatever of its work is still valid)."""
        digest = hashlib.sha256(command.shell().encode()).hexdigest()[:10]
        return self.root / "steps" / f"{command.key}-{digest}.done"


def substitute(text: str, layout: Layout) -> str:
    """``{runs.NAME}`` -> that run's folder (weights references are resolved when the command runs)."""
    return re.sub(r"\{runs\.([A-Za-z0-9_\-]+)\}", lambda m: str(layout.run(m.group(1))), text)


def plan(spec: TableSpec, out: Path) -> list[Command]:
    """Every command the table needs, in the order they must run."""
    layout = Layout(out)
    commands: list[Command] = []
    for name, (base, run) in seed_runs(spec).items():
        rows = [row for row in spec.rows if row.run == base]
        stages = ["data"] + ["sft"] * run.sft + (["rl"] if any(row.weights == "rl" for row in rows) else [])
        weights = [w for w in ("sft", "rl") if any(row.weights == w for row in rows)]
        evaluated = spec.heldout and bool(weights)  # held-out columns: the pipeline's eval stage measures the rows
        overrides = [substitute(o, layout) for o in (*spec.overrides, *run.overrides)]
        args = [f"output_dir={layout.run(name)}", f"stages=[{','.join(stages + ['eval'] * evaluated)}]"]
        if evaluated:
            args.append(f"eval.weights=[{','.join(weights)}]")
        args += overrides
        commands.append(Command(f"train_{name}", "longshort.train", [f"recipe={run.recipe}", *args],
                                f"train run '{name}' ({run.recipe}: {', '.join(stages)})", run.recipe, args))
    for name, analysis in spec.analyses.items():
        args = [substitute(a, layout) for a in analysis.args] + ["--out", str(layout.analysis(name))]
        commands.append(Command(f"analysis_{name}", analysis.module, args, f"analysis '{name}'"))
    if not spec.heldout:
        for row in spec.rows:
            if row.analysis:
                continue
            for group in spec.columns:
                commands.append(_evaluate(spec, row, group.benchmarks, group.samples, layout))
    return commands


def _evaluate(spec: TableSpec, row: RowSpec, benchmarks: list[str], samples: int, layout: Layout) -> Command:
    """``python -m longshort.evaluate`` of one row on one group of benchmarks, into the row's folder."""
    if row.run:
        run = spec.runs[row.run]
        recipe = run.recipe
        roles = list(load_config(recipe, [substitute(o, layout) for o in (*spec.overrides, *run.overrides)]).agents)
        overrides = [substitute(o, layout) for o in (*spec.overrides, *run.overrides)]
        overrides += [f"agents.{role}.model.name_or_path={{weights.{row.run}.{row.weights}.{role}}}" for role in roles]
    else:
        recipe = row.recipe
        overrides = [*row.overrides, "eval.mode=single", "agents.single.type=single",
                     f"agents.single.model.name_or_path={row.model}"]
    overrides += [f"eval.benchmarks=[{','.join(benchmarks)}]", f"eval.samples={samples}"]
    key = f"eval_{slug(row.label)}_{'_'.join(benchmarks)}"
    args = [f"recipe={recipe}", *overrides, f"out={layout.eval(row)}", f"system={row.label}"]
    return Command(key, "longshort.evaluate", args, f"evaluate '{row.label}' on {', '.join(benchmarks)} (k={samples})",
                   recipe, [o for o in overrides if "{weights." not in o])


def resolve_weights(args: list[str], layout: Layout) -> list[str]:
    """Fill ``{weights.RUN.STAGE.ROLE}`` with where that run's stage left that agent's weights."""
    from longshort.train import stage_models

    def weights(match: re.Match) -> str:
        run, stage, role = match.groups()
        folder = layout.run(run)
        config = load_config(str(folder / "config.yaml"))
        return stage_models(config, folder, stage)[role]

    return [WEIGHTS.sub(weights, arg) for arg in args]


# ----------------------------------------------------------------------------------------- running


def execute(command: Command, layout: Layout) -> float:
    """Run one command in this process; its wall seconds. Raises StepFailed on a non-zero exit."""
    module = importlib.import_module(command.module)
    args = resolve_weights(command.args, layout)
    began = time.perf_counter()
    try:
        code = module.main(args)
    except SystemExit as exit_:
        code = exit_.code
    seconds = time.perf_counter() - began
    if code not in (0, None):
        raise StepFailed(f"{command.what} failed (exit {code}): {command.shell()}")
    return seconds


def _release() -> None:
    from longshort.memory import release_freed_memory

    gc.collect()
    release_freed_memory()


def run_table(spec: TableSpec, out: Path, *, runner: Callable[[Command, Layout], float] = execute,
              timings_every: float = 60.0) -> Path:
    """Run what is missing, then write the table; returns the path of ``table.md``."""
    layout = Layout(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json", every=timings_every)
    commands = plan(spec, out)
    for number, command in enumerate(commands, start=1):
        marker = layout.marker(command)
        if marker.is_file():
            console.print(f"[dim]{command.what}: done already ({marker}); skipping[/dim]")
            continue
        spent = sum(timings.seconds.values()) / 3600
        console.rule(f"[{number}/{len(commands)}] {command.what} ({spent:.1f} h spent so far)")
        console.print(command.shell(), markup=False, highlight=False)
        seconds = timings.clock(command.key, lambda: runner(command, layout))
        _release()
        write_text_atomically(marker, json.dumps({"command": command.shell(), "seconds": round(seconds, 1)}) + "\n")
    from longshort.reproduce.results import write_table

    return write_table(spec, layout)


def dry_run(spec: TableSpec, out: Path) -> list[Command]:
    """Check every config-loading command's config and print all commands."""
    layout = Layout(out)
    commands = plan(spec, out)
    if any(WEIGHTS.search(arg) for command in commands for arg in command.args):
        print("# {weights.RUN.STAGE.ROLE} is filled in when the command runs: where that run's stage left that "
              "agent's weights (sft/ROLE/final, or what rl/final.json names)")
    for command in commands:
        if command.recipe is not None:
            try:
                load_config(command.recipe, command.overrides)
            except ConfigError as err:
                raise TableError(f"{command.what}: {err}") from None
        state = "done" if layout.marker(command).is_file() else "to run"
        print(f"# {command.what} [{state}]\n{command.shell()}")
    return commands


# --------------------------------------------------------------------------------------------- CLI


def usage() -> str:
    from longshort.reproduce.tables import list_tables

    lines = [f"usage: python -m {PROG} table=NAME|PATH [out=DIR] [--dry-run]", f"tables: {', '.join(list_tables())}",
             "arguments:"]
    lines += [f"  {name:18s} {text}" for name, text in ARGUMENTS.items()]
    lines += ["flags:"] + [f"  {name:18s} {text}" for name, text in FLAGS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(usage())
        return 0
    options, flags = {}, set()
    try:
        for arg in argv:
            key, sep, value = arg.partition("=")
            if arg.startswith("--") and arg in FLAGS:
                flags.add(arg)
            elif sep and key in ("table", "out"):
                options[key] = value
            else:
                raise TableError(f"unknown argument '{arg}'; expected table=NAME, out=DIR or --dry-run")
        if "table" not in options:
            raise TableError("no table given: add table=NAME (tiny, paper) or table=PATH")
        spec = load_table(options["table"])
        out = Path(options.get("out") or spec.output_dir)
        if "--dry-run" in flags:
            dry_run(spec, out)
            return 0
        from longshort.cli import show_progress_messages

        show_progress_messages()
        table = run_table(spec, out)
    except (UserError, StepFailed) as err:  # a table, recipe or data file mistake: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: run the same command again to continue where it stopped")
        return 130
    print(table.read_text(), end="")
    console.print(f"[green]done[/green]: {table}, {table.parent / 'plot.png'}")
    return 0

