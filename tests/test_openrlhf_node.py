"""What ``recipe=qwen7b`` needs to work on an 8-GPU node, checked on a CPU: the partner can be scheduled
from inside OpenRLHF's placement group, the memory fits, the flags train what the paper trains, the SFT
rows are the embedded examples' tokens, the extra's pins resolve together, and the preflight."""
from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from longshort.config import ConfigError, load_config
from longshort.engines.base import SamplingParams
from longshort.trainers.openrlhf import commands, launch, memory, preflight, sft_main
from longshort.trainers.openrlhf.partner import PartnerSpec

ROOT = Path(__file__).resolve().parents[1]
NO_OPENRLHF = "openrlhf is not installed (pip install --no-deps openrlhf==0.11.2 && pip install pylatexenc aiohttp)"


def flag(command, name: str) -> str:
    return command.flags[command.flags.index(f"--{name}") + 1]


# ----------------------------------------------------------------------------------- defect 2: the partner


def test_partner_comes_up_from_inside_a_capturing_placement_group(tiny_dir, monkeypatch):
    """8 logical GPUs; the caller sits in a one-GPU bundle with placement_group_capture_child_tasks=True,
    exactly as OpenRLHF places its vLLM actors: the partner must still get a GPU of its own and answer."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]==2.55.0')")
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    class Parent:  # defined here so that Ray ships it by value to the worker
        """Shaped like OpenRLHF's RolloutRayActor: async __init__ that loads the agent file, which starts the partner."""

        async def __init__(self, spec_json: str):
            from longshort.trainers.openrlhf.partner import connect_partner

            self.partner = connect_partner(PartnerSpec(**json.loads(spec_json)))

        async def answer(self, prompt_ids: list[int]) -> list[int]:
            sampling = SamplingParams(temperature=0.0, max_new_tokens=3)
            return (await self.partner.generate(prompt_ids, sampling)).token_ids

    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=4, num_gpus=8, include_dashboard=False, log_to_driver=False)
    try:
        group = placement_group([{"GPU": 1, "CPU": 1}], strategy="PACK")
        ray.get(group.ready(), timeout=60)
        spec = PartnerSpec(role="short", model=str(tiny_dir), name="test-captured-partner", engine="hf", num_gpus=1,
                           dtype="fp32", seed=0)
        parent = ray.remote(Parent).options(num_cpus=1, num_gpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_capture_child_tasks=True, placement_group_bundle_index=0)
        ).remote(json.dumps(spec.to_dict()))
        tokens = ray.get(parent.answer.remote([1, 2, 3]), timeout=90)  # the old partner stayed PENDING_CREATION
        assert len(tokens) == 3
        partner = ray.get_actor("test-captured-partner-0", namespace="longshort")
        assert ray.get(partner.generate.remote([1, 2, 3], SamplingParams(temperature=0.0, max_new_tokens=3)),
                       timeout=30).token_ids == tokens
    finally:
        ray.shutdown()


# ----------------------------------------------------------------------------------- defect 3: memory


def test_memory_estimate_is_pinned_for_the_recipes_models():
    qwen, llama = (memory.PUBLISHED[name] for name in ("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"))
    assert qwen.parameters == pytest.approx(7.62e9, rel=0.002)  # the model cards: 7.61B / 8.03B
    assert llama.parameters == pytest.approx(8.03e9, rel=0.002)
    tokens = commands.max_len(load_config("qwen7b"))
    assert tokens == 17440
    for shape, micro, total in ((qwen, 1, 73.9), (llama, 1, 74.6), (qwen, 16, 448.9), (llama, 16, 422.3)):
        row = memory.training("actor", shape, gpus=6, zero_stage=2, train_tokens=micro * tokens,
                              infer_tokens=micro * tokens, checkpointing=True, limit_gib=80, reference=True)
        assert row.total_gib == pytest.approx(total, abs=0.1)
    # the old flags: 16 episodes of 17k tokens in fp32 logits alone ~316 GiB (the issue's ~170 GB per 8 bytes)
    old = memory.training("actor", qwen, gpus=6, zero_stage=2, train_tokens=16 * tokens, infer_tokens=16 * tokens,
                          checkpointing=True, limit_gib=80, reference=True)
    assert old.terms["logits"] == pytest.approx(16 * tokens * 152064 * 8 / 2 ** 30) and not old.fits
    engine = memory.vllm_engine("vllm", qwen, gpu_gib=80, utilization=0.9, tensor_parallel=1, max_len=tokens)
    assert memory.kv_sequences(engine, qwen) == pytest.approx(59.9, abs=0.1)


