"""A recipe's own code: the ``imports:`` it names, and the check that every name it uses is registered.

``imports:`` lists Python modules (dotted names, imported from ``sys.path``) or ``.py`` files (a path
relative to the recipe that names it; made absolute when the config is loaded, so every process reads
the same file) that register a user's agents, envs, reward terms, advantage estimators, cold-start
builders or engines with the project's decorators. ``import_extensions`` is the one loader: the config
loader calls it (so ``python -m longshort.train``, ``python -m longshort.evaluate`` and anything else
that loads a recipe get the user's classes before anything is built), and so does the OpenRLHF bridge
in each worker, which receives the resolved config rather than the recipe. Reward terms run where the
rollout runs (the trainer, the evaluation, the bridge); the verification workers only grade answers,
so they need no user code. Importing is idempotent: a module already imported is not run again (its
decorators would register the same names twice).

``check_names`` runs at config load, before any model is loaded: agent types, the env and the roles
it needs, reward terms per role, the advantage estimator, the cold-start builder, the engine and the
benchmarks, each with the registry's did-you-mean message.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterable

from longshort.errors import UserError

if TYPE_CHECKING:
    from longshort.config import Config


class ExtensionError(UserError, ImportError):
    """A module named in ``imports:`` that cannot be imported; the message names it and the error."""


def is_file_entry(entry: str) -> bool:
    """``imports:`` entries that are files (``my_team.py``, ``ext/team.py``) rather than module names."""
    return entry.endswith(".py") or "/" in entry or "\\" in entry


def import_extensions(imports: Iterable[str]) -> list[ModuleType]:
    """Import every ``imports:`` entry once; a failure is one ``ExtensionError`` naming the entry.

    A file is imported as a module named after its stem (``my_team.py`` -> ``my_team``) and its folder
    is appended to ``sys.path``, so it can import its siblings and Ray can unpickle its classes.
    """
    modules = []
    for entry in imports:
        try:
            modules.append(_import_file(Path(entry).expanduser()) if is_file_entry(entry)
                           else importlib.import_module(entry))
        except ExtensionError:
            raise
        except BaseException as err:  # the user's module raised anything at all, even SystemExit
            if isinstance(err, KeyboardInterrupt):
                raise
            detail = " ".join(str(err).split()) or "no message"
            raise ExtensionError(f"imports: cannot import '{entry}': {type(err).__name__}: {detail}") from err
    return modules


def worker_env(imports: Iterable[str], pythonpath: str | None = None) -> dict[str, str]:
    """What a launched worker (OpenRLHF's Ray actors, through the job's runtime env) needs besides the
    config to import ``imports``: ``PYTHONPATH`` with the current folder (a dotted module beside the
    recipe) and each file entry's folder (its sibling imports) ahead of ``pythonpath`` (default: this
    process's). Empty without imports, so a run with none passes exactly what it did before."""
    imports = list(imports)
    if not imports:
        return {}
    existing = os.environ.get("PYTHONPATH", "") if pythonpath is None else pythonpath
    folders = [str(Path.cwd()), *(str(Path(e).expanduser().resolve().parent) for e in imports if is_file_entry(e))]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys([*folders, *filter(None, existing.split(os.pathsep))]))}


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise ExtensionError(f"imports: no file {path}; a relative path is taken from the folder of the recipe "
                             "that names it (or from the current folder on the command line)")
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return loaded
        raise ExtensionError(f"imports: '{path}' would be imported as module '{name}', but another module of "
                             f"that name is already loaded ({getattr(loaded, '__file__', 'built in')}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def check_names(config: "Config") -> None:
    """Every registered name the config uses exists, and the env's roles are exactly the agents.

    Imports the built-in registrations first (agents, envs, rewards, cold-start builders, engines,
    benchmarks: no torch). Raises ``ConfigError`` with the closest registered name.
    """
    import agents  # noqa: F401  (registers the built-in agents)
    import envs  # noqa: F401  (registers the built-in envs)
    import longshort.coldstart  # noqa: F401  (registers the built-in cold-start builders)
    import longshort.data  # noqa: F401  (registers the benchmarks)
    import longshort.engines  # noqa: F401  (registers remote and vllm; hf is registered on first use)
    import longshort.rewards  # noqa: F401  (registers the built-in reward terms)
    from longshort.config import ConfigError
    from longshort.registry import (ADVANTAGE_ESTIMATORS, AGENTS, BENCHMARKS, BUILTIN_ESTIMATORS, COLDSTART, ENGINES,
                                    ENVS, REWARDS, did_you_mean)

    def known(key: str, name: str, names: Iterable[str], kind: str) -> None:
        names = sorted(set(names))
        if name not in names:
            raise ConfigError(f"unknown {kind} '{name}' for '{key}'{did_you_mean(name, names)}; registered: "
                              f"{', '.join(names)} (your own: register it and list its module under imports:)")

    for role, spec in config.agents.items():
        known(f"agents.{role}.type", spec.type, AGENTS.names(), "agent type")
    known("env.name", config.env.name, ENVS.names(), "env")
    for role, terms in config.rewards.weights.items():
        for term in terms:
            known(f"rewards.weights.{role}.{term}", term, REWARDS.names(), "reward term")
    known("trainer.algorithm", config.trainer.algorithm, {*BUILTIN_ESTIMATORS, *ADVANTAGE_ESTIMATORS.names()},
          "advantage estimator")
    known("sft.coldstart", config.sft.coldstart, COLDSTART.names(), "cold-start builder")
    known("rollout.engine", config.rollout.engine, {"hf", *ENGINES.names()}, "engine")
    for name in config.eval.benchmarks:
        known("eval.benchmarks", name, BENCHMARKS.names(), "benchmark")

    roles = ENVS.get(config.env.name).roles
    if roles:
        missing = [role for role in roles if role not in config.agents]
        if missing:
            raise ConfigError(f"env '{config.env.name}' needs agents for roles {', '.join(roles)}; define "
                              f"agents.{missing[0]} (missing: {', '.join(missing)})")
        extra = [role for role in config.agents if role not in roles and role != "single"]  # eval.mode=single's model
        if extra:
            raise ConfigError(
                f"agents {', '.join(extra)} are not roles of env '{config.env.name}' (its roles: {', '.join(roles)}); "
                "a recipe that inherits keeps its parent's agents: write 'agents: !replace' to define the agents "
                "anew (and 'weights: !replace' under rewards for their reward weights)")
