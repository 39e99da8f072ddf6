"""Table specs: which systems a reproduced paper table compares, read from ``recipes/tables/*.yaml``.

A spec names **runs** (a recipe plus overrides, trained by ``python -m longshort.train``),
**analyses** (a command that reads a run's weights, e.g. ``python -m longshort.analysis.entropy``),
**rows** (what the table shows) and **columns** (where the rows are measured):

- a row ``{run: NAME, weights: sft|rl}`` is a run's weights after that stage; a run with ``seeds:
  [1, 2, 3]`` is trained once per seed, and its rows show each seed and the mean over seeds;
- a row ``{model: HUB_ID, recipe: NAME}`` is an external model evaluated as is, alone
  (``eval.mode=single``), under that recipe's evaluation protocol;
- a row ``{analysis: NAME, strategy: low|random|high, kappa: K}`` is one cell of a step-entropy
  pruning analysis (the model's own chains with ``floor(K x N)`` steps replaced by ``[SKIP]``);
  ``score: mean|sum|body`` picks the step score that ranked them (the analysis must compute it).

Every row is compared with the table's ``baseline`` row (or its own ``versus:`` row) paired on the
same problems, with a 95% interval (``longshort.evaluation.paired``).

``columns: heldout`` measures rows on each run's own held-out problems (the pipeline's eval stage;
every run of a table should then share its data settings, which the table-wide ``overrides``
do); a list of ``{benchmarks: [...], samples: k}`` measures them with ``python -m longshort.evaluate``,
one call per group (the paper's table: 4 samples on AIME/AMC, 1 on MATH500/GPQA).

Strings may name another run's folder as ``{runs.NAME}`` (e.g. a teacher's weights:
``sft.synthesis.teacher={runs.longcot}/sft/single/final``); that run must come earlier in ``runs``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from longshort.config import STEP_SCORES, recipe_dir, resolve_yaml
from longshort.errors import UserError
from longshort.paths import read_user_text
from longshort.registry import did_you_mean

HELDOUT = "heldout"
REFERENCE = re.compile(r"\{runs\.([A-Za-z0-9_\-]+)\}")


class TableError(UserError, ValueError):
    """A table spec that cannot be used; the message is one line and says how to fix it."""


@dataclass
class RunSpec:
    recipe: str
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # several: one run per seed (NAME_s<seed>), rows show each + mean
    sft: bool = True  # false: no SFT stage, RL starts from the agents' configured weights (another run's, say)


def seed_runs(spec: "TableSpec") -> dict[str, tuple[str, RunSpec]]:
    """Every run the table trains: folder name -> (the spec's run name, the run with its seed set).

    A run with ``seeds`` becomes one run per seed, ``<name>_s<seed>``, each with ``seed=<seed>`` after
    its overrides (set ``data.seed`` table-wide so that every seed sees the same problems)."""
    out = {}
    for name, run in spec.runs.items():
        if not run.seeds:
            out[name] = (name, run)
        for seed in run.seeds:
            out[f"{name}_s{seed}"] = (name, RunSpec(run.recipe, [*run.overrides, f"seed={seed}"], sft=run.sft))
    return out


@dataclass
class AnalysisSpec:
    module: str = "longshort.analysis.entropy"
    args: list[str] = field(default_factory=list)


@dataclass
class ColumnSpec:
    benchmarks: list[str]
    samples: int = 1


@dataclass
class RowSpec:
    label: str
    run: str | None = None
    weights: str = "sft"
    model: str | None = None
    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    analysis: str | None = None
    versus: str | None = None  # the row its paired difference is taken against (default: the table's baseline)
    strategy: str = "low"
    kappa: float = 0.8
    score: str = "mean"

    @property
    def kind(self) -> str:
        return "run" if self.run else "model" if self.model else "analysis"


@dataclass
class TableSpec:
    name: str
    title: str
    output_dir: str
    rows: list[RowSpec]
    runs: dict[str, RunSpec] = field(default_factory=dict)
    analyses: dict[str, AnalysisSpec] = field(default_factory=dict)
    columns: str | list[ColumnSpec] = HELDOUT
    baseline: str | None = None  # label of the row the change columns compare against
    overrides: list[str] = field(default_factory=list)  # applied to every run (before its own)
    notes: list[str] = field(default_factory=list)  # printed under the table

    @property
    def heldout(self) -> bool:
        return self.columns == HELDOUT


def table_dir() -> Path:
    return recipe_dir() / "tables"


def list_tables() -> list[str]:
    return sorted(p.stem for p in table_dir().glob("*.yaml"))


def resolve_table(name_or_path: str) -> Path:
    return resolve_yaml(name_or_path, table_dir(), "table", TableError)


def _build(cls, data, where: str):
    """A dataclass from a mapping, refusing unknown keys with the closest valid one."""
    if not isinstance(data, dict):
        raise TableError(f"{where} must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise TableError(f"unknown key '{key}' in {where}{did_you_mean(str(key), names)}; "
                             f"valid keys: {', '.join(names)}")
    try:
        return cls(**data)
    except TypeError as err:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise TableError(f"{where} lacks {', '.join(missing) or 'a required key'} ({err})") from None


def load_table(name_or_path: str) -> TableSpec:
    """The spec of a table name in ``recipes/tables`` or a YAML path, checked (see the module docstring)."""
    path = resolve_table(name_or_path)
    try:
        data = yaml.safe_load(read_user_text(path)) or {}
    except yaml.YAMLError as err:
        raise TableError(f"table spec {path} is not valid YAML: {' '.join(str(err).split())}") from None
    return parse_table(data, str(path))


def parse_table(data: dict, where: str = "table spec") -> TableSpec:
    data = dict(data)
    data["runs"] = {name: _build(RunSpec, run, f"{where}: runs.{name}") for name, run in (data.get("runs") or {}).items()}
    data["analyses"] = {name: _build(AnalysisSpec, a, f"{where}: analyses.{name}")
                        for name, a in (data.get("analyses") or {}).items()}
    data["rows"] = [_build(RowSpec, row, f"{where}: rows[{i}]") for i, row in enumerate(data.get("rows") or [])]
    columns = data.get("columns", HELDOUT)
    if columns != HELDOUT:
        if not isinstance(columns, list):
            raise TableError(f"{where}: columns must be '{HELDOUT}' or a list of {{benchmarks, samples}}")
        data["columns"] = [_build(ColumnSpec, c, f"{where}: columns[{i}]") for i, c in enumerate(columns)]
    spec = _build(TableSpec, data, where)
    _check(spec, where)
    return spec


def references(text: str) -> list[str]:
    return REFERENCE.findall(text)


def _check(spec: TableSpec, where: str) -> None:
    if not spec.rows:
        raise TableError(f"{where}: the table has no rows")
    labels = [row.label for row in spec.rows]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise TableError(f"{where}: row labels must be unique; repeated: {', '.join(duplicates)}")
    if spec.baseline is not None and spec.baseline not in labels:
        raise TableError(f"{where}: baseline '{spec.baseline}' is no row label{did_you_mean(spec.baseline, labels)}")
    runs = list(spec.runs)
    seeded = [name for name, run in spec.runs.items() if run.seeds]
    for index, (name, run) in enumerate(spec.runs.items()):
        if len(set(run.seeds)) != len(run.seeds):
            raise TableError(f"{where}: run '{name}' repeats a seed: {run.seeds}")
        for ref in references(" ".join([*spec.overrides, *run.overrides])):
            if ref not in runs[:index]:
                raise TableError(f"{where}: run '{name}' refers to {{runs.{ref}}}, which is not an earlier run "
                                 f"(runs in order: {', '.join(runs)})")
            if ref in seeded:
                raise TableError(f"{where}: run '{name}' refers to {{runs.{ref}}}, which has several seeds: name "
                                 "one run without seeds instead")
    for name, analysis in spec.analyses.items():
        for ref in references(" ".join(analysis.args)):
            if ref not in runs:
                raise TableError(f"{where}: analysis '{name}' refers to {{runs.{ref}}}, which is not a run"
                                 f"{did_you_mean(ref, runs)}")
            if ref in seeded:
                raise TableError(f"{where}: analysis '{name}' refers to {{runs.{ref}}}, which has several seeds")
    if seeded and not spec.heldout:
        raise TableError(f"{where}: runs with several seeds ({', '.join(seeded)}) need columns: {HELDOUT}")
    for row in spec.rows:
        chosen = [key for key in ("run", "model", "analysis") if getattr(row, key)]
        if len(chosen) != 1:
            raise TableError(f"{where}: row '{row.label}' needs exactly one of run, model, analysis")
        if row.run and row.run not in spec.runs:
            raise TableError(f"{where}: row '{row.label}' names run '{row.run}'{did_you_mean(row.run, runs)}; "
                             f"runs: {', '.join(runs)}")
        if row.versus is not None and row.versus not in labels:
            raise TableError(f"{where}: row '{row.label}' is compared with '{row.versus}', which is no row label"
                             f"{did_you_mean(row.versus, labels)}")
        if row.run and row.weights not in ("sft", "rl"):
            raise TableError(f"{where}: row '{row.label}': weights must be sft or rl, got '{row.weights}'")
        if row.run and row.run in spec.runs and row.weights == "sft" and not spec.runs[row.run].sft:
            raise TableError(f"{where}: row '{row.label}' shows the sft weights of run '{row.run}', which has no "
                             "SFT stage (sft: false): show its rl weights")
        if row.model and not row.recipe:
            raise TableError(f"{where}: row '{row.label}' evaluates model {row.model}: give the recipe whose "
                             "evaluation protocol it runs under (recipe: NAME)")
        if row.model and spec.heldout:
            raise TableError(f"{where}: row '{row.label}' is an external model, which needs benchmark columns "
                             f"(columns: [{{benchmarks: [...]}}]), not '{HELDOUT}'")
        if row.analysis and row.analysis not in spec.analyses:
            raise TableError(f"{where}: row '{row.label}' names analysis '{row.analysis}'"
                             f"{did_you_mean(row.analysis, list(spec.analyses))}")
        if row.analysis and row.score not in STEP_SCORES:
            raise TableError(f"{where}: row '{row.label}': score must be one of {', '.join(STEP_SCORES)}, "
                             f"got '{row.score}'{did_you_mean(row.score, list(STEP_SCORES))}")
