"""The step-entropy pruning analysis, end to end (``python -m longshort.analysis.entropy``).

1. The model writes its own chain of thought for each problem (sampled through ``HFEngine``, batched).
2. One batched teacher-forced pass gives every thinking token's full-vocabulary entropy (bits, T=1);
   steps are cut on the token ids and scored by their mean token entropy (``scoring``; ``--score``
   picks other aggregates, one or several: the v1 sum, or ``body``, the mean after each step's opener
   tokens).
3. For kappa in {0, 0.2, ..., 1}, each score and each strategy (lowest entropy first, random, highest
   first), the chosen steps become ``[SKIP]``, the thinking is closed, the model answers, the answer
   is graded (``pruning``).
4. It prints the accuracy / token-reduction table and writes ``results.json`` (settings, timings,
   the table, per-chain step entropies), ``answers.jsonl`` (every pruned thinking and its answer:
   the raw material of ``[SKIP]`` SFT data, see ``skip.sft_examples``; ``--sft PATH`` writes them) and
   ``pruning.png``.

Accuracy at kappa = 0 is the model's full-chain accuracy under the same answer protocol.

The chains (the slowest part) are kept in ``chains.json`` with the settings they were sampled with;
a run stopped after them, or started again with other scores, kappas or answer settings, reuses
them instead of sampling again.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from longshort.analysis import cli_common as common
from longshort.analysis.chains import Chain
from longshort.analysis.pruning import KAPPAS, SCORES, STRATEGIES, Cell, answer_after_pruning, plot_pruning, summarise
from longshort.data import Problem
from longshort.engines import model_thread
from longshort.engines.base import SamplingParams
from longshort.paths import write_atomically
from longshort.verify import Verifier

logger = logging.getLogger(__name__)


def format_table(cells: list[Cell], strategies=STRATEGIES) -> str:
    """Rows kappa (and score, when there are several), columns strategy: ``accuracy% (-reduction%)``."""
    kappas = sorted({c.kappa for c in cells})
    scores = list(dict.fromkeys(c.score for c in cells))
    lookup = {(c.score, c.strategy, c.kappa): c for c in cells}
    label = "kappa" if len(scores) == 1 else "kappa score"
    width = max(len(label), 6 if len(scores) == 1 else 6 + 1 + max(map(len, scores)))
    header = f"{label:>{width}} | " + " | ".join(f"{s:^22}" for s in strategies)
    lines = [header, "-" * len(header)]
    for kappa in kappas:
        for score in scores:
            row = []
            for strategy in strategies:
                cell = lookup.get((score, strategy, kappa))
                row.append(f"{100 * cell.accuracy:5.1f}% acc {100 * cell.reduction:5.1f}% tok-" if cell else " " * 22)
            name = f"{kappa:.2f}" if len(scores) == 1 else f"{kappa:.2f} {score}"
            lines.append(f"{name:>{width}} | " + " | ".join(f"{r:^22}" for r in row))
    return "\n".join(lines)


CHAINS_FILE = "chains.json"
# The arguments a chain depends on besides the problems and the weights (the engine is seeded).
CHAIN_SETTINGS = ("model", "dtype", "seed", "max_batch_size", "chain_tokens", "chain_temperature", "system")


def chain_key(args: argparse.Namespace, problems: Sequence[Problem]) -> dict:
    """What the chains were sampled from: the settings, the problems, and the model's weight files
    (name, size, modification time), so retrained weights in the same folder are not mistaken for
    the old ones."""
    weights = Path(args.model)
    files = sorted(f for f in weights.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf")) if weights.is_dir() \
        else [weights] if weights.is_file() else []
    digest = hashlib.sha256("\n".join(f"{p.id}\t{p.prompt}\t{p.answer}" for p in problems).encode()).hexdigest()
    return {**{k: getattr(args, k) for k in CHAIN_SETTINGS}, "problems": digest,
            "weights": [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]}


def cached_chains(out: Path, key: dict) -> list[Chain] | None:
    """The chains an earlier run with the same ``chain_key`` kept in ``out``, else None."""
    path = out / CHAINS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("key") != key:
        logger.info("%s was sampled from other settings, problems or weights; sampling the chains again", path)
        return None
    logger.info("reusing the %d chains in %s", len(saved["chains"]), path)
    return [Chain(**c) for c in saved["chains"]]


def keep_chains(out: Path, key: dict, chains: Sequence[Chain]) -> None:
    text = json.dumps({"key": key, "chains": [asdict(c) for c in chains]}, ensure_ascii=False)
    write_atomically(out / CHAINS_FILE, lambda tmp: tmp.write_text(text))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m longshort.analysis.entropy", description=(
        "Step-entropy pruning analysis on a model's own chains of thought: accuracy and token reduction "
        "when the lowest-entropy / random / highest-entropy steps are replaced by [SKIP]."))
    parser.add_argument("--out", default="runs/step_entropy", help="output directory")
    parser.add_argument("--kappas", type=float, nargs="+", default=list(KAPPAS))
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--score", nargs="+", choices=SCORES, default=["mean"],
                        help="step score(s) to rank by: mean token entropy (the paper's), sum (v1, the one its "
                             "Theorem 1 bounds), or body (the mean after each step's first tokens, not the "
                             "paper's; see scoring.StepEntropy); several are compared on the same chains")
    parser.add_argument("--chain-tokens", type=int, default=256, help="token budget of a chain of thought")
    parser.add_argument("--chain-temperature", type=float, default=0.6, help="the paper samples at 0.6, top-p 0.95")
    parser.add_argument("--answer-tokens", type=int, default=32, help="token budget of the answer after </think>")
    parser.add_argument("--answer-temperature", type=float, default=0.6, help="0 = greedy (less noise per cell)")
    parser.add_argument("--max-batch-tokens", type=int, default=16384, help="tokens per teacher-forced pass")
    parser.add_argument("--sft", help="also write [SKIP] SFT examples (verified answers, lowest-entropy pruning "
                                      "at --sft-kappa by the first --score) to this JSONL path, in the SFT "
                                      "stage's transcript format")
    parser.add_argument("--sft-kappa", type=float, default=0.8)
    parser.add_argument("--sft-role", default="single", help="agent role the SFT examples train")
    common.add_model_args(parser)
    common.add_problem_args(parser, default_limit=100)
    common.add_format_args(parser)
    args = parser.parse_args(argv)
    if args.sft and (args.sft_kappa not in args.kappas or "low" not in args.strategies):
        parser.error("--sft needs --sft-kappa among --kappas and the 'low' strategy")
    args.score = list(dict.fromkeys(args.score))

    from longshort.analysis.chains import generate_chains
    from longshort.analysis.scoring import step_entropies, token_entropies
    from longshort.analysis.steps import StepSegmenter

    model, engine = common.load_engine(args)
    fmt = common.format_from_args(args)
    problems = common.problems_from_args(args)
    verifier = Verifier()
    timings: dict[str, float] = {}

    out = Path(args.out)
    start = time.perf_counter()
    key = chain_key(args, problems)
    chains = cached_chains(out, key)
    if chains is None:
        with common.progress_engine(engine, "chains", total=len(problems)) as tracked:
            chains = model_thread.run(generate_chains(tracked, problems, SamplingParams(
                temperature=args.chain_temperature, top_p=0.95, max_new_tokens=args.chain_tokens), fmt))
        keep_chains(out, key, chains)
        timings["chains_s"] = time.perf_counter() - start
    chain_tokens = sum(len(c.ids) for c in chains)

    segmenter = StepSegmenter(engine.tokenizer)
    steps = [segmenter.segment(c.ids) for c in chains]
    start = time.perf_counter()
    entropies = token_entropies(model, [(c.prompt_ids, c.ids) for c in chains], max_batch_tokens=args.max_batch_tokens)
    timings["entropy_s"] = time.perf_counter() - start
    scores = [step_entropies(e, s) for e, s in zip(entropies, steps)]

    start = time.perf_counter()
    with common.progress_engine(engine, "answers") as tracked:  # total: the distinct pruned thinkings
        answers = model_thread.run(answer_after_pruning(
            tracked, chains, steps, {name: [s.ranking(name) for s in scores] for name in args.score},
            kappas=args.kappas, strategies=args.strategies,
            sampling=fmt.answer_sampling(args.answer_temperature, args.answer_tokens), verifier=verifier, fmt=fmt,
            seed=args.seed))
    timings["answers_s"] = time.perf_counter() - start
    cells = summarise(answers)
    own = sum(verifier.grade(c.text, c.gold, c.choices).correct for c in chains) / max(1, len(chains))

    n_steps = [len(s) for s in steps]
    summary = {
        "settings": vars(args),
        "chains": {"n": len(chains), "thinking_tokens": chain_tokens, "closed": sum(c.closed for c in chains),
                   "mean_steps": sum(n_steps) / max(1, len(n_steps)), "own_answer_accuracy": own},
        "timings": {**timings, **({"chain_tok_per_s": chain_tokens / timings["chains_s"]} if "chains_s" in timings
                                  else {"chains_reused": True}),
                    "entropy_tok_per_s": (chain_tokens + sum(len(c.prompt_ids) for c in chains)) / timings["entropy_s"],
                    "answers": len({(a.problem_id, a.thinking) for a in answers})},
        "table": [asdict(c) for c in cells],
        "per_chain": [{"id": c.problem_id, "question": c.question, "gold": c.gold, "steps": [st.text for st in s],
                       "mean": sc.mean, "sum": sc.total, "body": sc.body, "token_entropy": [round(float(x), 4) for x in e]}
                      for c, s, sc, e in zip(chains, steps, scores, entropies)],
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    common.write_jsonl((asdict(a) for a in answers), out / "answers.jsonl")
    if args.sft:
        from longshort.analysis.skip import sft_examples

        problems = {c.problem_id: {"question": c.question, "answer": c.gold} for c in chains}
        examples = sft_examples((asdict(a) for a in answers if a.score == args.score[0]), problems,
                                kappa=args.sft_kappa, role=args.sft_role)
        common.write_jsonl(examples, Path(args.sft))
        print(f"wrote {len(examples)} [SKIP] SFT examples to {args.sft}")
    title = f"{args.model} on {args.data} (n={len(chains)})"
    plot_pruning(cells, out / "pruning.png", title=title)

    print(f"{title}: {chain_tokens} thinking tokens, {sum(n_steps) / max(1, len(n_steps)):.1f} steps per chain, "
          f"{sum(c.closed for c in chains)} chains closed </think> themselves")
    chain_time = (f"{timings['chains_s']:.1f}s ({summary['timings']['chain_tok_per_s']:.0f} tok/s)"
                  if "chains_s" in timings else f"reused from {out / CHAINS_FILE}")
    print(f"chains {chain_time} | "
          f"entropy pass {timings['entropy_s']:.2f}s ({summary['timings']['entropy_tok_per_s']:.0f} tok/s) | "
          f"{summary['timings']['answers']} answers {timings['answers_s']:.1f}s")
    print(f"accuracy of the chains' own answers: {100 * own:.1f}%")
    print(format_table(cells, [s for s in STRATEGIES if s in args.strategies]))
    print(f"wrote {out / 'results.json'}, {out / 'answers.jsonl'}, {out / 'pruning.png'}")


if __name__ == "__main__":
    common.run_command(main)
