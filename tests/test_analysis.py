"""Thought analysis: step segmentation, chunking, entropy, pruning, [SKIP], importance, cold start.

Everything runs on the tiny random model and tokenizer (no download); expected values are computed
by hand or independently of the code under test.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import shutil

import pytest
import torch
from tokenizers import AddedToken

from agents import LongThoughtAgent, ShortThoughtAgent
from longshort.analysis.chains import Chain, ChainFormat
from longshort.analysis.chunking import (Block, LLMChunker, RuleChunker, blocks_from_json, chunk_prompt,
                                         parse_blocks, thoughts_from_blocks, validate_blocks)
from longshort.analysis.importance import decay, rescore, score_thoughts
from longshort.analysis.lenient_json import loads
from longshort.analysis.pruning import (SCORES, SKIP, answer_after_pruning, prune_count, prune_text, select_steps,
                                        summarise)
from longshort.analysis.scoring import OPENER_TOKENS, entropy_bits, step_entropies, stepwise_token_entropies, token_entropies
from longshort.analysis.skip import sft_examples
from longshort.analysis.steps import StepSegmenter, segment_text, thinking_text
from longshort.analysis.equations import inconsistency
from longshort.analysis.synthesis import (SynthesisConfig, TurnCaps, check_transcript, important_thoughts, runs,
                                          synthesize)
from longshort.engines.base import Generation, SamplingParams
from longshort.engines.hf import HFEngine
from longshort.episode import Episode, Outcome, Turn
from longshort.config import SkipRewardsConfig
from longshort.models import add_tokens, tiny_model, tiny_tokenizer
from longshort.rewards import RewardContext
from longshort.rewards.skip import skip_count, skip_length, skip_ratio, skip_stats
from longshort.verify import Verifier


class ScriptedEngine:
    """Replays texts in order (cycling), recording the prompts it was given."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts, self.prompts = tokenizer, list(texts), []

    async def generate(self, prompt_ids, sampling):
        self.prompts.append(list(prompt_ids))
        text = self.texts[(len(self.prompts) - 1) % len(self.texts)]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return Generation(ids, [0.0] * len(ids), text, "stop")


def enc(tok, text):
    return tok.encode(text, add_special_tokens=False)


# ------------------------------------------------------------------------------------- steps


def merged_tokenizer():
    """The tiny tokenizer with merged blank-line tokens, as real vocabularies have (".\\n\\n")."""
    tok = tiny_tokenizer()
    tok.add_tokens([AddedToken(".\n\n", normalized=False), AddedToken("\n\n   ", normalized=False)])
    return tok


def test_segmentation_on_ids_cuts_inside_merged_tokens_and_split_newlines():
    tok = merged_tokenizer()
    merged, indented, newline = tok.convert_tokens_to_ids(".\n\n"), tok.convert_tokens_to_ids("\n\n   "), enc(tok, "\n")
    assert len(newline) == 1
    ids = (enc(tok, "First step") + [merged]            # "." and the blank line in one token
           + enc(tok, "Second") + newline + newline     # a blank line spelled as two "\n" tokens
           + enc(tok, "Third") + [indented]             # blank line plus indentation in one token
           + enc(tok, "Last"))
    steps = StepSegmenter(tok).segment(ids)
    assert [s.text for s in steps] == ["First step.\n\n", "Second\n\n", "Third\n\n   ", "Last"]
    assert [s.delimited for s in steps] == [True, True, True, False]
    assert "".join(s.text for s in steps) == tok.decode(ids)
    # token ranges tile the ids; the merged ".\n\n" token carries content, so it is scored
    assert steps[0].end == steps[1].start and steps[-1].end == len(ids)
    assert steps[0].scored.stop == steps[0].end
    assert steps[1].scored.stop == steps[1].end - 2  # the two bare "\n" tokens are delimiter only


def test_segmentation_stops_at_think_close_and_folds_blank_lines():
    tok = tiny_tokenizer()
    segmenter = StepSegmenter(tok)
    ids = enc(tok, "a\n\n\n\nb\n</think>\n\nThe answer is 5.\n\nMore")
    steps = segmenter.segment(ids)
    assert "".join(s.text for s in steps) == "a\n\n\n\nb\n"  # nothing after </think>
    assert all(s.text.strip() for s in steps)  # no whitespace-only step
    assert steps[0].text.startswith("a") and steps[-1].text.strip() == "b"
    assert segmenter.thinking_length(ids) == len(enc(tok, "a\n\n\n\nb\n"))
    leading = segmenter.segment(enc(tok, "\n\nHello\nworld\n\nnext"))  # blank lines first: no cut there
    assert [s.text for s in leading] == ["\n\nHello\nworld\n\n", "next"]
    offset, text = thinking_text("<think>\nx\n\ny</think> z")
    assert (offset, text) == (8, "x\n\ny")
    assert [s.text for s in segment_text(text, segmenter)] == ["x\n\n", "y"]


