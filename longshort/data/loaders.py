"""Problems and where they come from: local JSONL files, the Hugging Face Hub, benchmarks, synthetic.

Every source becomes a list of ``Problem`` through ONE row mapping (``row_to_problem``), so a
benchmark read from its local copy and from the Hub yields the same records, ids included. Loaders
never mutate their source. A bad row fails with ``DataError`` naming the file and line (or the Hub
row) and the fix, because a trace from deep inside a training run does not say which row was wrong.

Multiple-choice items (GPQA) are shuffled per item with a seed derived from a stable hash of the item
id: the published files put the right option first, so an unshuffled evaluation rewards a model that
always answers "A". The hash is sha256, not ``hash()``, so the order is the same in every process.

``load_problems(source)`` is the entry point for config strings (``data.source``): ``"synthetic"``
or ``"synthetic:<split>"``, a benchmark name, a ``.jsonl`` path, or a Hub dataset id.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from longshort import paths
from longshort.errors import UserError
from longshort.jsonl import JsonlError, read_jsonl
from longshort.registry import BENCHMARKS, UnknownNameError, did_you_mean
from longshort.data.problem import Problem
from longshort.data.synthetic import split_seed, synthetic_problems

if TYPE_CHECKING:
    from longshort.config import DataSourceConfig


CHOICE_LETTERS = "ABCD"
CHOICE_INSTRUCTION = "Answer with the letter of the correct option in \\boxed{}."


class DataError(UserError, ValueError):
    """Data that cannot become Problems (a bad row, an unreadable source); says where and how to fix it."""


class HubLoadError(DataError):
    """``datasets.load_dataset`` failed (network, auth, no such dataset): the source, not a row."""


@dataclass(frozen=True)
class Fields:
    """Which row keys hold each part of a problem; ``None`` for id/solution means the rows have none."""

    prompt: str = "problem"
    answer: str = "answer"
    id: str | None = "id"
    solution: str | None = "solution"


# Names tried, in order, when the configured key is missing from a row (``question`` is what the
# Long-Short chunking data and many Hub sets use; ``prompt`` is what ``save_jsonl`` writes).
_ALIASES = {
    "prompt": ("problem", "question", "Question", "prompt"),
    "answer": ("answer", "final_answer", "Answer"),
    "id": ("id", "unique_id", "idx"),
    "solution": ("solution", "Solution"),
}

# Benchmark-specific finishing of a mapped row; it gets the raw row too (GPQA's Hub layout keeps the
# options in their own columns). It raises ValueError for a bad row; the caller adds the location.
Postprocess = Callable[[Problem, Mapping[str, Any]], Problem]


def _lookup(row: Mapping[str, Any], role: str, key: str | None) -> tuple[str | None, Any]:
    if key is None:
        return None, None
    for name in (key, *_ALIASES[role]):
        if name in row and row[name] is not None:
            return name, row[name]
    return None, None


def _answer_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"answer must be a string or a number, got {type(value).__name__} {value!r:.60}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 27.0 -> "27": Hub copies of integer answers are often stored as floats
    text = str(value).strip()
    if not text:
        raise ValueError("answer is empty")
    return text


def row_to_problem(
    row: Mapping[str, Any], fields: Fields, *, default_id: str, source: str, postprocess: Postprocess | None = None
) -> Problem:
    """Map one raw row to a Problem; shared by every loader so all sources agree. Raises ValueError."""
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    values = {}
    for role, key in (("prompt", fields.prompt), ("answer", fields.answer)):
        found, values[role] = _lookup(row, role, key)
        if found is None:
            present = ", ".join(sorted(map(str, row))) or "none"
            raise ValueError(
                f"missing field '{key}' (fields present: {present}); pass {role}_key=... if it is named differently"
            )
    if not isinstance(values["prompt"], str) or not values["prompt"].strip():
        raise ValueError(f"field '{fields.prompt}' must be non-empty text")
    _, raw_id = _lookup(row, "id", fields.id)
    _, solution = _lookup(row, "solution", fields.solution)
    if solution is not None and not isinstance(solution, str):
        raise ValueError(f"solution must be text, got {type(solution).__name__}")
    meta = row.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"field 'meta' must be an object, got {type(meta).__name__}")
    meta = {"source": source, "kind": "math", **copy.deepcopy(dict(meta))}  # never share the row's objects
    if solution is not None:
        meta["solution"] = solution
    problem = Problem(
        id=default_id if raw_id is None else str(raw_id),
        prompt=values["prompt"],
        answer=_answer_text(values["answer"]),
        meta=meta,
    )
    return postprocess(problem, row) if postprocess else problem


def _to_problems(
    rows: Iterable[tuple[str, Any]], fields: Fields, *, id_format: str, source: str,
    postprocess: Postprocess | None, limit: int | None,
) -> list[Problem]:
    """Map located rows (``(where, row)``) to Problems, adding the location to every error."""
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for index, (where, row) in enumerate(itertools.islice(rows, limit)):
        try:
            problem = row_to_problem(row, fields, default_id=id_format.format(index=index), source=source,
                                     postprocess=postprocess)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from err
        if problem.id in first_seen:
            raise DataError(f"{where}: duplicate id '{problem.id}' (first at {first_seen[problem.id]}); "
                            "ids key every result, so make them unique")
        first_seen[problem.id] = where
        problems.append(problem)
    return problems


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        for number, row in read_jsonl(path):
            yield f"{path}:{number}", row
    except JsonlError as err:
        raise DataError(str(err)) from None


def load_jsonl(
    path: str | Path, *, prompt_key: str = "problem", answer_key: str = "answer", id_key: str | None = "id",
    solution_key: str | None = "solution", limit: int | None = None, source: str | None = None,
    id_format: str | None = None, postprocess: Postprocess | None = None,
) -> list[Problem]:
    """Problems from a local JSONL file, one object a line (``longshort.jsonl.read_jsonl``: a byte-order
    mark, CRLF line ends and blank lines are fine).

    Rows without an id get ``id_format.format(index=i)`` (default ``"<file stem>-0000"``).
    ``save_jsonl`` output loads back to equal Problems.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no JSONL file at {path} (relative paths start from the current folder)")
    fields = Fields(prompt_key, answer_key, id_key, solution_key)
    return _to_problems(_jsonl_rows(path), fields, id_format=id_format or f"{path.stem}-{{index:04d}}",
                        source=source or str(path), postprocess=postprocess, limit=limit)


