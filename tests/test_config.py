"""Config: recipes resolve from anywhere, overrides apply, and mistakes fail with one helpful line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from longshort.config import ConfigError, list_recipes, load_config, to_yaml


def test_builtin_recipes_load():
    assert {"tiny", "qwen7b", "llama8b"} <= set(list_recipes())
    tiny = load_config("tiny")
    assert tiny.backend.name == "embedded" and set(tiny.agents) == {"long", "short"}


def test_paper_recipes_carry_the_published_settings():
    for name, model in (("qwen7b", "Qwen/Qwen2.5-7B-Instruct"), ("llama8b", "meta-llama/Llama-3.1-8B-Instruct")):
        config = load_config(name)
        assert {a.model.name_or_path for a in config.agents.values()} == {model}
        assert config.rollout.group_size == 2
        assert config.trainer.lr == 5e-6 and config.trainer.kl_coef == 0.04 and config.trainer.clip_eps == 0.2
        assert config.trainer.schedule == "alternating"
        assert all(a.sampling.max_new_tokens == 1024 for a in config.agents.values())
        assert config.rewards.weights == {"long": {"collaboration": 1.0, "format": 1.0, "length": 1.0},
                                          "short": {"correctness": 1.0, "format": 1.0, "length": 1.0}}
        assert config.eval.temperature == 0.3 and config.eval.max_new_tokens == 2048
        assert config.backend.name == "openrlhf"


def test_overrides_apply_with_types():
    config = load_config("tiny", ["trainer.lr=3e-4", "agents.long.sampling.temperature=0.5", "seed=7",
                                  "eval.benchmarks=[gsm8k]", "output_dir=/tmp/x"])
    assert config.trainer.lr == 3e-4 and isinstance(config.trainer.lr, float)
    assert config.agents["long"].sampling.temperature == 0.5
    assert config.seed == 7 and config.eval.benchmarks == ["gsm8k"] and config.output_dir == "/tmp/x"


def test_output_dir_interpolates_the_run_name():
    assert load_config("tiny", ["name=abc"]).output_dir == "runs/abc"


@pytest.mark.parametrize("override, message", [
    ("trainer.lrr=1", "unknown config key 'trainer.lrr' (did you mean 'lr'?)"),
    ("trainr.lr=1", "unknown config key 'trainr' (did you mean 'trainer'?)"),
    ("agents.long.modell.dtype=bf16", "unknown config key 'agents.long.modell' (did you mean 'model'?)"),
])
def test_unknown_key_names_the_closest_valid_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, key, expected", [
    ("trainer.lr=fast", "trainer.lr", "float"),
    ("env.max_turns=many", "env.max_turns", "int"),
    ("trainer.gradient_checkpointing=maybe", "trainer.gradient_checkpointing", "bool"),
])
def test_wrong_type_names_key_and_expected_type(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [override])
    text = str(err.value)
    assert f"wrong type for '{key}'" in text and f"expected {expected}" in text and "\n" not in text


def test_bad_choice_suggests_the_valid_value():
    with pytest.raises(ConfigError, match=r"'trainer.schedule' \(did you mean 'alternating'\?\)"):
        load_config("tiny", ["trainer.schedule=alternate"])


def test_missing_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"no recipe 'tinny' \(did you mean 'tiny'\?\); available: .*tiny"):
        load_config("tinny")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/recipe.yaml")


def test_recipe_path_and_inheritance(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("inherit: tiny\nname: mine\nagents:\n  long:\n    sampling: {temperature: 0.1}\n")
    config = load_config(str(path))
    assert config.name == "mine" and config.agents["long"].sampling.temperature == 0.1
    assert config.agents["long"].sampling.max_new_tokens == load_config("tiny").agents["long"].sampling.max_new_tokens


def test_error_in_a_recipe_file_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("inherit: tiny\nrollout:\n  group_sise: 4\n")
    with pytest.raises(ConfigError, match=r"did you mean 'group_size'.*bad\.yaml"):
        load_config(str(path))


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="rewards.weights names agent 'lng'"):
        load_config("tiny", ["rewards.weights.lng.format=1.0"])
    with pytest.raises(ConfigError, match="group_size must be at least 2"):
        load_config("tiny", ["rollout.group_size=1"])


def test_resolved_config_round_trips_through_yaml(tmp_path: Path):
    config = load_config("qwen7b", ["trainer.steps=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(config))
    assert load_config(str(path)) == config


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "longshort.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cli_resolves_recipes_from_any_directory_and_prints_config(tmp_path: Path):
    result = _cli("recipe=llama8b", "trainer.steps=5", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "meta-llama/Llama-3.1-8B-Instruct" in result.stdout and "steps: 5" in result.stdout


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path: Path):
    result = _cli("recipe=tiny", "trainer.lrr=1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "did you mean 'lr'" in result.stderr
