"""Cold-start transcripts (longshort.coldstart) and embedded SFT (longshort.sft) on tiny models."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math

import pytest
import torch

from agents import LongThoughtAgent, ShortThoughtAgent, SkipAgent, vocab_key
from longshort.coldstart import ColdStartError, build_transcripts, concise, load_coldstart, write_coldstart
from longshort.config import SFTConfig
from longshort.data import Problem, load_problems, synthetic_problems
from longshort.engines.base import SamplingParams
from longshort.engines.hf import HFEngine
from longshort.episode import Turn
from longshort.models import load_model, tiny_model
from longshort.sft import _collate, _token_loss_sum, build_examples, epoch_batches, run_sft, shared_prefix, steps_per_epoch
from longshort.verify import extract_boxed

LONG, SHORT = LongThoughtAgent("long"), ShortThoughtAgent("short")
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=80)


def _check_transcript(record: dict) -> None:
    turns = record["turns"]
    kinds = []
    for index, turn in enumerate(turns):
        agent = LONG if index % 2 == 0 else SHORT
        assert turn["role"] == agent.role
        result = agent.check_format(turn["text"], "stop")
        assert result.ok, (turn["text"], result)
        kinds.append(result.kind)
    expected = {"direct": ["think", "final"], "handback": ["think", "handback", "think", "final"]}[record["plan"]]
    assert kinds == expected
    assert extract_boxed(turns[-1]["text"]) == record["answer"]


def test_coldstart_turns_pass_format_checks_and_box_the_gold_answer():
    problems = synthetic_problems(120, min_steps=1, max_steps=4, seed=7)
    records = build_transcripts(problems, seed=0)
    assert len(records) == len(problems)
    for record, problem in zip(records, problems):
        _check_transcript(record)
        steps = problem.meta["steps"]
        long_text = "\n".join(t["text"] for t in record["turns"][::2])
        short_text = " ".join(t["text"] for t in record["turns"][1::2])
        assert steps[0] in record["turns"][0]["text"]  # the front step, in full, from the long agent
        for step in steps:  # every step appears: in full in a long turn or as its arithmetic in a short one
            assert step in long_text or concise(step).rstrip(".") in short_text
    handbacks = [r for r in records if r["plan"] == "handback"]
    assert handbacks and all(len(r["turns"]) == 4 and r["turns"][1]["text"].endswith("</rethink>") for r in handbacks)
    assert all(len(p.meta["steps"]) >= 3 for p, r in zip(problems, records) if r["plan"] == "handback")


def test_coldstart_is_deterministic_per_seed_and_problem():
    problems = synthetic_problems(40, min_steps=3, max_steps=4, seed=3)
    first = build_transcripts(problems, seed=1)
    assert build_transcripts(problems, seed=1) == first
    assert build_transcripts(problems[::-1], seed=1) == first[::-1]  # independent of list order
    assert build_transcripts(problems, seed=2) != first
    assert build_transcripts(problems, seed=1, handback_prob=0.0)[0]["plan"] == "direct"


def test_coldstart_from_gsm8k_steps():
    records = build_transcripts(load_problems("gsm8k", limit=60), seed=0)
    assert len(records) >= 55  # items whose steps hold a protocol tag would be skipped, none expected
    for record in records:
        _check_transcript(record)


def test_concise_keeps_the_arithmetic():
    assert concise("Ravi splits 32 cards equally into 4 jars and keeps one, so he has 32 / 4 = 8 cards.") == "32 / 4 = 8."
    assert concise("Janet sells 16 - 3 - 4 = 9 duck eggs a day.") == "16 - 3 - 4 = 9."
    assert concise("So he made a profit of 200,000-130,000=$70,000") == "200,000-130,000 = $70,000."
    assert concise("Half of them are red.") == "Half of them are red."


def test_write_and_load_coldstart(tmp_path):
    problems = synthetic_problems(10, min_steps=1, max_steps=3, seed=1)
    paths = write_coldstart(problems, tmp_path, seed=0)
    assert set(paths) == {"long", "short"}
    for role, path in paths.items():
        records = load_coldstart(path)
        assert len(records) == 10 and all(r["role"] == role for r in records)
        assert records[0]["turns"] == build_transcripts(problems, seed=0)[0]["turns"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "question": "q", "turns": []}) + "\n{broken\n")
    with pytest.raises(ColdStartError, match=r"bad.jsonl:2: invalid JSON"):
        load_coldstart(bad)
    with pytest.raises(ColdStartError, match="no cold-start transcripts"):
        write_coldstart([Problem("no-steps", "What is 2 + 2?", "4")], tmp_path / "none", seed=0)


@pytest.mark.parametrize("agent", [LONG, SHORT], ids=["long", "short"])
def test_sft_examples_mask_exactly_the_agents_own_tokens(agent):
    _, tokenizer = tiny_model()
    problem = synthetic_problems(1, min_steps=3, max_steps=3, seed=0)[0]
    record = build_transcripts([problem], seed=0, handback_prob=1.0)[0]
    assert record["plan"] == "handback"
    (example,) = build_examples(agent, [record], tokenizer, max_length=4096)
    # The rollout path: own turns carry their sampled ids, partner turns are text re-tokenised by the view.
    turns = []
    for turn in record["turns"]:
        ids = tokenizer.encode(turn["text"], add_special_tokens=False)
        own = turn["role"] == agent.role
        turns.append(Turn(role=turn["role"], prompt_ids=[], action_ids=ids if own else [],
                          logprobs=[-0.5] * len(ids) if own else [], text=turn["text"], finish_reason="stop",
                          vocab=vocab_key(tokenizer) if own else "another-vocab"))
    sample = agent.training_sample(record["question"], turns, tokenizer)
    assert example.input_ids == sample.input_ids and example.loss_mask == sample.action_mask
    own_texts = [t["text"] for t in record["turns"] if t["role"] == agent.role]
    trained = [i for i, m in enumerate(example.loss_mask) if m]
    assert tokenizer.decode([example.input_ids[i] for i in trained]) == "".join(own_texts)
    assert example.loss_mask[: len(agent.prefix_ids(record["question"], tokenizer))] == [0] * len(
        agent.prefix_ids(record["question"], tokenizer))
    # A cut inside the agent's own last turn leaves that turn out (trained up to the cut it would teach a turn
    # that stops before its closing tag); a cut inside the partner's turn only shortens the untrained context.
    (cut,) = build_examples(agent, [record], tokenizer, max_length=len(example.input_ids) - 3)
    if example.loss_mask[-1]:  # the example ends with the agent's last own turn
        last = [t for t in record["turns"] if t["role"] == agent.role][-1]
        kept = len(example.input_ids) - len(tokenizer.encode(last["text"], add_special_tokens=False))
        assert cut.input_ids == example.input_ids[:kept] and cut.loss_mask == example.loss_mask[:kept]
        assert cut.trained_tokens == example.trained_tokens - (len(example.input_ids) - kept)
    else:
        assert cut.input_ids == example.input_ids[:-3] and cut.trained_tokens == example.trained_tokens


def test_a_turn_that_ends_without_a_stop_string_is_trained_to_end_with_eos():
    """The single/skip agents' turns end at end-of-sequence when sampled; SFT must teach that token,
    or the fine-tuned model never stops (a long/short turn ends at its stop tag and gets no EOS)."""
    _, tokenizer = tiny_model()
    text = "<think>\n2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}."
    record = {"id": "p", "question": "What is 2 + 3?", "answer": "5", "turns": [{"role": "single", "text": text}]}
    (example,) = build_examples(SkipAgent("single"), [record], tokenizer, max_length=4096)
    trained = [token for token, m in zip(example.input_ids, example.loss_mask) if m]
    assert trained == tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    long_record = build_transcripts(synthetic_problems(1, seed=0), seed=0)[0]
    (long_example,) = build_examples(LONG, [long_record], tokenizer, max_length=4096)
    assert long_example.input_ids[-1] != tokenizer.eos_token_id


def test_epoch_batches_cover_every_example_once_and_bucket_by_length():
    lengths = [5, 50, 6, 51, 7, 52, 8, 53, 9]
    steps = epoch_batches(lengths, batch_size=2, grad_accum=2, seed=0, epoch=0)
    assert len(steps) == steps_per_epoch(len(lengths), SFTConfig(batch_size=2, grad_accum=2))
    assert sorted(i for step in steps for mb in step for i in mb) == list(range(9))
    assert all(max(lengths[i] for i in mb) - min(lengths[i] for i in mb) <= 43 for step in steps for mb in step)
    assert epoch_batches(lengths, 2, 2, seed=0, epoch=0) == steps != epoch_batches(lengths, 2, 2, seed=0, epoch=1)


@pytest.mark.parametrize("agent", [LONG, SHORT], ids=["long", "short"])
def test_shared_prefix_gives_the_same_loss_and_gradients(agent):
    model, tokenizer = tiny_model()
    model.train()
    records = build_transcripts(synthetic_problems(3, min_steps=2, max_steps=3, seed=9), seed=0, handback_prob=1.0)
    examples = build_examples(agent, records, tokenizer, max_length=4096)
    shared = shared_prefix(examples)
    system = tokenizer.apply_chat_template([{"role": "system", "content": agent.system_prompt}], return_dict=False)
    assert len(system) > 800 and len(system) <= shared < min(e.loss_mask.index(1) for e in examples)
    assert shared_prefix(examples[:1]) == 0
    batch = _collate(examples, tokenizer.pad_token_id, torch.device("cpu"))
    results = []
    for share in (0, shared):
        model.zero_grad()
        loss = _token_loss_sum(model, *batch, share)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (full, full_grads), (fast, fast_grads) = results
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _tiny_long_agent() -> LongThoughtAgent:
    """The long agent with a short system prompt: the paper's (~880 tiny-vocab tokens) makes tests 5x slower."""
    return LongThoughtAgent("long", system_prompt="Think first.", sampling=GREEDY)


