"""``python -m longshort.analysis.synthesize``: Long-Short cold-start SFT sets from scored thoughts.

    python -m longshort.analysis.synthesize runs/importance/scores.jsonl --out runs/coldstart

Writes ``transcripts.jsonl`` (``{"id", "question", "answer", "turns": [{"role", "text"}]}``) and the two
SFT sets ``long.jsonl`` / ``short.jsonl`` (the same transcripts with the ``role`` to train). Transcripts
whose chain never reaches the gold answer, or with a turn that fails its agent's format check, are
dropped and counted. Rules: ``longshort.analysis.synthesis``.
"""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from longshort.analysis import cli_common as common
from longshort.analysis.synthesis import END_AT, LLMCompressor, SynthesisConfig, check_transcript, sft_sets, synthesize
from longshort.engines import model_thread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.synthesize", description=__doc__.split("\n")[0])
    parser.add_argument("scores", help="scores.jsonl from `python -m longshort.analysis.importance`")
    parser.add_argument("--out", default="runs/coldstart", help="output directory")
    parser.add_argument("--top-fraction", type=float, default=0.3, help="share of thoughts kept for the long agent")
    parser.add_argument("--threshold", type=float, help="keep thoughts with S_i >= this instead of a top share")
    parser.add_argument("--max-chars", type=int, default=300, help="rule compressor budget per short turn")
    parser.add_argument("--compressor", choices=("rule", "llm"), default="rule")
    parser.add_argument("--no-keep-first", dest="keep_first", action="store_false",
                        help="leave out the thoughts before the first important one (default: the first "
                             "thought is always the long agent's)")
    parser.add_argument("--end-at", choices=END_AT, default="last",
                        help="cut each chain at its last (default) or first prefix whose rollouts reach the answer")
    common.add_model_args(parser)
    args = parser.parse_args(argv)

    config = SynthesisConfig(top_fraction=args.top_fraction, threshold=args.threshold, max_chars=args.max_chars,
                             keep_first=args.keep_first, end_at=args.end_at)
    compressor = LLMCompressor(common.load_engine(args)[1], max_chars=args.max_chars) \
        if args.compressor == "llm" else None
    records = common.read_jsonl(args.scores)

    async def run():
        return await asyncio.gather(*(synthesize(r, config, compressor) for r in records))

    transcripts, unreachable, malformed = [], 0, 0
    for record, transcript in zip(records, model_thread.run(run())):
        if transcript is None:
            unreachable += 1
            continue
        problems = check_transcript(transcript["turns"])
        if problems:
            malformed += 1
            print(f"dropped {record['id']}: {'; '.join(problems)}")
            continue
        transcripts.append(transcript)
    out = Path(args.out)
    common.write_jsonl(transcripts, out / "transcripts.jsonl")
    sets = sft_sets(transcripts)
    for role, rows in sets.items():
        common.write_jsonl(rows, out / f"{role}.jsonl")
    turns = sum(len(t["turns"]) for t in transcripts)
    print(f"{len(transcripts)} transcripts ({turns} turns) from {len(records)} scored chains; "
          f"{unreachable} never reach the gold answer, {malformed} failed a format check")
    print(f"wrote {out / 'transcripts.jsonl'}, {out / 'long.jsonl'} ({len(sets['long'])}), "
          f"{out / 'short.jsonl'} ({len(sets['short'])})")


if __name__ == "__main__":
    common.run_command(main)
