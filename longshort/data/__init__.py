"""Problems and where they come from.

- ``problem``: the ``Problem`` record (id, prompt, gold answer, meta);
- ``loaders``: JSONL files, the Hugging Face Hub, the registered benchmarks and ``load_problems``,
  the entry point for config strings (``data.source``);
- ``synthetic``: the built-in arithmetic word problems (splits kept disjoint by seed);
- ``longchains``: long chains of thought with known redundancy written for problems with steps;
- ``shipped/``: the evaluation sets that ship with the package (MATH500, AIME24/25, AMC23, GSM8K test).

The names below are the package's API; ``from longshort.data import load_problems, Problem`` is the
usual import.
"""
from longshort.data.loaders import (BENCHMARKS, BenchmarkSpec, CHOICE_LETTERS, choice_prompt, DataError,
                                    Fields, load_benchmark, load_hub, load_jsonl, load_problems, load_source,
                                    row_to_problem, save_jsonl, shuffle_choices, source_kind,
                                    split_gpqa_options)
from longshort.data.problem import Problem
from longshort.data.synthetic import SPLITS, split_seed, synthetic_problems

__all__ = [
    "BENCHMARKS", "BenchmarkSpec", "CHOICE_LETTERS", "DataError", "Fields", "Problem", "SPLITS",
    "choice_prompt", "load_benchmark", "load_hub", "load_jsonl", "load_problems", "load_source", "row_to_problem",
    "save_jsonl", "shuffle_choices", "source_kind", "split_gpqa_options", "split_seed", "synthetic_problems",
]