def test_sft_lowers_loss_and_learns_the_long_turn_format(tmp_path):
    model, tokenizer = tiny_model()
    problems = synthetic_problems(4, min_steps=1, max_steps=1, seed=5)
    records = build_transcripts(problems, seed=0)
    agent = _tiny_long_agent()
    config = SFTConfig(lr=1e-2, epochs=60, batch_size=4, max_length=512, warmup_ratio=0.1, save_every=1000)
    final = run_sft(model, tokenizer, agent, records, config, tmp_path / "sft", seed=0, progress=False)
    log = [json.loads(line) for line in (tmp_path / "sft" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, config.epochs + 1))
    assert {"step", "loss", "lr", "grad_norm", "tokens", "seconds"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"] / 10
    # the RL trainers' schedule: warm-up steps from lr/warmup (not HF's lr 0), peak, cosine to near 0
    lrs = [entry["lr"] for entry in log]
    warmup = math.ceil(config.warmup_ratio * config.epochs)
    assert lrs[:warmup + 1] == pytest.approx([config.lr * (k + 1) / warmup for k in range(warmup)] + [config.lr])
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:])) and lrs[-1] < 1e-4

    engine = HFEngine(model, tokenizer, max_batch_size=8)

    async def generate():
        return await asyncio.gather(*(engine.generate(agent.view(p.prompt, [], tokenizer).ids, agent.sampling)
                                      for p in problems))

    for generation, record in zip(asyncio.run(generate()), records):
        assert agent.check_format(generation.text, generation.finish_reason).ok, generation.text
        assert generation.text == record["turns"][0]["text"]

    loaded, _ = load_model(str(final), dtype="float32", device="cpu")
    for (name, trained), (_, reloaded) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(trained, reloaded), name