def load_hub(
    dataset_id: str, *, split: str = "test", config: str | None = None, prompt_key: str = "problem",
    answer_key: str = "answer", id_key: str | None = None, solution_key: str | None = None,
    limit: int | None = None, source: str | None = None, id_format: str | None = None,
    postprocess: Postprocess | None = None, **load_kwargs: Any,
) -> list[Problem]:
    """Problems from ``datasets.load_dataset(dataset_id, config, split=split, **load_kwargs)``.

    ``load_kwargs`` pass through (``data_files``, ``cache_dir``, ``revision``, ``token``...), so
    ``load_hub("json", split="train", data_files="x.jsonl")`` reads a local file the same way.
    Rows without an id get ``id_format.format(index=i)`` (default ``"<dataset name>-0000"``).
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "loading from the Hugging Face Hub needs the datasets package: pip install datasets "
            "(or pip install 'longshort[hub]')"
        ) from err
    try:
        table = datasets.load_dataset(dataset_id, config, split=split, **load_kwargs)
    except Exception as err:  # network, auth, no such dataset or file: one message that says where
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HubLoadError(f"cannot load '{dataset_id}' with datasets.load_dataset ({type(err).__name__}: {first}); "
                        "a local file must end in .jsonl and exist, a Hub id must be reachable "
                        "(or already in the Hugging Face cache when offline)") from err
    where = f"{dataset_id}" + (f" ({config})" if config else "") + f" [{split}] row"
    rows = ((f"{where} {i + 1}", row) for i, row in enumerate(table))
    fields = Fields(prompt_key, answer_key, id_key, solution_key)
    default_format = f"{dataset_id.rstrip('/').split('/')[-1]}-{{index:04d}}"
    return _to_problems(rows, fields, id_format=id_format or default_format, source=source or dataset_id,
                        postprocess=postprocess, limit=limit)


def save_jsonl(problems: Iterable[Problem], path: str | Path) -> Path:
    """Write Problems as JSONL (``Problem.to_dict`` per line), atomically; ``load_jsonl`` reads them back."""
    return paths.write_text_atomically(Path(path), "".join(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n"
                                                          for problem in problems))


# ---------------------------------------------------------------- multiple choice (GPQA)

_GPQA_OPTIONS = re.compile(
    r"^(?P<stem>.*?)\s*Candidate answer:\s*\(1\)\s*(?P<o1>.*?)\s*,\s*or \(2\)\s*(?P<o2>.*?)"
    r"\s*,\s*or \(3\)\s*(?P<o3>.*?)\s*,\s*or \(4\)\s*(?P<o4>.*?)\s*$",
    re.DOTALL,
)


def split_gpqa_options(text: str) -> tuple[str, list[str]]:
    """Split ``stem ... Candidate answer: (1) X, or (2) Y, or (3) Z, or (4) W`` into stem and options."""
    match = _GPQA_OPTIONS.match(text)
    if not match:
        raise ValueError("cannot find 'Candidate answer: (1) ..., or (2) ..., or (3) ..., or (4) ...' in the problem")
    return match["stem"], [match[f"o{i}"] for i in range(1, 5)]


def shuffle_choices(item_id: str, options: list[str]) -> tuple[list[str], int]:
    """Options in a per-item order fixed by sha256 of the id; returns them and where option 0 landed.

    Sorting by a hash per (id, option index) is a uniform permutation that depends on nothing but the
    id: not on PYTHONHASHSEED, not on the ``random`` module's algorithm across Python versions.
    """
    def key(k: int) -> bytes:
        return hashlib.sha256(f"{item_id}#{k}".encode()).digest()

    order = sorted(range(len(options)), key=key)
    return [options[k] for k in order], order.index(0)


def choice_prompt(stem: str, choices: list[str]) -> str:
    """Stem, lettered options and the instruction to box the letter."""
    lines = "\n".join(f"({letter}) {choice}" for letter, choice in zip(CHOICE_LETTERS, choices))
    return f"{stem}\n\n{lines}\n\n{CHOICE_INSTRUCTION}"


def _postprocess_gpqa(problem: Problem, row: Mapping[str, Any]) -> Problem:
    """Both layouts -> one shuffled form: the local text layout and the Hub's answer columns."""
    if "Incorrect Answer 1" in row:
        stem = problem.prompt.strip()
        options = [problem.answer] + [str(row[f"Incorrect Answer {k}"]).strip() for k in (1, 2, 3)]
    else:
        stem, options = split_gpqa_options(problem.prompt)
        if options[0] != problem.answer:
            raise ValueError(f"option (1) {options[0]!r:.60} differs from the answer field {problem.answer!r:.60}; "
                             "the file must list the correct option first")
    choices, correct = shuffle_choices(problem.id, options)
    meta = {**problem.meta, "kind": "choice", "stem": stem, "choices": choices, "answer_text": options[0]}
    return Problem(problem.id, choice_prompt(stem, choices), CHOICE_LETTERS[correct], meta)


