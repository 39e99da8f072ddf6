"""Evaluation: metrics from hand-built episodes, resume after an interruption, broken items, GPQA on
shuffled options, the table and the plot, the vLLM path (fake module) and the CLI on a tiny model.

Fake engines answer from the decoded prompt, so every expected score is known in advance.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import re
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from longshort.config import load_config
from longshort.data import Problem, load_benchmark
from longshort.engines.base import Generation, SamplingParams
from longshort.episode import Episode, Outcome, Turn
from longshort.evaluate import main
from longshort.evaluation import (
    EvalError, Record, RecordError, RecordFile, Results, build_eval_engines, evaluate, evaluate_problems,
    evaluation_config, markdown_table, pass_at_k, published_for, summarize, write_report,
)
from longshort.evaluation.report import row_of
from longshort.models import tiny_model, tiny_tokenizer

QUESTION = re.compile(r"What is (\d+) plus \1\?")


def problems(n: int) -> list[Problem]:
    return [Problem(id=f"q{i}", prompt=f"What is {i} plus {i}?", answer=str(2 * i)) for i in range(n)]


def short_reply(prompt: str) -> str:
    """Right for even i, wrong for odd i: accuracy is exactly the share of even items."""
    i = int(QUESTION.search(prompt).group(1))
    return f"<answer>so \\boxed{{{2 * i if i % 2 == 0 else 2 * i + 1}}}</answer>"


class FakeEngine:
    """Replies with ``reply(decoded prompt)``; can raise KeyboardInterrupt after some calls, like Ctrl-C."""

    def __init__(self, reply, *, interrupt_after: int | None = None, fail_on: str | None = None):
        self.tokenizer = tiny_tokenizer()
        self.reply, self.interrupt_after, self.fail_on = reply, interrupt_after, fail_on
        self.calls = 0

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        await asyncio.sleep(0)  # let other episodes interleave, as a real engine's batching does
        prompt = self.tokenizer.decode(prompt_ids)
        if self.fail_on and self.fail_on in prompt:
            raise RuntimeError("CUDA error: device-side assert triggered")
        ids = self.tokenizer.encode(self.reply(prompt), add_special_tokens=False)[: sampling.max_new_tokens]
        return Generation(ids, [-0.5] * len(ids), self.tokenizer.decode(ids), "stop")


def pair_engines(**short_kwargs) -> dict[str, FakeEngine]:
    return {"long": FakeEngine(lambda prompt: "<think>add the two numbers</think>"),
            "short": FakeEngine(short_reply, **short_kwargs)}


def config_for(tmp_path: Path, *overrides: str):
    return load_config("tiny", [f"output_dir={tmp_path}/run", *overrides])


# ------------------------------------------------------------------------------------------ metrics


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def episode(item: str, sample: int, turns: list[tuple[str, int]], reason: str, verdict: str | None = None) -> Episode:
    built = [Turn(role, [1], list(range(n)), [0.0] * n, "x", "stop", "v") for role, n in turns]
    outcome = Outcome(reason, answer_text="\\boxed{1}" if reason == "answered" else None, correct=verdict == "ok",
                      verdict=verdict)
    return Episode(item, sample, "q", "1", built, outcome)


def test_metrics_from_hand_built_episodes():
    # item a: 4 samples, 1 correct; item b: 4 samples, none correct, one a format failure, one a timeout verdict
    records = [
        Record.from_episode(episode("a", 0, [("long", 10), ("short", 5)], "answered", "ok")),
        Record.from_episode(episode("a", 1, [("long", 20), ("short", 5)], "answered", "wrong")),
        Record.from_episode(episode("a", 2, [("long", 10), ("short", 5), ("long", 10), ("short", 5)], "answered",
                                    "wrong")),
        Record.from_episode(episode("a", 3, [("long", 10), ("short", 5)], "answered", "error: worker died")),
        Record.from_episode(episode("b", 0, [("long", 30)], "format:long")),
        Record.from_episode(episode("b", 1, [("long", 10), ("short", 10)], "answered", "timeout")),
        Record.from_episode(episode("b", 2, [("long", 10), ("short", 10)], "turn_cap")),
        Record.broken(Problem("b", "q", "1"), 3, RuntimeError("engine died")),
    ]
    result = summarize("set", records, samples=4)
    assert (result.items, result.episodes, result.samples) == (2, 8, 4)
    assert result.accuracy == pytest.approx((1 / 4 + 0) / 2)
    assert result.pass_at == {1: pytest.approx(0.125), 4: pytest.approx(0.5)}
    assert result.accuracy_stderr == pytest.approx(0.125)  # stdev(0.25, 0) / sqrt(2 items)
    assert result.tokens_by_role == {"long": pytest.approx(110 / 8), "short": pytest.approx(45 / 8)}
    assert result.tokens == pytest.approx(155 / 8)
    assert result.turns == pytest.approx((2 + 2 + 4 + 2 + 1 + 2 + 2 + 0) / 8)
    assert result.format_failure_rate == pytest.approx(1 / 8)
    assert result.outcomes == {"answered": 5, "error": 1, "format:long": 1, "turn_cap": 1}
    assert result.verdicts == {"error": 1, "ok": 1, "timeout": 1, "wrong": 2}
    assert result.broken == [{"id": "b", "sample": 3, "error": "RuntimeError: engine died"}]


# ------------------------------------------------------------------------------ runs, resume, breakage


def test_pair_evaluation_scores_and_counts_tokens(tmp_path):
    config = config_for(tmp_path, "eval.samples=2")
    engines = pair_engines()
    results = evaluate_problems(config, problems(6), out_dir=tmp_path / "out", engines=engines, progress=False)
    result = results.sets["heldout"]
    assert result.accuracy == 0.5 and result.pass_at == {1: 0.5, 2: 0.5}  # q0, q2, q4 right
    assert result.turns == 2 and result.format_failure_rate == 0 and result.verdicts == {"ok": 6, "wrong": 6}
    tok = tiny_tokenizer()
    long_tokens = len(tok.encode("<think>add the two numbers</think>", add_special_tokens=False))
    assert result.tokens_by_role["long"] == long_tokens
    assert result.tokens == long_tokens + result.tokens_by_role["short"]
    lines = (tmp_path / "out" / "records" / "heldout.jsonl").read_text().splitlines()
    assert sorted((json.loads(line)["id"], json.loads(line)["sample"]) for line in lines) == \
        sorted((f"q{i}", s) for i in range(6) for s in range(2))
    assert engines["long"].calls == engines["short"].calls == 12


def test_an_interrupted_run_resumes_without_duplicates(tmp_path):
    config = config_for(tmp_path, "eval.samples=2", "rollout.max_batch_size=2")  # 4 episodes in flight
    items = problems(8)
    reference = evaluate_problems(config, items, out_dir=tmp_path / "whole", engines=pair_engines(), progress=False)

    out = tmp_path / "broken_off"
    with pytest.raises(KeyboardInterrupt):
        evaluate_problems(config, items, out_dir=out, engines=pair_engines(interrupt_after=6), progress=False)
    path = out / "records" / "heldout.jsonl"
    kept = len(path.read_text().splitlines())
    assert 0 < kept < 16
    with path.open("a") as handle:  # a kill in the middle of a write leaves a torn last line
        handle.write('{"id": "q7", "sample": 1, "corr')

    engines = pair_engines()
    resumed = evaluate_problems(config, items, out_dir=out, engines=engines, progress=False)
    keys = [(json.loads(line)["id"], json.loads(line)["sample"]) for line in path.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 16
    assert engines["short"].calls == 16 - kept  # recorded episodes are not played again
    assert resumed.sets["heldout"].to_dict() == reference.sets["heldout"].to_dict()


def test_a_foreign_records_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "q0", "sample": 0, "correct": true, "outcome": "answered", "gold": "0"}\n["not", "ours"]\n')
    with pytest.raises(RecordError, match="--restart"):
        RecordFile(path).load()


def test_nothing_to_evaluate_fails_in_one_line(tmp_path):
    with pytest.raises(EvalError, match="no problem sets"):
        evaluate(config_for(tmp_path), {}, out_dir=tmp_path / "out", engines=pair_engines(), progress=False)
    with pytest.raises(EvalError, match="set 'math500' has no problems"):
        evaluate(config_for(tmp_path), {"math500": []}, out_dir=tmp_path / "out", engines=pair_engines(),
                 progress=False)


def test_records_of_another_protocol_are_refused(tmp_path):
    config = config_for(tmp_path)
    evaluate_problems(config, problems(2), out_dir=tmp_path / "out", engines=pair_engines(), progress=False)
    hotter = config_for(tmp_path, "eval.temperature=0.9")
    with pytest.raises(EvalError, match="temperature differ.*--restart"):
        evaluate_problems(hotter, problems(2), out_dir=tmp_path / "out", engines=pair_engines(), progress=False)
    redone = evaluate_problems(hotter, problems(2), out_dir=tmp_path / "out", engines=pair_engines(),
                               restart=True, progress=False)
    assert redone.sets["heldout"].episodes == 2


def test_two_evaluations_cannot_write_to_one_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("w") as held:  # as another process evaluating into the folder would
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(EvalError, match="another evaluation is writing"):
            evaluate_problems(config_for(tmp_path), problems(2), out_dir=out, engines=pair_engines(), progress=False)
    assert evaluate_problems(config_for(tmp_path), problems(2), out_dir=out, engines=pair_engines(),
                             progress=False).sets["heldout"].episodes == 2


def test_one_folder_collects_sets_evaluated_with_different_samples(tmp_path):
    """The paper's protocol: 4 samples on AIME/AMC, 1 on MATH500, in one table."""
    out = tmp_path / "out"
    evaluate(config_for(tmp_path, "eval.samples=4"), {"aime24": problems(2)}, out_dir=out, engines=pair_engines(),
             progress=False)
    both = evaluate(config_for(tmp_path), {"math500": problems(3)}, out_dir=out, engines=pair_engines(),
                    progress=False)
    assert [(name, s.samples, s.episodes) for name, s in both.sets.items()] == [("math500", 1, 3), ("aime24", 4, 8)]
    assert "MATH500 k=1, AIME24 k=4" in (out / "table.md").read_text()


