"""Packaging: the light import path stays light, and a plain (non-editable) install ships the recipes,
the evaluation sets and the run report's script and style."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("openrlhf", "ray", "vllm", "deepspeed", "datasets", "wandb")


def test_core_imports_do_not_pull_scale_out_packages():
    code = ("import sys, json, longshort, agents, envs, longshort.rollout, longshort.rewards, longshort.config; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_plain_install_resolves_recipes_outside_the_repository(tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    code = ("import longshort.config as c, longshort.data as d, longshort.paths as p, longshort.reproduce.tables as t; "
            "cfg = c.load_config('qwen7b'); "
            "from longshort.report.render import _asset; assert 'report-data' in _asset('report.js'); "
            "print(c.recipe_dir()); print(cfg.agents['long'].model.name_or_path); print(p.packaged_data_dir()); "
            "print(sum(len(d.load_benchmark(n)) for n in ('math500', 'aime24', 'aime25', 'amc23', 'gsm8k'))); "
            "print(','.join(t.list_tables()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, check=True)
    recipe_dir, model, data_dir, rows, tables = result.stdout.split()
    assert Path(recipe_dir).is_relative_to(target)
    assert model == "Qwen/Qwen2.5-7B-Instruct"
    assert Path(data_dir).is_relative_to(target) and int(rows) == 500 + 30 + 30 + 40 + 1319  # the shipped sets
    assert {"tiny", "paper"} <= set(tables.split(","))  # the reproduce table specs ship too