@pytest.mark.parametrize("recipe", ["qwen7b", "llama8b"])
def test_recipes_fit_and_the_papers_micro_batch_does_not(recipe):
    check, table = preflight.memory_check(load_config(recipe), hub=False)
    assert check.status == "ok", check.detail
    assert "published config values kept in longshort" in table
    old = load_config(recipe, ["trainer.micro_batch_size=16", "backend.packing=false"])
    check, table = preflight.memory_check(old, hub=False)
    assert check.status == "failed" and "DOES NOT FIT" in table
    assert "set trainer.micro_batch_size=1" in check.detail and "backend.packing=true" in check.detail


def test_packing_flags_pass_openrlhfs_parser():
    pytest.importorskip("openrlhf", reason=NO_OPENRLHF)
    config = load_config("qwen7b")
    grpo = next(c for c in commands.plan(config) if c.module == "openrlhf.cli.train_ppo_ray")
    args = preflight.parse_flags(grpo.module, grpo.flags)
    assert args.ds.packing_samples and args.train.dynamic_batch_enable
    # one longest episode: the prompt and 8 turns of at most 1,024 tokens, not data.max_len's 17,440
    assert args.train.max_tokens_per_gpu == args.rollout.max_tokens_per_gpu == 1024 + 8 * 1024 + 4 * 8
    assert commands.episode_tokens(config) == 1024 + 8 * 1024 + 4 * 8 < commands.max_len(config)
    assert "longest episode 9248 tokens" in preflight.layout_check(config).detail
    assert args.train.micro_batch_size == 1 and args.ds.attn_implementation == "flash_attention_2"


def test_disk_estimate_counts_the_kept_saves_and_one_stages_checkpoints(monkeypatch):
    """qwen7b: 2 SFT saves + 2 phase models stay (bf16), and at most one stage's 2 DeepSpeed checkpoints
    (bf16 weights + fp32 master weights and Adam moments) exist at once: the launcher deletes them when done."""
    from longshort.trainers.openrlhf import disk

    parameters = memory.PUBLISHED["Qwen/Qwen2.5-7B-Instruct"].parameters
    peak = (4 * 2 * parameters + 2 * 14 * parameters) / memory.GIB
    check = preflight.disk_check(load_config("qwen7b", ["backend.disk_gib=1000"]), hub=False)
    assert check.status == "ok" and f"~{peak:.0f} GiB under output_dir" in check.detail
    check = preflight.disk_check(load_config("qwen7b", ["backend.disk_gib=200"]), hub=False)
    assert check.status == "failed" and "more than backend.disk_gib=200: put output_dir on a filesystem" in check.detail
    monkeypatch.setattr(disk, "free_gib", lambda path: 50.0)
    check = preflight.disk_check(load_config("qwen7b"), hub=False)
    assert check.status == "failed" and "more than the 50 GiB free at" in check.detail


# ----------------------------------------------------------------------------------- defects 4, 6, 8: flags


def test_adam_betas_vllm_memory_checkpoints_and_attention_are_rendered():
    pytest.importorskip("openrlhf", reason=NO_OPENRLHF)
    config = load_config("qwen7b", ["backend.attn_implementation=sdpa"])
    plan = commands.plan(config)
    parsed = {c.module: preflight.parse_flags(c.module, c.flags) for c in plan if c.module}
    sft, grpo = parsed["openrlhf.cli.train_sft"], parsed["openrlhf.cli.train_ppo_ray"]
    assert list(sft.adam.betas) == list(grpo.actor.adam.betas) == [0.9, 0.999]  # OpenRLHF's default: 0.95
    assert grpo.vllm.gpu_memory_utilization == 0.9  # the policy's engine has its GPU to itself
    assert not sft.ckpt.save_hf and not grpo.ckpt.save_hf and grpo.ckpt.max_num == commands.CKPT_KEEP
    assert sft.ds.attn_implementation == "sdpa"
    assert all("--ckpt.save_hf" not in c.flags for c in plan)


def test_a_second_phase_of_an_agent_is_refused():
    with pytest.raises(ConfigError, match="restart them; on backend openrlhf set trainer.phase_steps >= 160"):
        commands.plan(load_config("qwen7b", ["trainer.steps=320"]))
    assert [p.role for p in commands.phases(load_config("qwen7b"))] == ["short", "long"]


