"""What the analysis command lines share: the model and engine, the problems, the chain format.

Kept apart from the library modules so that they never parse arguments or print.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterable

from longshort.analysis.chains import FORCED_ANSWER_PREFIX, THINK_SYSTEM_PROMPT, ChainFormat
from longshort.data import Problem, load_problems


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