# ------------------------------------------------------------------------------------ chunking


def test_validation_rejects_gaps_overlaps_and_missing_coverage():
    assert validate_blocks([Block(1, 3, "a"), Block(4, 6, "b"), Block(7, 10, "c")], 10) == []
    assert validate_blocks([Block(1, 10, "all")], 10) == []
    assert any("gap" in e for e in validate_blocks([Block(1, 3, ""), Block(5, 10, "")], 10))
    assert any("overlap" in e for e in validate_blocks([Block(1, 4, ""), Block(4, 10, "")], 10))
    assert any("gap" in e for e in validate_blocks([Block(2, 10, "")], 10))  # must start at step 1
    assert any("coverage" in e for e in validate_blocks([Block(1, 4, ""), Block(5, 8, "")], 10))
    assert any("past the last step" in e for e in validate_blocks([Block(1, 11, "")], 10))
    assert validate_blocks([Block(1, 5, ""), Block(6, 4, ""), Block(5, 10, "")], 10)  # reversed block
    assert validate_blocks([], 3) == ["no blocks"]


def test_lenient_parsing_of_the_released_chunker_output(shared_data):
    row = json.loads((shared_data / "longcot" / "r1_example_chunked.jsonl").read_text().splitlines()[0])
    assert loads(row["block_prompt_results"]) == row["block"]  # ```json fenced
    blocks, errors = parse_blocks(row["block_prompt_results"], 133)
    assert [(b.start, b.end) for b in blocks][:2] == [(1, 4), (5, 12)] and len(blocks) == 8
    assert errors == []
    # the released blocks stop at step 133 of a thinking with more steps: the coverage bug, caught
    _, errors = parse_blocks(row["block_prompt_results"], 135)
    assert errors == ["coverage: steps 134..135 are in no block"]


def test_lenient_parsing_of_the_prompt_skeleton_style():
    text = ("Here you go:\n```json\n{'block 2': {'start': 'Step 4', 'end': '6', 'block type': 'derivation',},\n"
            "'block 1': {'start': '1', 'end': 3, 'block_type': \"problem understanding\"},}\n```\nThanks")
    blocks = blocks_from_json(loads(text))
    assert blocks == [Block(1, 3, "problem understanding"), Block(4, 6, "derivation")]
    assert parse_blocks("{'block 1': {'start': '25/8', 'end': '3', 'block type': 'x'}}", 3)[1][0].startswith(
        "unparsable: not a step index")
    assert loads("{a: [1, 2,], b: None, c: problem understanding}") == {
        "a": [1, 2], "b": None, "c": "problem understanding"}


def test_llm_chunker_retries_until_valid_and_prompt_numbers_steps():
    tok = tiny_tokenizer()
    steps = StepSegmenter(tok).segment(enc(tok, "one\n\ntwo\n\nthree"))
    answers = ["not json at all", "{'block 1': {'start': '1', 'end': '2', 'block type': 'x'}}",
               "{'block 1': {'start': 1, 'end': 1, 'block type': 'x'}, 'block 2': {'start': 2, 'end': 3, "
               "'block type': 'y'}}"]
    engine = ScriptedEngine(tok, answers)
    result = asyncio.run(LLMChunker(engine).chunk("Q?", steps))
    assert result.valid and result.attempts == 3 and result.blocks == [Block(1, 1, "x"), Block(2, 3, "y")]
    assert result.errors[0][0].startswith("unparsable") and "coverage" in result.errors[1][0]
    assert "Step 1: one\nStep 2: two\nStep 3: three" in chunk_prompt("Q?", steps)
    thoughts = thoughts_from_blocks(steps, result.blocks)
    assert [t.text for t in thoughts] == ["one\n\n", "two\n\nthree"]
    failing = asyncio.run(LLMChunker(ScriptedEngine(tok, ["{}"]), max_attempts=5).chunk("Q?", steps))
    assert not failing.valid and failing.attempts == 5


