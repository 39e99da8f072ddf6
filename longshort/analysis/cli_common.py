"""What the analysis command lines share: the model and engine, the problems, the chain format.

Kept apart from the library modules so that they never parse arguments or print.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NoReturn

from longshort.analysis.chains import FORCED_ANSWER_PREFIX, THINK_SYSTEM_PROMPT, ChainFormat
from longshort.data import Problem, load_problems
from longshort.engines.base import Engine, Generation, SamplingParams


def run_command(main: Callable[[list[str]], object]) -> NoReturn:
    """``python -m longshort.analysis.X``: a user error (a model that is not there, a malformed data file)
    is one line on stderr and exit status 2, as in ``longshort.train`` (``cli.guarded``); ``--debug``
    keeps the traceback. Called in-process (``main(argv)``, as ``longshort.reproduce`` does), the error
    propagates."""
    from longshort.cli import Invocation, guarded

    argv = sys.argv[1:]

    def body() -> int:
        main([a for a in argv if a != "--debug"])
        return 0

    sys.exit(guarded(body, Invocation(recipe=None, flags={"--debug"} & set(argv))))


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="smollm2-135m", help="alias, local directory, .gguf file or Hub id")
    group.add_argument("--dtype", default="auto", help="auto (bf16 where native), bf16 or fp32")
    group.add_argument("--device", default="auto")
    group.add_argument("--max-batch-size", type=int, default=32, help="rows the engine decodes together")
    group.add_argument("--seed", type=int, default=0)


def add_problem_args(parser: argparse.ArgumentParser, *, default_limit: int) -> None:
    group = parser.add_argument_group("problems")
    group.add_argument("--data", default="synthetic:eval",
                       help="synthetic[:split], a benchmark name, a .jsonl path or a Hub id")
    group.add_argument("--limit", type=int, default=default_limit)
    group.add_argument("--min-steps", type=int, default=1, help="synthetic difficulty: fewest solution steps")
    group.add_argument("--max-steps", type=int, default=1, help="synthetic difficulty: most solution steps")


def add_format_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("chain format")
    group.add_argument("--system", default=THINK_SYSTEM_PROMPT,
                       help="system prompt for the thinking ('' for none, as R1-style models want)")
    group.add_argument("--answer-prefix", default=FORCED_ANSWER_PREFIX,
                       help="text that starts the answer after </think> ('' lets the model answer freely, "
                            "the paper's protocol for R1-style models)")


def problems_from_args(args: argparse.Namespace) -> list[Problem]:
    kw: dict[str, Any] = {"limit": args.limit}
    if args.data.startswith("synthetic"):
        kw.update(min_steps=args.min_steps, max_steps=args.max_steps, seed=args.seed)
    return load_problems(args.data, **kw)


def format_from_args(args: argparse.Namespace) -> ChainFormat:
    return ChainFormat(system=args.system or None, answer_prefix=args.answer_prefix)


def load_engine(args: argparse.Namespace):
    """(model, engine) for the chosen model; imported here so ``--help`` stays fast."""
    from longshort.engines.hf import HFEngine
    from longshort.models import load_model

    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    return model, HFEngine(model, tokenizer, max_batch_size=args.max_batch_size, seed=args.seed)


def write_jsonl(rows: Iterable[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


class ProgressEngine:
    """An engine that advances a progress bar as each of its generations finishes: the analyses send
    all their requests at once, so the engine is the one place that sees them finish."""

    def __init__(self, engine: Engine, advance: Callable[[int], None]):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._advance = advance

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        generation = await self.engine.generate(prompt_ids, sampling)
        self._advance(len(generation.token_ids))
        return generation


@contextmanager
def progress_engine(engine: Engine, label: str, total: int | None = None) -> Iterator[ProgressEngine]:
    """``engine`` behind a progress bar on stderr (requests done, generated tokens per second)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    started, tokens = time.perf_counter(), 0
    with Progress(TextColumn(f"{label:>8}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tps]} tok/s"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, tps="-")

        def advance(new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            bar.update(task, advance=1, tps=f"{tokens / max(time.perf_counter() - started, 1e-9):.0f}")

        yield ProgressEngine(engine, advance)
