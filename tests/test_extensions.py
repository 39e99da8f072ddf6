"""User extensions end to end, as a new user meets them: the README's ``my_team.py`` and ``team.yaml``
written into a folder outside the package, then the project's own commands in fresh processes.

Nothing is registered by this module: the team's classes reach every process through the recipe's
``imports:`` alone (the CLI, the evaluation, the OpenRLHF bridge).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("planner", "solver", "checker")
TERMS = {"planner": {"collaboration", "format", "length"}, "solver": {"format", "length"},
         "checker": {"correctness", "format", "length"}}
QUESTION = "{} has 3 pens and gets 2 more. How many pens?"


def readme_files() -> dict[str, str]:
    """The README's extension example: the fenced blocks whose first line names the file."""
    text = (ROOT / "README.md").read_text()
    blocks = dict((name, body) for body, name in
                  re.findall(r"```(?:python|yaml)\n(# (my_team\.py|team\.yaml)\n.*?)```", text, re.S))
    assert set(blocks) == {"my_team.py", "team.yaml"}, "the README's extension example lost a file"
    return blocks


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("LONGSHORT_DATA_DIR", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def user_folder(tmp_path) -> Path:
    folder = tmp_path / "my_project"  # a user's folder: nothing of the package in it or above it
    folder.mkdir()
    for name, body in readme_files().items():
        (folder / name).write_text(body)
    return folder


# A tiny Llama taught the team's protocol with two equally likely replies per role, so that sampled
# turns differ in length within a group and every role gets a non-zero advantage in one RL step.
FIT = r'''
import sys
from pathlib import Path
import torch
from longshort.episode import Turn
from longshort.extensions import import_extensions
from longshort.models import tiny_model
from longshort.registry import AGENTS

folder, out = Path(sys.argv[1]), sys.argv[2]
import_extensions([str(folder / "my_team.py")])
types = {"planner": "long", "solver": "short", "checker": "checker"}
prompts = {"planner": "Plan.", "solver": "Solve.", "checker": "Check."}
agents = {role: AGENTS.get(kind)(role, system_prompt=prompts[role]) for role, kind in types.items()}
replies = {"planner": ["<think>add 2</think>", "<think>add 2 to 3 now</think>"],
           "solver": ["<answer>5</rethink>", "<answer>3 + 2 = 5</rethink>"],
           "checker": ["ACCEPT \\boxed{5}", "It is 5. ACCEPT \\boxed{5}"]}
model, tok = tiny_model(seed=0, hidden_size=64, num_layers=2)
def turn(role, text):
    return Turn(role=role, prompt_ids=[], action_ids=[], logprobs=[], text=text, finish_reason="stop", vocab="text")
def encode(text):
    return tok.encode(text, add_special_tokens=False)
pairs = []
for name in ("Ann", "Bob"):
    question = "{} has 3 pens and gets 2 more. How many pens?".format(name)
    for plan in replies["planner"]:
        pairs.append((agents["planner"].view(question, [], tok).ids, encode(plan)))
        for solve in replies["solver"]:
            pairs.append((agents["solver"].view(question, [turn("planner", plan)], tok).ids, encode(solve)))
            for check in replies["checker"]:
                done = [turn("planner", plan), turn("solver", solve)]
                pairs.append((agents["checker"].view(question, done, tok).ids, encode(check) + [tok.eos_token_id]))
width = max(len(p) + len(t) for p, t in pairs)
pad = [tok.pad_token_id]
ids = torch.tensor([p + t + pad * (width - len(p) - len(t)) for p, t in pairs])
mask = torch.tensor([[1] * (len(p) + len(t)) + [0] * (width - len(p) - len(t)) for p, t in pairs])
labels = torch.tensor([[-100] * len(p) + t + [-100] * (width - len(p) - len(t)) for p, t in pairs])
optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
model.train()
for _ in range(150):
    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    optimiser.step()
    optimiser.zero_grad()
model.eval().save_pretrained(out)
tok.save_pretrained(out)
'''


def tiny_team_overrides(model: Path) -> list[str]:
    """Every agent on the fitted tiny model, with the short system prompts it was fitted on."""
    overrides = []
    for role, prompt in zip(ROLES, ("Plan.", "Solve.", "Check.")):
        overrides += [f"agents.{role}.model.name_or_path={model}", f"agents.{role}.model.dtype=fp32",
                      f"agents.{role}.sampling.max_new_tokens=24", f"agents.{role}.system_prompt={prompt}"]
    return overrides


def test_the_readme_team_trains_and_evaluates_from_its_own_files(user_folder, tmp_path):
    model = tmp_path / "tiny_team_model"
    fitted = run(["-c", FIT, str(user_folder), str(model)], cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    for split, names in (("train", ("Ann", "Bob")), ("eval", ("Cal",))):
        rows = [{"id": name, "problem": QUESTION.format(name), "answer": "5"} for name in names]
        (user_folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    common = [f"output_dir={out}", *tiny_team_overrides(model)]

    checked = run(["-m", "longshort.train", "recipe=team.yaml", *common, "--print-config"], cwd=user_folder)
    assert checked.returncode == 0, checked.stderr
    printed = checked.stdout
    assert f"- {user_folder / 'my_team.py'}" in printed  # imports: made absolute from the recipe's folder
    assert "long:" not in printed and "short:" not in printed  # agents: !replace dropped tiny's two agents

    trained = run(["-m", "longshort.train", "recipe=team.yaml", *common, "stages=[data,rl]", "trainer.steps=1",
                   "rollout.problems_per_step=4", "rollout.group_size=4", "data.train.source=train.jsonl",
                   "data.eval.source=eval.jsonl"], cwd=user_folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    [metrics] = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    finals = json.loads((out / "rl" / "final.json").read_text())
    before = load_file(model / "model.safetensors")
    for role in ROLES:  # every role acted, was rewarded by its own terms only, and was updated
        assert {key.split("/")[2] for key in metrics if key.startswith(f"reward/{role}/")} == TERMS[role] | {"total"}
        assert metrics[f"train/{role}/trained_samples"] > 0 and metrics[f"train/{role}/grad_norm"] > 0
        after = load_file(Path(finals[role]) / "model.safetensors")
        assert any(not torch.equal(before[name], after[name]) for name in before), role
    assert metrics["trained"] == list(ROLES)

    evaluated = run(["-m", "longshort.evaluate", "recipe=team.yaml", *common, "eval.benchmarks=[gsm8k]",
                     "eval.limit=2", "eval.max_new_tokens=24", "eval.max_turns=3"], cwd=user_folder)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["sets"]["gsm8k"]["episodes"] == 2
    records = [json.loads(line) for line in (out / "eval" / "records" / "gsm8k.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(record["turns"][0]["role"] == "planner" for record in records)

    if importlib.util.find_spec("openrlhf") is None:
        pytest.skip("openrlhf is not installed: the bridge half of this test needs it")
    bridge = run(["-c", BRIDGE, str(out / "config.yaml")], cwd=ROOT)  # another folder, a fresh process
    assert bridge.returncode == 0, bridge.stderr[-3000:]
    assert json.loads(bridge.stdout.strip().splitlines()[-1]) == {
        "env": "PlanSolveCheck", "agents": {"planner": "LongThoughtAgent", "solver": "ShortThoughtAgent",
                                            "checker": "Checker"}}


# What an OpenRLHF worker does: the bridge gets the resolved config (not the recipe) and must import
# the recipe's modules itself before it builds the team.
BRIDGE = r'''
import json, sys
from omegaconf import OmegaConf
from longshort.trainers.openrlhf.bridge import BridgeRuntime
from longshort.trainers.openrlhf.commands import BridgeConfig

spec = BridgeConfig("planner", OmegaConf.to_container(OmegaConf.load(sys.argv[1])), [])
runtime = BridgeRuntime(BridgeConfig.from_json(spec.to_json()).load_config(), "planner",
                        {"solver": None, "checker": None})
print(json.dumps({"env": type(runtime.env_factory()).__name__,
                  "agents": {role: type(agent).__name__ for role, agent in runtime.agents.items()}}))
'''


def _print_config(folder: Path, *argv: str) -> subprocess.CompletedProcess:
    return run(["-m", "longshort.train", *argv, "--print-config"], cwd=folder, timeout=120)


def test_names_and_roles_are_checked_when_the_recipe_loads(user_folder):
    typo = _print_config(user_folder, "recipe=team.yaml", "agents.checker.type=checkr")
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "unknown agent type 'checkr' for 'agents.checker.type' (did you mean 'checker'?)" in typo.stderr
    term = _print_config(user_folder, "recipe=team.yaml", "rewards.weights.solver.lenght=1.0")
    assert term.returncode == 2 and "did you mean 'length'?" in term.stderr
    recipe = (user_folder / "team.yaml").read_text()
    (user_folder / "merged.yaml").write_text(recipe.replace("agents: !replace", "agents:"))
    merged = _print_config(user_folder, "recipe=merged.yaml")
    assert merged.returncode == 2
    assert "agents long, short are not roles of env 'plan_solve_check'" in merged.stderr and "!replace" in merged.stderr
    (user_folder / "bare.yaml").write_text(recipe.replace("imports: [my_team.py]", "imports: []"))
    bare = _print_config(user_folder, "recipe=bare.yaml")
    assert bare.returncode == 2 and "unknown agent type 'checker'" in bare.stderr and "imports:" in bare.stderr


def test_a_module_that_fails_to_import_fails_in_one_line(user_folder):
    (user_folder / "broken.py").write_text("import no_such_package_here\n")
    (user_folder / "broken.yaml").write_text("inherit: team.yaml\nimports: [broken.py]\n")
    result = _print_config(user_folder, "recipe=broken.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == (f"error: imports: cannot import '{user_folder / 'broken.py'}': ModuleNotFoundError: "
                    "No module named 'no_such_package_here'")
    dotted = _print_config(user_folder, "recipe=team.yaml", "imports=[no_such_module]")
    assert dotted.returncode == 2 and "imports: cannot import 'no_such_module'" in dotted.stderr


def test_inherited_imports_add_up_and_a_module_is_imported_once(user_folder):
    (user_folder / "extra.py").write_text("from longshort.rewards import register_reward\n\n"
                                          "@register_reward('always_one')\n"
                                          "def always_one(group, role, ctx):\n    return [1.0] * len(group)\n")
    (user_folder / "child.yaml").write_text("inherit: team.yaml\nimports: [extra.py, my_team.py]\n"
                                            "rewards: {weights: {solver: {always_one: 1.0}}}\n")
    result = _print_config(user_folder, "recipe=child.yaml")
    assert result.returncode == 0, result.stderr
    imports = re.search(r"imports:\n((?:- .*\n)+)", result.stdout).group(1).split("\n")[:-1]
    assert imports == [f"- {user_folder / 'my_team.py'}", f"- {user_folder / 'extra.py'}"]
    assert "always_one: 1.0" in result.stdout and "length: 1.0" in result.stdout  # weights merge below !replace


def test_the_openrlhf_launch_carries_the_imports_to_its_workers(user_folder, monkeypatch, tmp_path_factory):
    """The GRPO job's runtime env holds the resolved config (with the absolute imports) for the bridge and a
    PYTHONPATH that reaches the user's folder; a recipe without imports launches as before."""
    from longshort.config import ConfigError, load_config
    from longshort.trainers.openrlhf import commands as launcher

    extra = user_folder / "extra_terms.py"
    extra.write_text("X = 1\n")
    monkeypatch.chdir(user_folder)
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    cluster = ["backend.ray_address=http://head:8265", f"backend.shared_dir={user_folder}",
               f"output_dir={user_folder / 'run'}"]
    config = load_config("qwen7b", [*cluster, "imports=[extra_terms.py]"])
    grpo = next(c for c in launcher.plan(config) if c.module == "openrlhf.cli.train_ppo_ray")
    env = json.loads(grpo.argv[grpo.argv.index("--runtime-env-json") + 1])["env_vars"]
    assert launcher.BridgeConfig.from_json(env[launcher.BRIDGE_ENV]).load_config().imports == [str(extra)]
    assert env["PYTHONPATH"] == os.pathsep.join([str(user_folder), "/somewhere"])
    plain = launcher.plan(load_config("qwen7b", cluster))
    plain_grpo = next(c for c in plain if c.module == "openrlhf.cli.train_ppo_ray")
    plain_env = json.loads(plain_grpo.argv[plain_grpo.argv.index("--runtime-env-json") + 1])["env_vars"]
    assert set(plain_env) == {launcher.BRIDGE_ENV}
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "other_terms.py"
    elsewhere.write_text("Y = 1\n")
    outside = load_config("qwen7b", [*cluster, f"imports=[{elsewhere}]"])
    with pytest.raises(ConfigError, match="not under backend.shared_dir"):
        launcher.plan(outside)


BUILDER = '''import json

from longshort.registry import COLDSTART


@COLDSTART.register("checker_only")
def checker_only(config, problems, out_dir):
    """Cold-start transcripts for the checker alone; the other roles start RL from their base weights."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "checker.jsonl"
    with path.open("w") as handle:
        for p in problems:
            turns = [{"role": "planner", "text": "<think>add</think>"}, {"role": "solver", "text": "<answer>ok</rethink>"},
                     {"role": "checker", "text": "ACCEPT \\\\boxed{%s}" % p.answer}]
            handle.write(json.dumps({"id": p.id, "question": p.prompt, "answer": p.answer, "turns": turns}) + "\\n")
    return {"checker": path}
'''


def test_a_team_plugs_its_own_cold_start_builder(user_folder, tmp_path):
    from longshort.models import tiny_model

    model_dir = tmp_path / "tiny"
    model, tokenizer = tiny_model(seed=0, hidden_size=32, num_layers=1, num_heads=2)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (user_folder / "builder.py").write_text(BUILDER)
    out = tmp_path / "run"
    result = run(["-m", "longshort.train", "recipe=team.yaml", "imports=[my_team.py,builder.py]", "stages=[data,sft]",
                  "sft.coldstart=checker_only", "sft.epochs=1", "sft.batch_size=2", "data.train.limit=2",
                  "data.eval.limit=1", f"output_dir={out}", *tiny_team_overrides(model_dir)], cwd=user_folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "sft" / "checker" / "final" / "model.safetensors").is_file()
    assert not (out / "sft" / "planner").exists() and not (out / "sft" / "solver").exists()
    assert "planner agent has no cold-start data from sft.coldstart=checker_only" in " ".join(result.stderr.split())