# ----------------------------------------------------------------------------------- defect 5: SFT rows


def test_sft_rows_survive_a_cleaning_tokenizer_and_the_length_cap(tmp_path, tiny_dir):
    """Llama-3.1's tokenizer cleans up spaces on decode (" ," -> ","); rows must still be our ids, and a
    row of exactly data.max_len must keep its last token (OpenRLHF overwrites the last id with EOS)."""
    pytest.importorskip("openrlhf", reason=NO_OPENRLHF)
    import datasets
    from openrlhf.datasets import SFTDataset
    from transformers import AutoTokenizer

    from longshort.rollout import build_agents
    from longshort.sft import build_examples
    from longshort.trainers.openrlhf.sft_main import ExactTokenizer

    cleaning = tmp_path / "cleaning"
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(cleaning)
    settings = json.loads((cleaning / "tokenizer_config.json").read_text())
    settings.update(clean_up_tokenization_spaces=True,
                    clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True)
    (cleaning / "tokenizer_config.json").write_text(json.dumps(settings))
    tok = AutoTokenizer.from_pretrained(cleaning)
    turns = [{"role": "long", "text": "<think>\nTom has 2 , then 3 .\n</think>"},
             {"role": "short", "text": "<answer>So 2 + 3 = 5 , done . \\boxed{5} </answer>"}]
    record = {"id": "p0", "question": "Tom has 2 apples , buys 3 . How many ?", "answer": "5", "turns": turns,
              "role": "short"}
    config = load_config("qwen7b", [f"output_dir={tmp_path}/run", f"agents.short.model.name_or_path={cleaning}"])
    agent = build_agents(config)["short"]
    full = build_examples(agent, [record], tok, 4096)[0]
    config.sft.max_length = len(full.input_ids) + 1  # the example and its EOS are exactly data.max_len long
    commands.coldstart_path(config, "short").parent.mkdir(parents=True)
    commands.coldstart_path(config, "short").write_text(json.dumps(record) + "\n")
    data = launch.write_sft_data(config, "short")

    rows = [json.loads(line) for line in data.path.read_text().splitlines()]
    args = SimpleNamespace(data=SimpleNamespace(input_key="input", output_key="output", apply_chat_template=False))
    dataset = SFTDataset(datasets.load_dataset("json", data_files=str(data.path), split="train"),
                         ExactTokenizer.from_rows(tok, rows), config.sft.max_length, SimpleNamespace(args=args),
                         input_template="", num_processors=1)
    [capped] = build_examples(agent, [record], tok, config.sft.max_length - 1)
    assert (len(dataset), data.dropped) == (1, 0)
    input_ids, _, loss_mask = dataset[0]
    ids, mask = input_ids[0].tolist(), loss_mask[0].tolist()
    assert len(ids) <= config.sft.max_length and ids[-1] == tok.eos_token_id
    assert ids[:-1] == capped.input_ids  # every own token as the embedded SFT has it, the last one included
    trained = [i + 1 for i, m in enumerate(mask[:-1]) if m][:-1]  # without the EOS
    assert trained == [i for i, m in enumerate(capped.loss_mask) if m]
    assert "," in rows[0]["input"] and " ," in rows[0]["input"]  # decoded as the ids say, not cleaned up


class Merging:
    """A tokenizer whose encoding of a decoded text merges the first two ids (a merge across a turn boundary)."""

    eos_token, eos_token_id = "</s>", 0

    def decode(self, ids, **kwargs):
        return "".join(chr(96 + i) for i in ids)

    def __call__(self, text, **kwargs):
        return {"input_ids": [99 if text.startswith("ab") else 1] + [ord(c) - 96 for c in text[2:]]}