# ---------------------------------------------------------------- answers inside solutions (MATH)


def boxed_answer(problem: Problem, row: Mapping[str, Any]) -> Problem:
    """The gold answer is the last ``\\boxed{}`` of the answer field (a whole MATH solution); the
    full text is kept in ``meta["solution"]``. Taken at load time, so a grader never has to find the
    box in a solution (math-verify credits some wrong answers against a whole solution)."""
    from longshort.verify import extract_boxed

    boxed = extract_boxed(problem.answer)
    if boxed is None or not boxed.strip():
        raise ValueError(f"answer_from=boxed but the answer has no \\boxed{{}}: {problem.answer[-80:]!r}; fix the "
                         "row, or set answer_from=field to keep the text as the answer")
    meta = {**problem.meta, "solution": problem.meta.get("solution") or problem.answer}
    return Problem(problem.id, problem.prompt, boxed.strip(), meta)


# ---------------------------------------------------------------- GSM8K

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def _postprocess_gsm8k(problem: Problem, row: Mapping[str, Any]) -> Problem:
    """Strip ``<<48/2=24>>`` calculator marks; steps are the solution lines before ``#### answer``.

    The Hub layout keeps the whole solution in ``answer``, ending with ``#### 72``; split it there.
    """
    solution, answer = problem.meta.get("solution", ""), problem.answer
    if "####" in answer:
        solution, answer = answer.rsplit("####", 1)
    steps = [line.strip() for line in _CALCULATOR.sub("", solution).splitlines() if line.strip()]
    if steps and steps[-1].startswith("####"):
        steps.pop()
    answer = answer.strip().replace(",", "")
    meta = {**problem.meta, "solution": "\n".join(steps), "steps": steps, "difficulty": len(steps)}
    return Problem(problem.id, problem.prompt, answer, meta)