class _Interrupt(RuntimeError):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    records = build_transcripts(synthetic_problems(6, min_steps=1, max_steps=3, seed=2), seed=0)
    agent = _tiny_long_agent()
    config = SFTConfig(lr=3e-3, epochs=3, batch_size=2, grad_accum=2, max_length=512, save_every=2)
    assert steps_per_epoch(len(records), config) * config.epochs == 6

    reference, tokenizer = tiny_model()
    run_sft(reference, tokenizer, agent, records, config, tmp_path / "straight", seed=0, progress=False)

    def interrupt(metrics):
        if metrics["step"] == 5:
            raise _Interrupt

    model, tokenizer = tiny_model()
    with pytest.raises(_Interrupt):
        run_sft(model, tokenizer, agent, records, config, tmp_path / "resumed", seed=0, on_step=interrupt,
                progress=False)
    assert [p.name for p in (tmp_path / "resumed").glob("checkpoint-*")] == ["checkpoint-4"]
    with pytest.raises(ValueError, match="different SFT run"):
        run_sft(tiny_model()[0], tokenizer, agent, records, dataclasses.replace(config, lr=1e-3),
                tmp_path / "resumed", seed=0, progress=False)
    fresh, tokenizer = tiny_model()
    final = run_sft(fresh, tokenizer, agent, records, config, tmp_path / "resumed", seed=0, progress=False)
    for (name, a), (_, b) in zip(reference.state_dict().items(), fresh.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)

    def losses(run):
        return [json.loads(line)["loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    assert losses("resumed") == pytest.approx(losses("straight"), abs=1e-6)  # 6 lines: step 5 not logged twice
    again, _ = tiny_model()
    assert run_sft(again, tokenizer, agent, records, config, tmp_path / "resumed", seed=0, progress=False) == final
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), fresh.state_dict().values()))
    assert not list((tmp_path / "resumed").glob("checkpoint-*"))  # the finished run keeps its final weights only


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    records = build_transcripts(synthetic_problems(4, min_steps=1, max_steps=3, seed=4), seed=0)
    agent = _tiny_long_agent()
    first_steps = []
    for name, batch, accum in (("one", 4, 1), ("accum", 1, 4)):
        model, tokenizer = tiny_model()
        config = SFTConfig(lr=1e-3, epochs=1, batch_size=batch, grad_accum=accum, max_length=512,
                           gradient_checkpointing=name == "accum")
        run_sft(model, tokenizer, agent, records, config, tmp_path / name, seed=0, progress=False)
        first_steps.append(json.loads((tmp_path / name / "log.jsonl").read_text().splitlines()[0]))
    one, accum = first_steps
    assert one["trained_tokens"] == accum["trained_tokens"]
    assert accum["loss"] == pytest.approx(one["loss"], rel=1e-3)
    assert accum["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-2)
