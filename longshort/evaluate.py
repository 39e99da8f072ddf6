"""``python -m longshort.evaluate recipe=NAME [key=value ...] [out=DIR] [system=LABEL] [compare=DIR,...]``.

Evaluates the recipe's Long-Short pair (``eval.mode=pair``) or one model alone (``eval.mode=single``)
on ``eval.benchmarks`` and writes records, ``results.json``, ``table.md``, ``plot.png`` and
``report.html`` (``longshort.report``: the table, the plot and an episode browser) into the output
folder (default ``<output_dir>/eval``, or ``<output_dir>/eval_single`` for single mode). The table
goes to stdout; progress to stderr. Ctrl-C keeps every finished episode: the same command resumes.
Besides config overrides it takes arguments of its own, which are not config keys: ``out=``
(output folder), ``system=`` (the row label), ``compare=`` (earlier evaluations' folders,
comma-separated, shown as extra rows) and ``baseline=`` (an earlier evaluation of other weights on
the same problems: the two are paired item by item, and ``table.md`` and ``paired.json`` say by how
much this one differs, with a 95% interval: ``longshort.evaluation.paired``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from longshort import cli
from longshort.report import report_after_run

PROG = "longshort.evaluate"
FLAGS = {"--restart": "discard this output folder's records and evaluate from scratch"}
ARGUMENTS = {
    "out=DIR": "output folder (default <output_dir>/eval, or <output_dir>/eval_single in single mode)",
    "system=LABEL": "the row label of this system (default '<name> (<mode>)')",
    "compare=DIR[,DIR]": "earlier evaluations (folders with results.json) to show as extra rows",
    "baseline=DIR": "an earlier evaluation on the same problems: table.md and paired.json get this one minus it, "
                    "paired by item, with 95% intervals",
}
BUILTIN_FLAGS = {**cli.DEBUG_FLAG, "--help-config": "list every config key with its type and documentation",
                 "--print-config": "print the resolved config and exit"}

console = Console(stderr=True)


def split_arguments(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take ``out=``, ``system=``, ``compare=`` and ``baseline=`` out of argv; the rest is the recipe and overrides."""
    own = {spec.split("=")[0] for spec in ARGUMENTS}
    found, rest = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in own:
            found[key] = value
        else:
            rest.append(arg)
    return found, rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print(cli.usage(PROG, {**FLAGS, **BUILTIN_FLAGS}))
        print("arguments (not config keys):")
        print("\n".join(f"  {name:20s} {text}" for name, text in ARGUMENTS.items()))
        return 0
    arguments, rest = split_arguments(argv)
    config, invocation = cli.load(PROG, rest, FLAGS)
    return cli.guarded(lambda: _evaluate(config, invocation, arguments), invocation)


def _evaluate(config, invocation: cli.Invocation, arguments: dict[str, str]) -> int:
    from longshort.evaluation import Results, default_out_dir, evaluate_benchmarks  # torch: after the config

    out = Path(arguments["out"]) if arguments.get("out") else default_out_dir(config)
    try:
        compare = [Results.load(path) for path in arguments.get("compare", "").split(",") if path]
        baseline = Results.load(arguments["baseline"]) if arguments.get("baseline") else None  # fails before the run
        console.print(f"evaluating {config.name} ({config.eval.mode}) on {', '.join(config.eval.benchmarks)} "
                      f"-> {out}")
        results = evaluate_benchmarks(config, out_dir=out, system=arguments.get("system"),
                                      restart="--restart" in invocation.flags, compare=compare)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]: finished episodes are kept in {out / 'records'}; "
                      "run the same command again to resume")
        return 130
    except ImportError as err:  # an engine's optional package (vllm...) is missing: the message says which
        print(f"error: {cli.one_line(err)}", file=sys.stderr)
        return 2
    if baseline is not None:
        from longshort.evaluation import paired
        from longshort.paths import write_text_atomically

        diffs = paired.compare_sets(out, arguments["baseline"], list(results.sets))
        table = (out / "table.md").read_text(encoding="utf-8")
        write_text_atomically(out / "table.md", table + "\n## Paired difference\n\n"
                              + paired.markdown(results.system, baseline.system, diffs))
        paired.write(out, results.system, baseline.system, arguments["baseline"], diffs)
    print((out / "table.md").read_text(), end="")
    console.print(report_after_run(out), markup=False, highlight=False, soft_wrap=True)
    rate = results.tokens_per_second
    speed = f"; {results.generated_tokens:,} tokens in {results.generation_seconds:.1f} s ({rate:,.0f} tok/s)" \
        if rate else ""
    console.print(f"[green]done[/green]: {out / 'results.json'}, {out / 'table.md'}, {out / 'plot.png'}{speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