def test_rows_carry_their_ids_and_openrlhf_gets_them_back_through_sft_main(monkeypatch, tmp_path):
    example = SimpleNamespace(input_ids=[1, 2, 3, 4], loss_mask=[0, 0, 1, 1])
    [row], dropped = launch.openrlhf_sft_rows(example, Merging(), max_len=16)
    assert dropped == 0 and row["input_ids"] == [1, 2] and row["ids"] == [1, 2, 3, 4, 0]
    assert not launch.retokenizes(row, Merging())  # plain OpenRLHF would train shifted tokens
    wrapped = sft_main.ExactTokenizer.from_rows(Merging(), [row])
    assert wrapped(row["input"])["input_ids"] == [1, 2]
    assert wrapped((row["input"] + row["output"]).rstrip("\n"), return_tensors="pt")["input_ids"].tolist() == [row["ids"]]
    assert wrapped("abz")["input_ids"] == [99, 26] and wrapped.eos_token == "</s>"  # other texts: the real one
    assert launch.openrlhf_sft_rows(example, Merging(), max_len=4) == ([], 1)  # 4 ids + EOS do not fit
    ending = SimpleNamespace(input_ids=[1, 2, 3, 0], loss_mask=[0, 0, 1, 1])  # a turn that ends with EOS (id 0)
    assert [r["ids"] for r in launch.openrlhf_sft_rows(ending, Merging(), max_len=4)[0]] == [[1, 2, 3, 0]]

    # the SFT command runs OpenRLHF's train_sft through sft_main, whose get_tokenizer wraps the real one
    pytest.importorskip("openrlhf", reason=NO_OPENRLHF)
    import openrlhf.utils
    import runpy

    sft = next(c for c in commands.plan(load_config("qwen7b")) if c.module == "openrlhf.cli.train_sft")
    assert sft.argv[sft.argv.index("--module") + 1] == "longshort.trainers.openrlhf.sft_main"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(row) + "\n")
    ran = []
    monkeypatch.setattr(runpy, "run_module", lambda name, **kw: ran.append((name, openrlhf.utils.get_tokenizer)))
    monkeypatch.setattr(openrlhf.utils, "get_tokenizer", lambda *a, **k: Merging())
    monkeypatch.setattr(sys, "argv", ["sft_main", "--data.dataset", str(rows)])
    sft_main.main()
    [(name, get_tokenizer)] = ran
    assert name == "openrlhf.cli.train_sft" and get_tokenizer("model", None)(row["input"])["input_ids"] == [1, 2]


# ----------------------------------------------------------------------------------- defect 8: the extra's pins


def extra_pins() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    pins = {}
    for line in parser["options.extras_require"]["openrlhf"].split("\n"):
        if line.strip():
            name, _, version = line.strip().partition("==")
            pins[name.split("[")[0].lower()] = version
    return pins


REQUIREMENTS = Path(__file__).with_name("openrlhf_extra_requirements.json")


def test_the_extras_pins_resolve_together():
    """Every version a pinned package requires of another pinned package (torch, transformers, flash-attn,
    ...) is the one the extra pins, and the base install allows it (declared requirements recorded from
    the package index: see the JSON file's note)."""
    from packaging.requirements import Requirement

    pins = extra_pins()
    recorded = json.loads(REQUIREMENTS.read_text())["packages"]
    assert {name: data["version"] for name, data in recorded.items()} == {n: pins[n] for n in recorded}
    base = configparser.ConfigParser()
    base.read(ROOT / "setup.cfg")
    install = [Requirement(line) for line in base["options"]["install_requires"].split("\n") if line.strip()]
    problems = []
    for name, data in recorded.items():
        for text in data["requires"]:
            requirement = Requirement(text)
            dep = requirement.name.lower()
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an optional extra of that package
            if dep in pins and not requirement.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{name} {data['version']} requires {text}, the extra pins {dep}=={pins[dep]}")
            if dep in {"torch", "transformers", "flash-attn"} and dep not in pins:
                problems.append(f"{name} {data['version']} requires {text}, the extra does not pin {dep}")
    for requirement in install:
        if requirement.name.lower() in pins and not requirement.specifier.contains(pins[requirement.name.lower()]):
            problems.append(f"install_requires {requirement} excludes the extra's {requirement.name}")
    assert not problems, problems


@pytest.mark.slow
def test_the_recorded_requirements_are_the_index_s(tmp_path):
    """Refreshes the record above from the package index (``pip install --dry-run --no-deps --report``)."""
    recorded = json.loads(REQUIREMENTS.read_text())["packages"]
    for name, data in recorded.items():
        report = tmp_path / f"{name}.json"
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                                 "--quiet", "--report", str(report), f"{name}=={data['version']}"],
                                capture_output=True, text=True, timeout=600)
        if result.returncode:
            pytest.skip(f"no package index access: {result.stderr.strip()[-200:]}")
        [item] = json.loads(report.read_text())["install"]
        assert sorted(item["metadata"].get("requires_dist") or []) == sorted(data["requires"]), name