def test_rule_chunker_cuts_at_markers_and_size_and_covers_everything():
    tok = tiny_tokenizer()
    text = "\n\n".join(["Read it", "Add", "Wait, check", "Again", "x", "y", "z", "So the answer is 5"])
    steps = StepSegmenter(tok).segment(enc(tok, text))
    blocks = RuleChunker(min_steps=2, max_steps=3).chunk(steps)
    assert validate_blocks(blocks, len(steps)) == []
    assert [(b.start, b.end, b.kind) for b in blocks] == [
        (1, 2, "problem understanding"), (3, 5, "reflection"), (6, 7, "derivation"), (8, 8, "conclusion")]


# ----------------------------------------------------------------------------------- entropy


def test_token_entropy_matches_a_hand_computation():
    model, tok = tiny_model(seed=3)
    prompt, chain = enc(tok, "Q: 2 + 3?"), enc(tok, " 2 + 3 = 5")
    [entropy] = token_entropies(model, [(prompt, chain)])
    logits = model(input_ids=torch.tensor([prompt + chain])).logits[0].double()
    for j in (0, len(chain) - 1):  # chain token j is predicted at position len(prompt) - 1 + j
        row = logits[len(prompt) - 1 + j].tolist()
        top = max(row)
        weights = [math.exp(z - top) for z in row]
        total = sum(weights)
        hand = -sum((w / total) * math.log2(w / total) for w in weights)
        assert entropy[j].item() == pytest.approx(hand, abs=1e-4)
    assert entropy_bits(torch.zeros(1, 8)).item() == pytest.approx(3.0)  # uniform over 8: 3 bits


def test_batched_pass_equals_step_by_step_with_padding():
    model, tok = tiny_model(seed=1)
    segmenter = StepSegmenter(tok)
    pairs = [(enc(tok, "Question one"), enc(tok, "Add 12.\n\nThen 30.\n\nSo 42")),
             (enc(tok, "Q2"), enc(tok, "x\n\ny")), (enc(tok, "Q3 is longer than the others"), enc(tok, "5"))]
    batched = token_entropies(model, pairs, max_batch_tokens=64)  # forces two passes, padded rows
    for (prompt, chain), got in zip(pairs, batched):
        steps = segmenter.segment(chain)
        assert torch.allclose(got, stepwise_token_entropies(model, prompt, chain, steps), atol=1e-4)
        scores = step_entropies(got, steps)
        for step, mean, total, body in zip(steps, scores.mean, scores.total, scores.body):
            assert total == pytest.approx(float(got[step.scored.start:step.scored.stop].sum()), abs=1e-5)
            assert mean == pytest.approx(total / len(step.scored), abs=1e-5)
            after_opener = got[step.scored.start + OPENER_TOKENS:step.scored.stop]
            assert body == pytest.approx(float(after_opener.mean()) if len(after_opener) else mean, abs=1e-5)


# ----------------------------------------------------------------------------------- pruning


def test_pruning_keeps_order_and_counts():
    texts = ["s0\n\n", "s1\n\n", "s2\n\n", "s3\n\n", "s4"]
    scores = [0.5, 0.1, 0.9, 0.1, 0.3]
    assert prune_count(0.6, 5) == 3 and prune_count(0.8, 5) == 4 and prune_count(1.0, 5) == 5
    assert select_steps(scores, 0.4, "low") == [1, 3]  # stable among the tied 0.1s
    assert select_steps(scores, 0.4, "high") == [0, 2]
    assert prune_text(texts, [1, 3]) == "s0\n\n[SKIP]s2\n\n[SKIP]s4"
    assert prune_text(texts, [0, 1, 2, 3, 4]) == "[SKIP]" * 5
    for kappa in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        for strategy in ("low", "random", "high"):
            chosen = select_steps(scores, kappa, strategy, seed="p1")
            assert len(chosen) == math.floor(kappa * 5 + 1e-9) and chosen == sorted(set(chosen))
            pruned = prune_text(texts, chosen)
            assert pruned.count(SKIP) == len(chosen)
            kept = [t for i, t in enumerate(texts) if i not in chosen]
            assert pruned.replace(SKIP, "") == "".join(kept)  # kept steps verbatim, in order
    assert select_steps(scores, 0.6, "random", seed="p1") == select_steps(scores, 0.6, "random", seed="p1")