def test_a_broken_item_is_reported_and_counted_wrong(tmp_path):
    config = config_for(tmp_path)
    items = problems(4)  # q0 and q2 would be right
    bad_gold = Problem("choice", "Pick one.\n\n(A) x\n(B) y", answer="Z", meta={"choices": ["x", "y"]})
    engines = pair_engines(fail_on="What is 2 plus 2?")
    engines["short"].reply = lambda prompt: ("<answer>\\boxed{A}</answer>" if "Pick one" in prompt
                                             else short_reply(prompt))
    results = evaluate_problems(config, [*items, bad_gold], out_dir=tmp_path / "out", engines=engines, progress=False)
    result = results.sets["heldout"]
    assert result.items == 5 and result.accuracy == pytest.approx(1 / 5)  # only q0: q2's engine call failed
    assert {(b["id"], b["error"].split(":")[0]) for b in result.broken} == {("q2", "RuntimeError"),
                                                                            ("choice", "ValueError")}
    assert result.outcomes["error"] == 2
    assert "| 2 |" in (tmp_path / "out" / "table.md").read_text()  # the Broken column of the details


def test_gpqa_is_graded_on_shuffled_options(tmp_path, gpqa_fixture):
    """A model that always answers "A" scores the share of items whose right option landed on A."""
    config = config_for(tmp_path, "eval.mode=single")
    gpqa = load_benchmark("gpqa_diamond")
    always_a = FakeEngine(lambda prompt: "<think>hmm</think> The answer is \\boxed{A}.")
    results = evaluate(config, {"gpqa_diamond": gpqa}, out_dir=tmp_path / "out", engines={"single": always_a},
                       progress=False)
    accuracy = results.sets["gpqa_diamond"].accuracy
    assert accuracy == pytest.approx(sum(p.answer == "A" for p in gpqa) / len(gpqa))
    assert 0.15 < accuracy < 0.40  # the fixture's 48 items: 16 landed on A