# ----------------------------------------------------------------------------------- the preflight


MATH_ROWS = [{"problem": f"What is ${a}+{b}$?", "level": "Level 1", "type": "Algebra",
              "solution": f"We add. So ${a}+{b}={a + b}$. The answer is $\\boxed{{{a + b}}}$."} for a, b in
             ((1, 2), (3, 4), (5, 6))]


def preflight_config(tmp_path, tiny_dir, *overrides):
    train = tmp_path / "math_train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in MATH_ROWS))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"problem": "What is $2+2$?", "answer": "4"}) + "\n")
    return load_config("qwen7b", [f"data.train.source={train}", f"data.eval.source={held_out}",
                                  f"output_dir={tmp_path}/run", "backend.disk_gib=1000", *overrides])


def test_preflight_runs_data_and_cold_start_for_real_and_says_what_stood_in(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(preflight, "STAND_IN", str(tiny_dir))  # the tiny random model in SmolLM2's place
    printed: list[str] = []
    code = preflight.run_preflight(preflight_config(tmp_path, tiny_dir), problems=2, hub=False, echo=printed.append)
    out = "\n".join(printed)
    assert code == 0, out
    assert "deepspeed --num_gpus 8 --module longshort.trainers.openrlhf.sft_main" in out  # the plan is printed
    assert "actor (short, 6 GPUs)" in out and "published config values kept in longshort" in out
    assert "[ok] data stage: 2 training problems" in out and "first gold answer '3'" in out  # answer_from: boxed
    assert "in place of deepseek-ai/DeepSeek-R1-Distill-Qwen-7B on vllm" in out
    assert "[ok] OpenRLHF SFT rows:" in out and not (tmp_path / "run" / "data").exists()  # the run is untouched
    assert "one OpenRLHF SFT step is 8 rows (one per own turn), the embedded SFT's is 8 transcripts" in out
    assert "first optimiser step is at learning rate 0" in out and "[ok] disk: ~" in out
    progress = tmp_path / "run" / "preflight" / "sft" / "coldstart" / "synthesis_progress.jsonl"
    assert len(progress.read_text().splitlines()) == 2  # both problems went through the whole synthesis


def test_preflight_fails_with_the_reason_on_the_old_flags(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setattr(preflight, "STAND_IN", str(tiny_dir))
    config = preflight_config(tmp_path, tiny_dir, "trainer.micro_batch_size=16", "backend.packing=false",
                              "backend.vllm_gpu_memory_utilization=0.5", "sft.coldstart=long_short")
    printed: list[str] = []
    assert preflight.run_preflight(config, problems=2, hub=False, echo=printed.append) == 2
    failed = [line for line in printed if line.startswith("FAILED")]
    assert failed == [next(line for line in printed if line.startswith("FAILED per-GPU memory"))]
    assert "actor (short, 6 GPUs) needs ~261 GiB per GPU" in failed[0] and "trainer.micro_batch_size=1" in failed[0]


def test_preflight_shows_a_cold_start_that_cannot_be_built(tmp_path, tiny_dir, monkeypatch):
    """Defect 1 as it was: gold-steps transcripts from rows with neither steps nor a solution."""
    monkeypatch.setattr(preflight, "STAND_IN", str(tiny_dir))
    rows = tmp_path / "bare.jsonl"
    rows.write_text("".join(json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    config = preflight_config(tmp_path, tiny_dir, "sft.coldstart=long_short", f"data.train.source={rows}",
                              "data.train.answer_from=field")
    printed: list[str] = []
    assert preflight.run_preflight(config, problems=2, hub=False, echo=printed.append) == 2
    assert any(line.startswith("FAILED cold start: no cold-start transcripts could be built") for line in printed)


def test_preflight_says_when_the_data_is_out_of_reach(tmp_path, tiny_dir, monkeypatch):
    import longshort.train
    from longshort.data import DataError

    def offline(config, run):
        try:
            raise ConnectionError("Couldn't reach 'DigitalLearningGmbH/MATH-lighteval' on the Hub")
        except ConnectionError as error:
            raise DataError("loading failed") from error

    monkeypatch.setattr(longshort.train, "stage_data", offline)
    checks = preflight.data_and_coldstart_checks(preflight_config(tmp_path, tiny_dir), problems=2)
    assert [c.status for c in checks] == ["not checked"] * 3
    assert "pass data.train.source=<a local JSONL in the same layout>" in checks[0].detail
