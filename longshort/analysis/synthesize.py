"""``python -m longshort.analysis.synthesize``: Long-Short cold-start SFT sets from scored thoughts.

    python -m longshort.analysis.synthesize runs/importance/scores.jsonl --out runs/coldstart

Writes ``transcripts.jsonl`` (``{"id", "question", "answer", "turns": [{"role", "text"}]}``) and the two
SFT sets ``long.jsonl`` / ``short.jsonl`` (the same transcripts with the ``role`` to train). Transcripts
whose chain never reaches the gold answer, with a turn longer than its agent's budget (counted with
``--model``'s tokenizer), with kept arithmetic that does not lead to the answer, or with a turn that
fails its agent's format check, are dropped and counted. Rules: ``longshort.analysis.synthesis``.
"""
from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from pathlib import Path

from longshort.analysis import cli_common as common
from longshort.analysis.importance import rescore
from longshort.analysis.synthesis import (END_AT, LLMCompressor, SynthesisConfig, TurnCaps, check_transcript, sft_sets,
                                          synthesize)
from longshort.engines import model_thread
from longshort.models import load_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.synthesize", description=__doc__.split("\n")[0])
    parser.add_argument("scores", help="scores.jsonl from `python -m longshort.analysis.importance`")
    parser.add_argument("--out", default="runs/coldstart", help="output directory")
    parser.add_argument("--top-fraction", type=float, default=0.3, help="share of thoughts kept for the long agent")
    parser.add_argument("--threshold", type=float, help="keep thoughts with S_i >= this instead of a top share")
    parser.add_argument("--max-chars", type=int, default=300, help="longest rewrite the llm compressor may return")
    parser.add_argument("--compressor", choices=("rule", "llm"), default="rule")
    parser.add_argument("--keep-first", action="store_true",
                        help="the first thought is always the long agent's (default: only important thoughts are)")
    parser.add_argument("--end-at", choices=END_AT, default="last",
                        help="cut each chain at its last prefix whose rollouts reach the answer (default) or the "
                             "first with its best accuracy")
    parser.add_argument("--long-tokens", type=int, default=192, help="the long agent's max_new_tokens per turn")
    parser.add_argument("--short-tokens", type=int, default=128, help="the short agent's max_new_tokens per turn")
    common.add_model_args(parser)
    args = parser.parse_args(argv)

    config = SynthesisConfig(top_fraction=args.top_fraction, threshold=args.threshold, max_chars=args.max_chars,
                             keep_first=args.keep_first, end_at=args.end_at)
    engine = common.load_engine(args)[1] if args.compressor == "llm" else None
    compressor = LLMCompressor(engine, max_chars=args.max_chars) if engine else None
    caps = TurnCaps.of(engine.tokenizer if engine else load_tokenizer(args.model), args.long_tokens, args.short_tokens)
    records = [rescore(r) for r in common.read_jsonl(args.scores)]  # files from before the gain: re-scored

    async def run():
        return await asyncio.gather(*(synthesize(r, config, compressor, caps) for r in records))

    transcripts, dropped = [], Counter()
    for record, result in zip(records, model_thread.run(run())):
        problems = check_transcript(result.transcript["turns"]) if result.transcript else []
        if result.transcript is None or problems:
            dropped[result.drop or "format"] += 1
            print(f"dropped {record['id']} ({result.drop or 'format'}): {result.detail or '; '.join(problems)}")
            continue
        transcripts.append(result.transcript)
    out = Path(args.out)
    common.write_jsonl(transcripts, out / "transcripts.jsonl")
    sets = sft_sets(transcripts)
    for role, rows in sets.items():
        common.write_jsonl(rows, out / f"{role}.jsonl")
    turns = sum(len(t["turns"]) for t in transcripts)
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items())) or "none"
    print(f"{len(transcripts)} transcripts ({turns} turns) from {len(records)} scored chains; dropped: {why}")
    print(f"wrote {out / 'transcripts.jsonl'}, {out / 'long.jsonl'} ({len(sets['long'])}), "
          f"{out / 'short.jsonl'} ({len(sets['short'])})")


if __name__ == "__main__":
    common.run_command(main)