# ------------------------------------------------------------------------------------ configuration


def test_evaluation_config_overrides_sampling_and_picks_the_single_model(tmp_path):
    config = config_for(tmp_path, "eval.temperature=0.1", "eval.max_new_tokens=50", "eval.max_turns=3")
    pair = evaluation_config(config)
    assert set(pair.agents) == {"long", "short"} and pair.env.name == "long_short"
    assert (pair.env.max_turns, pair.env.max_total_tokens) == (3, 150)
    for spec in pair.agents.values():
        assert (spec.sampling.temperature, spec.sampling.top_p, spec.sampling.top_k,
                spec.sampling.max_new_tokens) == (0.1, 1.0, 0, 50)
    single = evaluation_config(config_for(tmp_path, "eval.mode=single", "eval.max_new_tokens=50",
                                          "eval.max_turns=3", "agents.long.model.name_or_path=org/long"))
    assert list(single.agents) == ["single"] and single.env.name == "single_turn"
    spec = single.agents["single"]
    assert (spec.type, spec.model.name_or_path, spec.sampling.max_new_tokens) == ("single", "org/long", 150)
    own = evaluation_config(config_for(tmp_path, "eval.mode=single", "agents.single.type=single",
                                       "agents.single.model.name_or_path=org/baseline"))
    assert own.agents["single"].model.name_or_path == "org/baseline"


