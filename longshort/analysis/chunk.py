"""``python -m longshort.analysis.chunk``: cut long chains of thought into steps and thoughts.

    python -m longshort.analysis.chunk ../shared/data/longcot/r1_example.jsonl --out runs/chunk \\
        --reference ../shared/data/longcot/r1_example_chunked.jsonl
    python -m longshort.analysis.chunk INPUT.jsonl --chunker llm --model Qwen/Qwen2.5-7B-Instruct

Input rows: ``problem`` (or ``question``), ``answer``, ``response`` (or ``thought``): the upstream
chunker's format. Steps are cut on the tokenizer's ids (``--model`` names the tokenizer), thinking
only. ``--chunker llm`` runs the paper's chunker with that model (5 attempts; rows it cannot chunk
validly fall back to the rule chunker unless ``--no-fallback``). ``--reference`` compares the blocks
with released ones (``block`` field, upstream step numbering) by where they cut the text, and
checks the released blocks under this module's validation.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
from dataclasses import asdict
from pathlib import Path

from longshort.analysis import cli_common as common
from longshort.analysis.chunking import (Block, ChunkResult, LLMChunker, RuleChunker, blocks_from_json,
                                         thoughts_from_blocks, validate_blocks)
from longshort.analysis.steps import Step, StepSegmenter, segment_text, thinking_text
from longshort.engines import model_thread
from longshort.engines.base import SamplingParams


def reference_blocks(reference: dict, offset: int, steps: list[Step]) -> list[Block]:
    """Released blocks (numbered over ``thought.split("\\n\\n")``, the upstream split) mapped onto our
    steps by character position: each block starts at our step holding its first character."""
    pieces = reference["thought"].split("\n\n")
    piece_starts = [0]
    for piece in pieces:
        piece_starts.append(piece_starts[-1] + len(piece) + 2)
    our_starts = [offset + sum(len(s.text) for s in steps[:i]) for i in range(len(steps))]

    def ours(char: int) -> int:
        return max(1, bisect.bisect_right(our_starts, char))

    blocks = blocks_from_json(reference["block"])
    return [Block(ours(piece_starts[b.start - 1]),
                  ours(piece_starts[min(b.end, len(pieces)) - 1] + len(pieces[min(b.end, len(pieces)) - 1]) - 1),
                  b.kind) for b in blocks]


def compare(ours: list[Block], theirs: list[Block], tolerance: int = 2) -> dict:
    """Boundary agreement (where a new thought starts, step 1 excluded): exact and within ``tolerance``."""
    a = {b.start for b in ours} - {1}
    b = {x.start for x in theirs} - {1}
    near = sum(any(abs(x - y) <= tolerance for y in b) for x in a)
    recalled = sum(any(abs(x - y) <= tolerance for y in a) for x in b)
    return {"ours": len(ours), "reference": len(theirs), "exact": len(a & b),
            f"precision_within_{tolerance}": near / len(a) if a else 0.0,
            f"recall_within_{tolerance}": recalled / len(b) if b else 0.0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.chunk", description=__doc__.split("\n")[0])
    parser.add_argument("input", help="JSONL of long chains of thought")
    parser.add_argument("--out", default="runs/chunk", help="output directory (chunks.jsonl)")
    parser.add_argument("--chunker", choices=("rule", "llm"), default="rule")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=7120, help="LLM chunker answer budget (paper: 7120)")
    parser.add_argument("--no-fallback", action="store_true",
                        help="keep invalid LLM blocks instead of the rule chunker's")
    parser.add_argument("--min-thought-steps", type=int, default=2)
    parser.add_argument("--max-thought-steps", type=int, default=12)
    parser.add_argument("--reference", help="released chunked JSONL to compare with (matched by question)")
    common.add_model_args(parser)
    args = parser.parse_args(argv)

    rows = common.read_jsonl(args.input)
    _, engine = common.load_engine(args)
    segmenter = StepSegmenter(engine.tokenizer)
    rule = RuleChunker(min_steps=args.min_thought_steps, max_steps=args.max_thought_steps)
    parsed = []
    for i, row in enumerate(rows):
        question = row.get("problem", row.get("question"))
        offset, thinking = thinking_text(row.get("response", row.get("thought")))
        parsed.append((str(row.get("id", i)), question, row["answer"], offset, segment_text(thinking, segmenter)))

    if args.chunker == "llm":
        chunker = LLMChunker(engine, max_attempts=args.max_attempts,
                             sampling=SamplingParams(temperature=0.1, max_new_tokens=args.max_new_tokens))

        async def run() -> list[ChunkResult]:
            return await asyncio.gather(*(chunker.chunk(q, steps) for _, q, _, _, steps in parsed))

        results = model_thread.run(run())
    else:
        results = [ChunkResult(rule.chunk(steps), True, 0) for *_, steps in parsed]

    references = {r["question"]: r for r in common.read_jsonl(args.reference)} if args.reference else {}
    out_rows = []
    for (pid, question, answer, offset, steps), result in zip(parsed, results):
        name = args.chunker
        blocks = result.blocks
        if not result.valid and not args.no_fallback:
            blocks, name = rule.chunk(steps), "rule (llm failed)"
        thoughts = thoughts_from_blocks(steps, blocks) if not validate_blocks(blocks, len(steps)) else []
        record = {"id": pid, "question": question, "answer": answer, "chunker": name, "valid": bool(thoughts),
                  "attempts": result.attempts, "errors": result.errors, "raw": result.raw,
                  "steps": [s.text for s in steps], "blocks": [asdict(b) for b in blocks],
                  "thoughts": [asdict(t) for t in thoughts]}
        print(f"{pid}: {len(steps)} steps -> {len(blocks)} thoughts by {name}"
              + (f" after {result.attempts} attempt(s)" if result.attempts else "")
              + ("" if thoughts else f"; INVALID: {validate_blocks(blocks, len(steps))}"))
        for b in blocks:
            print(f"  steps {b.start:>3}-{b.end:<3} {b.kind:<22} {steps[b.start - 1].text.strip()[:60]!r}")
        reference = references.get(question)
        if reference is not None:
            theirs = reference_blocks(reference, offset, steps)
            record["reference"] = {"blocks": [asdict(b) for b in theirs],
                                   "problems": validate_blocks(theirs, len(steps)), **compare(blocks, theirs)}
            print(f"  reference: {len(theirs)} blocks at our steps "
                  + ", ".join(f"{b.start}-{b.end}" for b in theirs))
            print(f"  reference under our validation: {record['reference']['problems'] or 'valid'}")
            print("  boundary agreement: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                                       for k, v in compare(blocks, theirs).items()))
        out_rows.append(record)
    path = common.write_jsonl(out_rows, Path(args.out) / "chunks.jsonl")
    print(f"wrote {path}")


if __name__ == "__main__":
    common.run_command(main)