# ---------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives locally and on the Hub, and how its rows map to Problems.

    The local copies (under the data dir) all use the default ``Fields``; ``hub_fields`` names the
    Hub columns. ``id_format`` numbers Hub rows like the local files, so a problem keeps its id,
    and a GPQA item its shuffle, whichever source it came from (assuming the same row order).
    """

    name: str
    hub_id: str
    hub_split: str
    local_file: str
    id_format: str
    hub_config: str | None = None
    hub_fields: Fields = Fields(id=None)
    kind: str = "math"
    postprocess: Postprocess | None = None
    note: str = ""

    def load_local(self, root: Path, *, limit: int | None = None) -> list[Problem]:
        path = Path(root) / self.local_file
        if not path.is_file():
            raise FileNotFoundError(
                f"benchmark '{self.name}': no local copy at {path}. Put {self.local_file} under {root} "
                f"(the data dir comes from ${paths.DATA_DIR_ENV} or the data_dir argument), or unset "
                f"${paths.DATA_DIR_ENV} to load {self.hub_id} from the Hugging Face Hub."
            )
        return load_jsonl(path, limit=limit, source=self.name, id_format=self.id_format, postprocess=self.postprocess)

    def load_from_hub(self, *, limit: int | None = None, **load_kwargs: Any) -> list[Problem]:
        f = self.hub_fields
        return load_hub(self.hub_id, split=self.hub_split, config=self.hub_config, prompt_key=f.prompt,
                        answer_key=f.answer, id_key=f.id, solution_key=f.solution, limit=limit, source=self.name,
                        id_format=self.id_format, postprocess=self.postprocess, **load_kwargs)


def _register(spec: BenchmarkSpec) -> None:
    BENCHMARKS.register(spec.name)(spec)


_register(BenchmarkSpec("math500", "HuggingFaceH4/MATH-500", "test", "benchmarks/math500.jsonl", "math500-{index:04d}",
                        hub_fields=Fields(id=None, solution="solution")))
_register(BenchmarkSpec("aime24", "HuggingFaceH4/aime_2024", "train", "benchmarks/aime24.jsonl", "aime24-{index:04d}",
                        hub_fields=Fields(id=None, solution="solution")))
_register(BenchmarkSpec("aime25", "math-ai/aime25", "test", "benchmarks/aime25.jsonl", "aime25-{index:04d}",
                        hub_fields=Fields(id=None, solution=None)))
_register(BenchmarkSpec("amc23", "math-ai/amc23", "test", "benchmarks/amc23.jsonl", "amc23-{index:04d}",
                        hub_fields=Fields(prompt="question", id=None, solution=None)))
_register(BenchmarkSpec(
    "gpqa_diamond", "Idavidrein/gpqa", "train", "benchmarks/gpqa_diamond.jsonl", "gpqa_diamond-{index:04d}",
    hub_config="gpqa_diamond", kind="choice", postprocess=_postprocess_gpqa,
    hub_fields=Fields(prompt="Question", answer="Correct Answer", id=None, solution="Explanation"),
    note="gated on the Hub: accept its terms and log in (huggingface-cli login) before loading",
))
for _split in ("test", "train"):
    _register(BenchmarkSpec(
        "gsm8k" if _split == "test" else f"gsm8k_{_split}", "openai/gsm8k", _split, f"gsm8k/{_split}.jsonl",
        f"gsm8k-{_split}-{{index:05d}}", hub_config="main", postprocess=_postprocess_gsm8k,
        hub_fields=Fields(prompt="question", id=None, solution=None),
    ))


def load_benchmark(name: str, *, data_dir: str | Path | None = None, limit: int | None = None) -> list[Problem]:
    """A registered benchmark, from the first place that has it:

    1. ``data_dir`` (else ``$LONGSHORT_DATA_DIR``), when set and holding the set's file;
    2. the package's own copy (``longshort/data/shipped``: MATH500, AIME24/25, AMC23, GSM8K test), so
       evaluation works offline after ``pip install``;
    3. a data dir that was set but lacks the file is an error naming the path (GPQA is never packaged);
    4. otherwise the Hugging Face Hub.
    """
    spec: BenchmarkSpec = BENCHMARKS.get(name)
    root = Path(data_dir) if data_dir is not None else paths.data_dir()
    if root is not None and (root / spec.local_file).is_file():
        return spec.load_local(root, limit=limit)
    packaged = paths.packaged_data_dir()
    if (packaged / spec.local_file).is_file():
        return spec.load_local(packaged, limit=limit)
    if root is not None:
        return spec.load_local(root, limit=limit)  # raises: says where the file should be
    try:
        return spec.load_from_hub(limit=limit)
    except HubLoadError as err:  # network, auth, missing dataset: say how to avoid the Hub altogether
        note = f" ({spec.note})" if spec.note else ""
        cause = err.__cause__ or err
        detail = f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
        raise DataError(
            f"benchmark '{name}': loading {spec.hub_id} from the Hub failed{note}: {detail}. To use a local copy, set "
            f"${paths.DATA_DIR_ENV} to a folder containing {spec.local_file}."
        ) from err


def source_kind(source: str) -> str:
    """Which loader a data source string selects: "synthetic", "benchmark", "jsonl" or "hub"."""
    if source.partition(":")[0] == "synthetic":
        return "synthetic"
    if source in BENCHMARKS:
        return "benchmark"
    if source.endswith(".jsonl") or Path(source).is_file():
        return "jsonl"
    if "/" in source:
        return "hub"
    known = ["synthetic", *BENCHMARKS.names()]
    raise UnknownNameError(
        f"unknown data source '{source}'{did_you_mean(source, known)}; use one of {', '.join(known)}, "
        "a .jsonl path, or a Hub dataset id (owner/name)"
    )


def load_problems(source: str, **kw: Any) -> list[Problem]:
    """Problems from a config string (``data.source``); ``kw`` go to the loader the source selects.

    - ``"synthetic"`` / ``"synthetic:train"`` / ``"synthetic:eval"``: ``synthetic_problems`` with
      ``limit`` (default 1000) problems, ``seed`` (default 0, mapped through ``split_seed`` when a
      split is named), ``min_steps``, ``max_steps``.
    - a registered benchmark name: ``load_benchmark`` (``data_dir``, ``limit``).
    - a path ending in ``.jsonl`` or naming an existing file: ``load_jsonl``.
    - anything else with a ``/`` is a Hub dataset id: ``load_hub`` (``split``, ``config``, keys...).
    """
    kind = source_kind(source)
    if kind == "synthetic":
        split = source.partition(":")[2]
        limit, seed = kw.pop("limit", None), kw.pop("seed", 0)
        seed = split_seed(seed, split) if split else seed
        return synthetic_problems(1000 if limit is None else limit, seed=seed, **kw)
    return {"benchmark": load_benchmark, "jsonl": load_jsonl, "hub": load_hub}[kind](source, **kw)


def load_source(source: "DataSourceConfig", seed: int) -> list[Problem]:
    """The problems a recipe's data section names (``data.train``, ``data.eval``): each field of the
    section goes to the loader that uses it; synthetic splits get disjoint seeds from the run seed."""
    kind = source_kind(source.source)
    if kind == "synthetic":
        name = source.source if ":" in source.source else f"synthetic:{source.split}"
        return load_problems(name, limit=source.limit, seed=seed, min_steps=source.min_steps,
                             max_steps=source.max_steps)
    kw: dict[str, Any] = {"limit": source.limit}
    if kind in ("jsonl", "hub"):
        kw.update(prompt_key=source.prompt_key, answer_key=source.answer_key)
        if source.answer_from == "boxed":
            kw["postprocess"] = boxed_answer
    if kind == "hub":
        kw["split"] = source.split
    return load_problems(source.source, **kw)