def test_published_rows_only_for_the_papers_models(tmp_path):
    assert published_for(config_for(tmp_path)) == []
    qwen = [p.name for p in published_for(load_config("qwen7b"))]
    assert qwen == ["DeepSeek-R1-Distill-Qwen-7B", "Long-Short Qwen2.5-7B"]
    assert [p.family for p in published_for(load_config("llama8b"))] == ["llama8b", "llama8b"]


# ---------------------------------------------------------------------------------- table and plot


def test_table_and_plot(tmp_path):
    config = config_for(tmp_path)
    ours = evaluate(config, {"math500": problems(4), "aime24": problems(2)}, out_dir=tmp_path / "out",
                    engines=pair_engines(), progress=False, system="ours")
    published = published_for(load_config("qwen7b"))
    write_report(tmp_path / "out", [ours], published)
    table = markdown_table([row_of(ours)], ["math500", "aime24"])
    assert table.splitlines()[0] == ("| System | MATH500 Acc. | MATH500 Tok. | AIME24 Acc. | AIME24 Tok. | "
                                     "Avg. Acc. | Avg. Tok. |")
    tokens = ours.sets["math500"].tokens
    assert table.splitlines()[2].startswith(f"| ours | 50.0 | {tokens:.0f} | 50.0 |")
    text = (tmp_path / "out" / "table.md").read_text()
    assert "| DeepSeek-R1-Distill-Qwen-7B (published) | 92.8 |  | 55.5 |  | 74.2 |  |" in text  # no tokens
    assert "| Long-Short Qwen2.5-7B (published) |  |  |  |  |  |  |" in text
    assert "nothing is filled in by guess" in text and "arXiv 2501.12948" in text
    with Image.open(tmp_path / "out" / "plot.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 200
    assert Results.load(tmp_path / "out").sets["math500"].to_dict() == ours.sets["math500"].to_dict()


def test_every_system_of_a_long_table_gets_its_own_point_style():
    """table=tiny has 12 rows and matplotlib cycles 10 colours: rows 1 and 11 must not look alike."""
    from longshort.evaluation.report import point_styles

    styles = point_styles(12, [f"C{i}" for i in range(10)])
    assert len(set(styles)) == 12 and styles[0] == ("C0", "o") and styles[10] == ("C0", "s")


# --------------------------------------------------------------------------------------------- vLLM


def fake_vllm(calls: dict):
    """A stand-in for vllm: long turns end at </think>, short turns answer the question."""
    from transformers import AutoTokenizer

    vllm = types.ModuleType("vllm")
    sampling_module = types.ModuleType("vllm.sampling_params")
    sampling_module.RequestOutputKind = types.SimpleNamespace(FINAL_ONLY="final_only")
    vllm.sampling_params = sampling_module
    vllm.SamplingParams = lambda **kw: kw
    vllm.TokensPrompt = lambda **kw: kw
    vllm.AsyncEngineArgs = lambda **kw: kw

    class AsyncLLMEngine:
        def __init__(self, args):
            self.tokenizer = AutoTokenizer.from_pretrained(args["model"])

        @classmethod
        def from_engine_args(cls, args):
            calls.setdefault("engines", []).append(args)
            return cls(args)

        async def generate(self, prompt, params, request_id):
            calls["requests"] = calls.get("requests", 0) + 1
            text = (short_reply(self.tokenizer.decode(prompt["prompt_token_ids"])) if "</answer>" in params["stop"]
                    else "<think>add</think>")
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            logprobs = [{i: types.SimpleNamespace(logprob=-0.1)} for i in ids]
            yield types.SimpleNamespace(finished=True, outputs=[types.SimpleNamespace(
                token_ids=ids, logprobs=logprobs, finish_reason="stop", stop_reason=params["stop"][0])])

    vllm.AsyncLLMEngine = AsyncLLMEngine
    return vllm, sampling_module


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Two tiny checkpoints on disk (two agents with two different models; contexts 4k and 32k)."""
    root = tmp_path_factory.mktemp("tiny")
    for seed in (0, 1):
        model, tokenizer = tiny_model(seed=seed)
        model.config.max_position_embeddings = 4096 * 8 ** seed
        model.save_pretrained(root / f"m{seed}")
        tokenizer.save_pretrained(root / f"m{seed}")
    return root / "m0", root / "m1"


def test_vllm_engines_with_a_fake_module(tmp_path, tiny_dirs, monkeypatch):
    calls: dict = {}
    vllm, sampling_module = fake_vllm(calls)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_module)
    config = config_for(tmp_path, "rollout.engine=vllm", f"agents.long.model.name_or_path={tiny_dirs[0]}",
                        f"agents.short.model.name_or_path={tiny_dirs[1]}", "agents.short.model.dtype=bf16")
    engines = build_eval_engines(evaluation_config(config))
    assert engines["long"] is not engines["short"]
    assert [(a["model"], a["dtype"], a["gpu_memory_utilization"]) for a in calls["engines"]] == [
        (str(tiny_dirs[0]), "auto", 0.45), (str(tiny_dirs[1]), "bfloat16", 0.45)]
    # each context holds an episode (4 turns x 128 tokens) and its prompt, within the model's own context
    assert [a["max_model_len"] for a in calls["engines"]] == [4096, 4 * 128 + 4096]
    results = evaluate_problems(config, problems(4), out_dir=tmp_path / "out", engines=engines, progress=False)
    assert results.sets["heldout"].accuracy == 0.5 and calls["requests"] == 8

    calls.clear()
    shared = config_for(tmp_path, "rollout.engine=vllm", f"agents.long.model.name_or_path={tiny_dirs[0]}",
                        f"agents.short.model.name_or_path={tiny_dirs[0]}")
    engines = build_eval_engines(evaluation_config(shared))
    assert engines["long"] is engines["short"] and calls["engines"][0]["gpu_memory_utilization"] == 0.9


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_end_to_end_on_a_tiny_model(tmp_path, tiny_dirs, gpqa_fixture, capsys, monkeypatch):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""inherit: tiny
name: cli
output_dir: {tmp_path}/run
agents:
  long: {{model: {{name_or_path: {tiny_dirs[0]}, dtype: fp32}}}}
  short: {{model: {{name_or_path: {tiny_dirs[0]}, dtype: fp32}}}}
eval: {{benchmarks: [gsm8k, gpqa_diamond], limit: 2, samples: 2, max_new_tokens: 6, max_turns: 2}}
""")
    assert main([f"recipe={recipe}"]) == 0
    out = tmp_path / "run" / "eval"
    stdout = capsys.readouterr().out
    assert stdout.startswith("# Evaluation: cli (pair)") and "| cli (pair) |" in stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["sets"]) == {"gsm8k", "gpqa_diamond"}
    assert all(s["episodes"] == 4 for s in results["sets"].values())
    with Image.open(out / "plot.png") as image:
        image.verify()
    lines = (out / "records" / "gsm8k.jsonl").read_text()

    def no_models(*args):
        raise AssertionError("a fully recorded evaluation must not load a model")

    with monkeypatch.context() as patch:
        patch.setattr("longshort.evaluation.runner.build_eval_engines", no_models)
        assert main([f"recipe={recipe}", "system=again"]) == 0  # all recorded: only the report is rewritten
    assert (out / "records" / "gsm8k.jsonl").read_text() == lines
    assert json.loads((out / "results.json").read_text())["generated_tokens"] == 0

    assert main([f"recipe={recipe}", "eval.mode=single", f"out={tmp_path}/single", f"compare={out}"]) == 0
    assert "| again |" in (tmp_path / "single" / "table.md").read_text()
    # the single model against the pair, paired on the same items of each set
    assert main([f"recipe={recipe}", "eval.mode=single", f"out={tmp_path}/single", f"baseline={out}"]) == 0
    paired = json.loads((tmp_path / "single" / "paired.json").read_text())
    assert paired["b"] == "again" and set(paired["sets"]) == {"gsm8k", "gpqa_diamond"}
    assert all(s["items"] == 2 for s in paired["sets"].values())
    assert "## Paired difference" in (tmp_path / "single" / "table.md").read_text()
    assert main([f"recipe={recipe}", f"out={tmp_path}/single", f"baseline={tmp_path}/nowhere"]) == 2
    assert "no results.json" in capsys.readouterr().err
    assert main([f"recipe={recipe}", "eval.max_turns=3"]) == 2
    assert "max_turns differ" in capsys.readouterr().err


def test_cli_help_lists_its_own_arguments(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "out=DIR" in text and "compare=DIR" in text and "baseline=DIR" in text and "--restart" in text