def test_answer_after_pruning_end_to_end_on_the_tiny_model():
    model, tok = tiny_model(seed=0)
    engine = HFEngine(model, tok, max_batch_size=16, seed=0)
    fmt = ChainFormat(answer_prefix="The final answer is $\\boxed{")
    segmenter = StepSegmenter(tok)
    chain_ids = enc(tok, "Add 2 and 3.\n\nWait, check.\n\nSo 5")
    chain = Chain("p0", "What is 2 + 3?", "5", fmt.thinking_prompt_ids(tok, "What is 2 + 3?"), chain_ids,
                  tok.decode(chain_ids), True)
    steps = [segmenter.segment(chain_ids)]
    results = asyncio.run(answer_after_pruning(
        engine, [chain], steps, {"mean": [[0.3, 0.1, 0.2]], "sum": [[0.1, 0.3, 0.2]]}, kappas=(0.0, 0.4, 1.0),
        sampling=fmt.answer_sampling(0.0, 4), verifier=Verifier(fallbacks=False), fmt=fmt))
    assert len(results) == 18 and all(r.answer.startswith(fmt.answer_prefix) for r in results)
    low = {(r.score, r.kappa): r for r in results if r.strategy == "low"}
    assert low["mean", 0.4].pruned == [1] and low["mean", 0.4].thinking == "Add 2 and 3.\n\n[SKIP]So 5"
    assert low["sum", 0.4].pruned == [0]  # each score ranks the steps its own way
    full = sum(s.num_tokens for s in steps[0])
    assert low["mean", 0.0].thinking_tokens == full and low["mean", 1.0].thinking_tokens == 3  # one token per [SKIP]
    # kappa 0 and 1 give one thinking each for all strategies and scores, and random ignores the score:
    # each distinct pruned thinking is answered once
    assert engine.stats.requests == len({r.thinking for r in results})
    random = {(r.score, r.kappa): r.pruned for r in results if r.strategy == "random"}
    assert all(random["mean", k] == random["sum", k] for k in (0.0, 0.4, 1.0))
    cells = summarise(results)
    expected = {(score, s, k) for score in ("mean", "sum") for s in ("low", "random", "high") for k in (0.0, 0.4, 1.0)}
    assert {(c.score, c.strategy, c.kappa) for c in cells} == expected


# -------------------------------------------------------------------------------------- [SKIP]


def test_skip_token_is_one_token_drawn_like_the_other_rows_and_survives_decoding():
    model, tok = tiny_model(seed=0)
    before = model.get_input_embeddings().weight.detach().clone()
    [skip_id] = add_tokens(model, tok, [SKIP])
    assert skip_id == before.shape[0] and model.get_input_embeddings().weight.shape[0] == before.shape[0] + 1
    row = model.get_input_embeddings().weight[skip_id].detach()
    z = (row - before.mean(dim=0)) / before.std(dim=0)  # per-dimension z-scores: a typical row, not the mean
    assert abs(float(z.mean())) < 0.4 and 0.7 < float(z.std()) < 1.3
    other, other_tok = tiny_model(seed=0)
    add_tokens(other, other_tok, [SKIP])
    assert torch.equal(other.get_input_embeddings().weight[skip_id], row)  # every load draws the same row
    ids = enc(tok, "a[SKIP][SKIP]b")
    assert ids.count(skip_id) == 2
    assert tok.decode(ids, skip_special_tokens=True) == "a[SKIP][SKIP]b"
    assert add_tokens(model, tok, [SKIP]) == [skip_id] and len(tok) == skip_id + 1  # idempotent


def _episode(text: str, correct: bool, tokens: int = 10) -> Episode:
    turn = Turn("single", [1], list(range(tokens)), [0.0] * tokens, text, "stop", "v")
    return Episode("p", 0, "q", "5", [turn], Outcome("answered", text, "single", "5", correct))


def test_skip_rewards_pay_compression_only_for_correct_answers():
    high = "[SKIP][SKIP][SKIP][SKIP]kept\n\n</think>\n\n\\boxed{5}"  # rho = 4 / 5
    mid = "[SKIP]a\n\n[SKIP]b</think>\\boxed{5}"  # rho = 2 / 3
    assert skip_stats(high).ratio == pytest.approx(0.8) and skip_stats(mid).ratio == pytest.approx(2 / 3)
    ctx = RewardContext(agents={})
    group = [_episode(high, True), _episode(high, False), _episode(mid, True), _episode("plain", True)]
    assert skip_ratio(group, "single", ctx) == [1.0, 0.0, 0.5, 0.0]
    spam = "[SKIP]" * 101 + "</think>"
    assert skip_count([_episode(spam, True), _episode(spam, False), _episode(high, True)], "single", ctx) == [
        -1.0, -1.0, 0.0]
    assert skip_length([_episode("x", True, 3501), _episode("x", False, 3500)], "single", ctx) == [-1.0, 0.0]
    strict = RewardContext(agents={}, skip=SkipRewardsConfig(count_penalty=-2.0, max_tokens=5))
    assert skip_count([_episode(spam, True)], "single", strict) == [-2.0]
    assert skip_length([_episode("x", True, 6)], "single", strict) == [-1.0]


def test_sft_examples_from_pruned_answers():
    rows = [{"problem_id": "p", "strategy": "low", "kappa": 0.8, "thinking": "[SKIP]So 5", "correct": True,
             "answer": "The final answer is $\\boxed{5}$"},
            {"problem_id": "p", "strategy": "low", "kappa": 0.8, "thinking": "x", "correct": False, "answer": "4"},
            {"problem_id": "p", "strategy": "random", "kappa": 0.8, "thinking": "y", "correct": True, "answer": "5"}]
    [example] = sft_examples(rows, {"p": {"question": "Q?", "answer": "5"}})
    assert example["turns"] == [{"role": "single",
                                 "text": "<think>\n[SKIP]So 5\n</think>\n\nThe final answer is $\\boxed{5}$"}]
    assert example["question"] == "Q?" and example["answer"] == "5"


@pytest.mark.parametrize("score", ["mean", "sum"])
def test_entropy_skip_coldstart_prunes_the_lowest_steps_of_the_chosen_score(tmp_path, score):
    """sft.skip_score picks what the [SKIP] cold start ranks; each record says which, with its scores."""
    from longshort.coldstart import entropy_skip_coldstart
    from longshort.config import SFTConfig, load_config
    from longshort.data import synthetic_problems

    model, tok = tiny_model(seed=0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    config = load_config("skip_longcot_tiny", [f"agents.single.model.name_or_path={tmp_path / 'model'}",
                                               "agents.single.model.dtype=fp32", f"sft.skip_score={score}"])
    problems = synthetic_problems(6, seed=0)
    [path] = entropy_skip_coldstart(config, problems, tmp_path / "coldstart").values()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and all(r["meta"]["score"] == score for r in records)
    for record in records:
        scores, pruned = record["meta"]["step_entropy"], record["meta"]["pruned"]
        assert pruned == select_steps(scores, 0.8, "low") and len(pruned) == prune_count(0.8, len(scores))
        assert record["turns"][0]["text"].count(SKIP) == len(pruned)
    if score == "sum":  # a step's summed entropy is its mean times its token count: never below the mean
        mean = _coldstart_scores(config, problems, tmp_path, "mean")
        assert all(s >= m - 1e-6 for r in records for s, m in zip(r["meta"]["step_entropy"], mean[r["id"]]))
        assert any(r["meta"]["step_entropy"] != mean[r["id"]] for r in records)
    assert set(SFTConfig.__dataclass_fields__["skip_score"].metadata["choices"]) == set(SCORES)


def _coldstart_scores(config, problems, tmp_path, score: str) -> dict[str, list[float]]:
    from longshort.coldstart import entropy_skip_coldstart

    config.sft.skip_score = score
    [path] = entropy_skip_coldstart(config, problems, tmp_path / score).values()
    return {r["id"]: r["meta"]["step_entropy"] for r in map(json.loads, path.read_text().splitlines())}


# --------------------------------------------------------------------------- importance, synthesis


def test_importance_scores_each_thought_by_its_marginal_gain_over_the_prefix_before():
    tok = tiny_tokenizer()
    # prefixes: empty, T1, T1+T2, T1+T2+T3 -- 2 rollouts each, answered in that order
    engine = ScriptedEngine(tok, ["5}$", "4}$", "5}$", "4}$", "5}$", "5}$", "5}$", "5}$"])
    fmt = ChainFormat(answer_prefix="The final answer is $\\boxed{")
    result = asyncio.run(score_thoughts(engine, "p", "Q?", "5", ["Restate.\n\n", "Add 2 and 3.\n\n", "So 5."],
                                        n_rollouts=2, sampling=SamplingParams(), verifier=Verifier(fallbacks=False),
                                        fmt=fmt))
    assert result.baseline == 0.5  # A_0, no thinking: one of two right
    assert [t.accuracy for t in result.thoughts] == [0.5, 1.0, 1.0]  # the raw A_i are kept
    # the restatement adds nothing over A_0, the step adds 0.5, the summary after it nothing
    # (the cumulative A_i * delta would credit all three, the summary as much as the step)
    assert [t.gain for t in result.thoughts] == [0.0, 0.5, 0.0]
    for t in result.thoughts:
        assert t.score == pytest.approx(t.gain * t.decay) and abs(t.score) <= abs(t.gain) <= 1.0
    assert [t.score > 0 for t in result.thoughts] == [False, True, False]
    old = {**result.to_dict(), "thoughts": [{k: v for k, v in t.items() if k != "gain"} | {"score": t["accuracy"]}
                                            for t in result.to_dict()["thoughts"]]}
    assert rescore(old) == result.to_dict()  # a line scored the old way is re-scored from its raw A_i
    assert result.thoughts[-1].decay == pytest.approx(math.exp(-1))
    assert decay(10, 10, "linear") == 0.0 and decay(0, 10, "linear") == 1.0
    assert tok.decode(engine.prompts[6]).endswith("Add 2 and 3.\n\nSo 5.\n</think>\n\nThe final answer is $\\boxed{")


def thoughts_of(*rows: tuple[str, float, float]) -> list[dict]:
    """Scored thoughts (text, A_i, S_i = the gain) as ``importance`` writes them."""
    return [{"text": text, "accuracy": accuracy, "score": score} for text, accuracy, score in rows]


def test_synthesis_alternates_roles_and_passes_the_agents_format_checks():
    record = {"id": "p", "question": "2 apples and 3 more, then four times as many, then 6 eaten?", "answer": "14",
              "thoughts": thoughts_of(
                  ("<think>\nUnderstand: 2 apples, then 3 more.", 0.0, 0.0),
                  ("So 2 + 3 = 5 apples.", 0.2, 0.2),
                  ("Hmm, wait. Let me recount: 2 + 3 = 5.", 0.2, 0.0),
                  ("Four times that: 5 * 4 = 20.", 0.2, 0.0),
                  ("Key step: 20 - 6 = 14 left.", 1.0, 0.8),
                  ("Check again. 14 + 6 = 20. Fine.", 1.0, 0.0))}
    assert runs({0, 2}, 4) == [(True, [0]), (False, [1]), (True, [2]), (False, [3])]
    assert important_thoughts([0.0, 0.5, 0.2], SynthesisConfig(top_fraction=0.3)) == {1}
    assert important_thoughts([0.0, 0.5, 0.2], SynthesisConfig(top_fraction=0.3, keep_first=True)) == {0, 1}
    assert important_thoughts([0.0, 0.5, 0.2], SynthesisConfig(threshold=0.15)) == {1, 2}
    assert important_thoughts([0.0, -0.2, 0.0], SynthesisConfig(top_fraction=1.0)) == set()  # no gain, no long turn
    transcript = asyncio.run(synthesize(record)).transcript
    assert [t["text"] for t in transcript["turns"]] == [
        "<think>\nSo 2 + 3 = 5 apples.\n</think>",
        "<answer>\n5 * 4 = 20.\n</rethink>",  # the recount repeats 2 + 3 = 5: gone
        "<think>\nKey step: 20 - 6 = 14 left.\n</think>",
        "<answer>\nThe final answer is \\boxed{14}.\n</answer>"]  # the backwards check repeats 20 - 6 = 14
    assert check_transcript(transcript["turns"]) == []
    long_agent, short_agent = LongThoughtAgent("long"), ShortThoughtAgent("short")
    assert long_agent.check_format(transcript["turns"][0]["text"], "stop").kind == "think"
    assert short_agent.check_format(transcript["turns"][1]["text"], "stop").kind == "handback"
    assert short_agent.check_format(transcript["turns"][-1]["text"], "stop").kind == "final"
    assert asyncio.run(synthesize(record)).thoughts == {"long": 2, "compressed": 1, "dropped": 3}
    # a chain ending on an important thought still gets a final short answer
    record["thoughts"][5]["score"] = 0.95
    ending = asyncio.run(synthesize(record)).transcript
    assert [t["role"] for t in ending["turns"]][-2:] == ["long", "short"] and check_transcript(ending["turns"]) == []
    for thought in record["thoughts"]:
        thought["accuracy"] = 0.0  # never reaches the gold answer: no transcript
    assert asyncio.run(synthesize(record)).drop == "never_reaches_gold"


DERIVED_LATE = {"id": "p", "question": "12 apples and 13 more, then four times as many?", "answer": "100",
                "thoughts": thoughts_of(
                    ("The question asks for the apples.", 0.0, 0.0),
                    ("First 12 + 13 = 25 apples.", 0.0, 0.0),  # the rollouts cannot finish from here yet
                    ("Then 25 * 4 = 100 apples.", 1.0, 1.0),
                    ("Let me check: 100 / 4 = 25. Yes.", 1.0, 0.0),
                    ("To sum up: 12 + 13 = 25, then 25 * 4 = 100.", 1.0, 0.0))}


@pytest.mark.parametrize("keep_first", [True, False])
@pytest.mark.parametrize("end_at", ["last", "first"])
@pytest.mark.parametrize("top_fraction", [0.1, 0.3, 1.0])
def test_no_transcript_rule_deletes_the_derivation_before_the_first_important_thought(keep_first, end_at,
                                                                                       top_fraction):
    """Only the last step lifts the rollouts' accuracy; the step it builds on must not vanish, under any
    combination of the lean rules (the old keep_first=false + end_at=first taught "25 * 4 = 100" alone)."""
    config = SynthesisConfig(top_fraction=top_fraction, keep_first=keep_first, end_at=end_at)
    transcript = asyncio.run(synthesize(DERIVED_LATE, config)).transcript
    text = "\n".join(t["text"] for t in transcript["turns"])
    assert "12 + 13 = 25" in text and "25 * 4 = 100 apples" in text and check_transcript(transcript["turns"]) == []
    assert "Let me check" not in text and "To sum up" not in text
    if not keep_first:  # the long agent speaks first: the derivation's equation opens its turn
        assert transcript["turns"][0]["text"] == "<think>\n12 + 13 = 25.\n\nThen 25 * 4 = 100 apples.\n</think>"
    # no thought adds to the no-thinking accuracy: no long thought, the derivation's equations are the long turn
    flat = {**DERIVED_LATE, "thoughts": [{**t, "score": 0.0} for t in DERIVED_LATE["thoughts"]]}
    assert asyncio.run(synthesize(flat, config)).transcript["turns"][0]["text"] == (
        "<think>\nThe question asks for the apples.\n</think>" if keep_first
        else "<think>\n12 + 13 = 25. 25 * 4 = 100.\n</think>")


def test_a_transcript_whose_kept_arithmetic_does_not_lead_to_the_answer_is_dropped():
    async def vague(question: str, text: str) -> str:  # a compressor that loses the derivation
        return "Add the apples."

    result = asyncio.run(synthesize(DERIVED_LATE, SynthesisConfig(), vague))
    assert result.transcript is None and result.drop == "inconsistent" and "uses 25" in result.detail
    wrong = {**DERIVED_LATE, "answer": "101"}  # the kept steps give 100
    assert asyncio.run(synthesize(wrong)).drop == "inconsistent"
    assert inconsistency("x - 2 = 3. So x = 5.", "Find x when x - 2 = 3.", "5") is None
    assert inconsistency("25 * 4 = 100.", "12 apples and 13 more, four times?", "100").startswith(
        "25 * 4 = 100 uses 25")
    assert inconsistency("It is seven.", "Q?", "7") == "nothing kept states the answer 7"


def test_every_turn_fits_its_agents_max_new_tokens():
    tok = tiny_tokenizer()
    step = "Then 25 * 4 = 100 apples, since each of the four crates holds the same twenty five apples."
    record = {"id": "p", "question": "12 apples and 13 more, then four times as many?", "answer": "100",
              "thoughts": thoughts_of(("First 12 + 13 = 25 apples, counting both baskets together as one.", 0.5, 0.5),
                                      (f"{step}\n\nSo there are 100 apples.", 1.0, 0.5))}
    cap = TurnCaps.of(tok, 0, 0).count(f"<think>\n{step}\n</think>")
    caps = TurnCaps.of(tok, cap, 64)
    result = asyncio.run(synthesize(record, SynthesisConfig(top_fraction=1.0), caps=caps))
    turns = result.transcript["turns"]
    assert all(caps.count(t["text"]) <= (cap if t["role"] == "long" else 64) for t in turns)
    # both thoughts together do not fit one turn, the second not even alone: split at thoughts, then steps
    assert [t["role"] for t in turns] == ["long", "short", "long", "short", "long", "short"]
    assert turns[1]["text"] == turns[3]["text"] == "<answer>\nContinue.\n</rethink>" and step in turns[2]["text"]
    assert check_transcript(turns) == []
    assert asyncio.run(synthesize(record, SynthesisConfig(top_fraction=1.0), caps=TurnCaps.of(tok, cap - 1, 64))
                       ).drop == "turn_too_long"  # a step longer than the cap cannot be split further
    assert asyncio.run(synthesize(record, SynthesisConfig(top_fraction=1.0), caps=TurnCaps.of(tok, cap, 8))
                       ).drop == "turn_too_long"  # nor can the final short turn
    # six turns and their tokens must also fit what an episode allows
    for max_turns, max_tokens in ((5, None), (None, sum(caps.count(t["text"]) for t in turns) - 1)):
        assert asyncio.run(synthesize(record, SynthesisConfig(top_fraction=1.0), caps=TurnCaps.of(
            tok, cap, 64, max_turns, max_tokens))).drop == "episode_too_long"


def test_entropy_analysis_ranks_steps_by_each_chosen_score_and_keeps_its_chains(tiny_dir, tmp_path, monkeypatch):
    from longshort.analysis import chains as chains_module
    from longshort.analysis import entropy
    from longshort.analysis.redundancy import pruning_results

    received, sampled = [], []

    async def spy(engine, chains, steps, rankings, **kwargs):
        received.append(rankings)
        return await answer_after_pruning(engine, chains, steps, rankings, **kwargs)

    real_generate = chains_module.generate_chains

    async def counting_generate(*args, **kwargs):
        sampled.append(1)
        return await real_generate(*args, **kwargs)

    monkeypatch.setattr(entropy, "answer_after_pruning", spy)
    monkeypatch.setattr(chains_module, "generate_chains", counting_generate)
    out, model = tmp_path / "analysis", tmp_path / "model"
    shutil.copytree(tiny_dir, model)  # its weights' mtime changes below
    argv = ["--model", str(model), "--dtype", "fp32", "--device", "cpu", "--limit", "3", "--strategies", "low",
            "--chain-tokens", "24", "--answer-tokens", "2", "--out", str(out)]
    entropy.main(argv + ["--kappas", "0.5", "--score", "mean", "body", "sum"])
    summary = json.loads((out / "results.json").read_text())
    assert summary["settings"]["score"] == ["mean", "body", "sum"] and len(sampled) == 1
    assert received[-1] == {name: [c[name] for c in summary["per_chain"]] for name in ("mean", "body", "sum")}
    for name in ("mean", "body", "sum"):  # every score's cell reads back as a table row
        results, score = pruning_results(out, "low", 0.5, f"low {name}", score=name)
        assert results.settings["score"] == name and score.removed == sum(len(c["steps"]) // 2
                                                                         for c in summary["per_chain"])
    with pytest.raises(ValueError, match="--score including"):
        pruning_results(out, "low", 0.5, "x", score="nonexistent")

    # Started again with other kappas and scores: the chains are reused, not sampled again ...
    entropy.main(argv + ["--kappas", "0.8", "--score", "sum"])
    again = json.loads((out / "results.json").read_text())
    assert len(sampled) == 1 and again["timings"]["chains_reused"] is True
    assert [c["steps"] for c in again["per_chain"]] == [c["steps"] for c in summary["per_chain"]]
    # ... unless the weights they came from changed (same folder, retrained)
    weights = next(model.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    entropy.main(argv + ["--kappas", "0.8", "--score", "sum"])
    assert len(sampled) == 2


def test_analysis_commands_report_a_user_error_in_one_line(tmp_path, monkeypatch, capsys):
    from longshort.analysis import entropy
    from longshort.analysis.cli_common import run_command
    from longshort.models import ModelNotFoundError

    argv = ["python -m longshort.analysis.entropy", "--model", str(tmp_path / "missing"), "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        run_command(entropy.main)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and "Traceback" not in err and len(err.splitlines()) == 1
    monkeypatch.setattr("sys.argv", argv + ["--debug"])  # --debug: the traceback, as in longshort.train
    with pytest.raises(ModelNotFoundError):
        run_command(entropy.main)


def test_importance_figure_is_written(tmp_path):
    from longshort.analysis.importance import ImportanceResult, ThoughtScore, plot_importance

    def thought(i, accuracy):
        return ThoughtScore(i, "plan", f"t{i}", 10 * (i + 1), int(4 * accuracy), 4, accuracy, 0.9, 0.25, 0.9 * 0.25)

    results = [ImportanceResult("a", "q", "1", 0.25, [thought(0, 0.5), thought(1, 1.0)]),
               ImportanceResult("b", "q", "2", 0.0, [thought(0, 0.25)])]
    path = plot_importance(results, tmp_path / "figs" / "importance.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
