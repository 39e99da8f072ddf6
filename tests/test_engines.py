"""Generation engines: the embedded HF engine on a tiny random model, vLLM against a fake module, the
remote engine against a local HTTP server that answers like vLLM's OpenAI server."""
from __future__ import annotations

import asyncio
import enum
import json
import random
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from longshort.engines import hf
from longshort.engines import Engine, Generation, HFEngine, RemoteEngine, SamplingParams, VLLMEngine, build_engine
from longshort.models import tiny_model
from scripted import varied_tiny_model

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)
TEXTS = ["Hello there", "What is 2+2? Let me think about this carefully, step by step.", "a",
         "The quick brown fox jumps over", "Solve for x: 3x + 5 = 20"]


@pytest.fixture(scope="module")
def tiny():
    return varied_tiny_model()


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny[1](text).input_ids for text in TEXTS]


def run_all(engine, prompts, sampling):
    """Issue every request concurrently, as the episodes of a rollout do."""
    params = sampling if isinstance(sampling, list) else [sampling] * len(prompts)

    async def main():
        return await asyncio.gather(*(engine.generate(p, s) for p, s in zip(prompts, params)))

    return asyncio.run(main())


def test_engine_satisfies_contract_and_registry(tiny):
    engine = build_engine("hf", model=tiny[0], tokenizer=tiny[1])
    assert isinstance(engine, HFEngine) and isinstance(engine, Engine)


def test_concurrent_requests_run_as_one_batch(tiny, prompts):
    engine = HFEngine(*tiny)
    many = [prompts[i % len(prompts)] for i in range(16)]
    results = run_all(engine, many, SamplingParams(temperature=0.0, max_new_tokens=4))
    assert engine.stats.batches == 1 and engine.stats.largest_batch == 16
    assert all(len(r.token_ids) == 4 for r in results)
    assert results[0].token_ids == results[len(prompts)].token_ids  # same prompt, same greedy tokens


def test_max_batch_size_splits_pending_requests(tiny, prompts):
    engine = HFEngine(*tiny, max_batch_size=4)
    run_all(engine, [prompts[0]] * 10, SamplingParams(temperature=0.0, max_new_tokens=2))
    assert engine.stats.batches == 3 and engine.stats.largest_batch == 4


def test_waiting_requests_join_as_rows_leave(tiny, prompts, monkeypatch):
    """More requests than rows: each waiting one takes the place of a finished row (its prefill merged
    into the running batch), and samples exactly what it would have in one batch of all of them."""
    budgets = [SamplingParams(temperature=1.0, max_new_tokens=n) for n in (9, 2, 14, 5, 1, 11, 3, 7, 20, 4)]
    many = [prompts[i % len(prompts)] + [i] for i in range(len(budgets))]  # contexts of different widths
    together, narrow = HFEngine(*tiny, seed=5), HFEngine(*tiny, seed=5, max_batch_size=3)
    widths = []
    merge = hf._merged
    monkeypatch.setattr(hf, "_merged", lambda *args: widths.append((merged := merge(*args)).mask.shape[1]) or merged)
    expected, results = run_all(together, many, budgets), run_all(narrow, many, budgets)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]
    for result, reference in zip(results, expected):
        assert torch.allclose(torch.tensor(result.logprobs), torch.tensor(reference.logprobs), atol=1e-5)
    assert narrow.stats.batches == 1 and narrow.stats.joined == 7 and narrow.stats.largest_batch == 3
    assert together.stats.joined == 0
    # the batch stays full while requests wait: 3 rows per decode step until the last 3 run out
    assert narrow.stats.forward_passes < together.stats.forward_passes + 7 + sum(b.max_new_tokens for b in budgets) // 3
    # columns no row uses any more are dropped: the batch is never wider than its longest row's context
    assert len(widths) == 7 and max(widths) <= max(len(p) + b.max_new_tokens for p, b in zip(many, budgets))


def test_a_sliding_window_model_serves_waiting_requests_batch_after_batch(tiny):
    """Sliding-window cache layers cannot be cut into rows and merged: waiting requests start the next
    batch instead of joining, with the same tokens."""
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = tiny[1]
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=4, sliding_window=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MistralForCausalLM(config).eval()
    prompt = tokenizer("Solve for x: 3x + 5 = 20").input_ids
    many = [prompt + [i] for i in range(10)]  # one width: no padding in any batch
    budgets = [SamplingParams(temperature=0.0, max_new_tokens=n) for n in (9, 2, 14, 5, 1, 11, 3, 7, 20, 4)]
    narrow, together = HFEngine(model, tokenizer, max_batch_size=3), HFEngine(model, tokenizer)
    results, expected = run_all(narrow, many, budgets), run_all(together, many, budgets)
    assert [r.token_ids for r in results] == [r.token_ids for r in expected]
    assert narrow.stats.joined == 0 and narrow.stats.batches == 4


def test_greedy_matches_model_generate_in_one_padded_batch(tiny, prompts):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    results = run_all(engine, prompts, GREEDY)
    assert engine.stats.batches == 1
    tokenizer.padding_side = "left"
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    reference = model.generate(**batch, do_sample=False, max_new_tokens=GREEDY.max_new_tokens)
    for row, result in enumerate(results):
        expected = reference[row, batch.input_ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in expected:  # generate pads after EOS; the engine stops there
            expected = expected[: expected.index(tokenizer.eos_token_id) + 1]
        assert result.token_ids == expected
        assert result.text == tokenizer.decode(result.token_ids, skip_special_tokens=True)
    assert len({tuple(r.token_ids) for r in results}) == len(results)


def test_rows_leave_the_batch_when_their_budget_ends(tiny, prompts):
    engine = HFEngine(*tiny)
    budgets = [SamplingParams(temperature=0.0, max_new_tokens=n) for n in (3, 20, 7, 1, 12)]
    results = run_all(engine, prompts, budgets)
    alone = run_all(HFEngine(*tiny), prompts, GREEDY)
    for result, budget, full in zip(results, budgets, alone):
        assert result.finish_reason == "length" and result.stop_reason is None
        assert result.token_ids == full.token_ids[: budget.max_new_tokens]
    assert engine.stats.forward_passes == 20
    assert engine.stats.forward_rows == 5 + 4 * 2 + 3 * 4 + 2 * 5 + 1 * 8  # finished rows are dropped


def first_completion(tokenizer, token_ids, stop):
    """How many tokens a generation stopped by ``stop`` keeps: up to the token that completes it."""
    return next(k for k in range(1, len(token_ids) + 1) if stop in tokenizer.decode(token_ids[:k]))


def stop_ending_inside_a_token(tokenizer, token_ids):
    """A stop string spanning a token boundary and ending in the middle of the next token on a
    printable ASCII character (the case the engine's candidate-token filter must catch)."""
    for j in range(2, len(token_ids)):
        before, upto = tokenizer.decode(token_ids[:j]), tokenizer.decode(token_ids[: j + 1])
        new = upto[len(before):]
        for end in range(1, len(new)):
            last = new[end - 1]
            if "\ufffd" not in before[-2:] + new and last.isascii() and last.isprintable() and not last.isspace():
                return before[-2:] + new[:end]
    raise AssertionError("no token boundary suitable for the test")


def clean_substring(text, length, whitespace_end=False):
    """The first ``length``-character piece of ``text`` with no undecodable bytes in it."""
    for start in range(3, len(text) - length):
        piece = text[start: start + length]
        if "\ufffd" not in piece and piece[-1].isspace() == whitespace_end:
            return piece
    raise AssertionError("no substring suitable for the test")


@pytest.mark.parametrize("kind", ["inside_token", "whitespace_end", "two_stops"])
def test_stop_strings_end_generation_and_are_kept(tiny, prompts, kind):
    model, tokenizer = tiny
    full = run_all(HFEngine(model, tokenizer), prompts[:3], GREEDY)
    params, expected_stop = [], []
    for result in full:
        text = tokenizer.decode(result.token_ids)
        if kind == "inside_token":
            stops = (stop_ending_inside_a_token(tokenizer, result.token_ids),)
        elif kind == "whitespace_end":
            stops = (clean_substring(text, 3, whitespace_end=True),)
        else:
            stops = ("never appears </rethink>", clean_substring(text, 3))
        params.append(SamplingParams(temperature=0.0, max_new_tokens=GREEDY.max_new_tokens, stop=stops))
        expected_stop.append(stops[-1])
    stopped = run_all(HFEngine(model, tokenizer), prompts[:3], params)
    for result, reference, stop in zip(stopped, full, expected_stop):
        keep = first_completion(tokenizer, reference.token_ids, stop)
        assert keep < GREEDY.max_new_tokens
        assert result.token_ids == reference.token_ids[:keep]
        assert result.finish_reason == "stop" and result.stop_reason == stop
        assert stop in tokenizer.decode(result.token_ids)
        if kind == "inside_token":
            assert not tokenizer.decode(result.token_ids).endswith(stop)  # the stop ended mid-token


def test_eos_ends_a_request_and_is_kept(tiny, prompts):
    model, tokenizer = tiny
    reference = run_all(HFEngine(model, tokenizer), prompts[:1], GREEDY)[0]
    eos = reference.token_ids[5]  # pretend this token ends a sequence, via the generation config
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, eos]
    try:
        result = run_all(HFEngine(model, tokenizer), prompts[:1], GREEDY)[0]
    finally:
        model.generation_config.eos_token_id = original
    keep = reference.token_ids.index(eos) + 1
    assert result.token_ids == reference.token_ids[:keep] and result.token_ids[-1] == eos
    assert result.finish_reason == "stop" and result.stop_reason == "eos"


@pytest.mark.parametrize("sampling", [
    SamplingParams(temperature=0.7, top_p=0.9, top_k=50, max_new_tokens=16),
    SamplingParams(temperature=1.3, max_new_tokens=16),
    SamplingParams(temperature=0.0, max_new_tokens=16),
])
def test_logprobs_equal_a_teacher_forced_forward_pass(tiny, prompts, sampling):
    model, tokenizer = tiny
    results = run_all(HFEngine(model, tokenizer, seed=1), prompts, sampling)
    temperature = sampling.temperature if sampling.temperature > 0 else 1.0
    for prompt, result in zip(prompts, results):
        sequence = torch.tensor([prompt + result.token_ids])
        with torch.no_grad():
            logits = model(sequence).logits[0, len(prompt) - 1: -1].float()
        expected = torch.log_softmax(logits / temperature, dim=-1).gather(1, sequence[0, len(prompt):, None])
        assert torch.allclose(torch.tensor(result.logprobs), expected.squeeze(1), atol=1e-4)


def test_seeded_sampling_is_reproducible(tiny, prompts):
    sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12)
    first = run_all(HFEngine(*tiny, seed=7), prompts, sampling)
    again = run_all(HFEngine(*tiny, seed=7), prompts, sampling)
    other = run_all(HFEngine(*tiny, seed=8), prompts, sampling)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    assert [r.token_ids for r in first] != [r.token_ids for r in other]


def test_truncation_to_one_token_is_greedy(tiny, prompts):
    greedy = run_all(HFEngine(*tiny), prompts, GREEDY)
    top_k = run_all(HFEngine(*tiny, seed=0), prompts, SamplingParams(temperature=2.0, top_k=1, max_new_tokens=24))
    top_p = run_all(HFEngine(*tiny, seed=0), prompts, SamplingParams(temperature=2.0, top_p=1e-6, max_new_tokens=24))
    assert [r.token_ids for r in greedy] == [r.token_ids for r in top_k] == [r.token_ids for r in top_p]


def reference_truncate(logprobs, top_k, top_p):
    """Top-k then nucleus by a full sort, row by row: the slow obvious version."""
    out = torch.full_like(logprobs, float("-inf"))
    for row, (k, p) in enumerate(zip(top_k.tolist(), top_p.tolist())):
        values, order = logprobs[row].sort(descending=True)
        keep = len(values) if k <= 0 else k
        mass = values.exp().cumsum(0) - values.exp()
        if p < 1:
            keep = min(keep, int((mass < p).sum()))
        out[row, order[:keep]] = logprobs[row, order[:keep]]
    return out


def test_truncation_matches_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3000, generator=generator) * torch.tensor([[4.0], [4.0], [0.01], [4.0], [2.0], [0.01]])
    logprobs = torch.log_softmax(logits, dim=-1)  # rows 2 and 5 are so flat their nucleus spans > 512 tokens
    top_k = torch.tensor([0, 40, 0, 700, 0, 0])
    top_p = torch.tensor([0.9, 0.5, 0.95, 1.0, 1.0, 1.0])
    truncated = hf._Sampler._truncate(logprobs, top_k, top_p)
    assert torch.equal(truncated, reference_truncate(logprobs, top_k, top_p))
    assert torch.equal(truncated[4], logprobs[4])  # no truncation asked


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.25, 0.05])
    sampler = hf._Sampler([SamplingParams(temperature=1.0)] * 4000, torch.device("cpu"),
                          [random.Random(row) for row in range(4000)])
    tokens, logprobs = sampler.sample(probs.log().expand(4000, -1))
    frequencies = torch.bincount(tokens, minlength=5) / 4000
    assert frequencies[1] == 0 and torch.allclose(frequencies, probs, atol=0.03)
    assert torch.allclose(logprobs, probs.log()[tokens])


def test_multi_turn_episodes_are_batched_turn_by_turn(tiny, prompts):
    """Episodes with staggered turn lengths: a row that finishes early asks for its next turn while
    the batch still runs; that request waits for the next batch, where all the others join it."""
    engine = HFEngine(*tiny)

    async def episode(engine, prompt, index):
        for turn in range(3):
            budget = SamplingParams(temperature=0.0, max_new_tokens=2 + 3 * turn + index)
            prompt = prompt + (await engine.generate(prompt, budget)).token_ids
        return prompt

    async def main():
        return await asyncio.gather(*(episode(engine, p, i) for i, p in enumerate(prompts)))

    transcripts = asyncio.run(main())
    assert engine.stats.requests == 3 * len(prompts) and engine.stats.batches == 3
    one_at_a_time = [asyncio.run(episode(HFEngine(*tiny), p, i)) for i, p in enumerate(prompts)]
    assert transcripts == one_at_a_time


def test_two_engines_take_turns_on_one_device(tiny, prompts):
    """Two agents with two models: both engines decode concurrently, step by step, with equal results."""
    other_model, other_tokenizer = tiny_model(seed=1)
    alone = [run_all(HFEngine(*tiny), prompts, GREEDY),
             run_all(HFEngine(other_model, other_tokenizer), prompts, GREEDY)]
    first, second = HFEngine(*tiny), HFEngine(other_model, other_tokenizer)

    async def main():
        return await asyncio.gather(asyncio.gather(*(first.generate(p, GREEDY) for p in prompts)),
                                    asyncio.gather(*(second.generate(p, GREEDY) for p in prompts)))

    together = asyncio.run(main())
    assert [[r.token_ids for r in rs] for rs in together] == [[r.token_ids for r in rs] for rs in alone]
    assert first.stats.batches == second.stats.batches == 1


def test_bad_requests(tiny, prompts):
    model, tokenizer = tiny
    engine = HFEngine(model, tokenizer)
    with pytest.raises(ValueError, match="empty"):
        asyncio.run(engine.generate([], GREEDY))
    nothing = asyncio.run(engine.generate(prompts[0], SamplingParams(max_new_tokens=0)))
    assert nothing == Generation([], [], "", "length")
    with pytest.raises(IndexError):  # a token id outside the vocabulary fails its batch, not the engine
        asyncio.run(engine.generate([model.config.vocab_size + 5], GREEDY))
    assert len(asyncio.run(engine.generate(prompts[0], GREEDY)).token_ids) == GREEDY.max_new_tokens


def test_a_bad_request_fails_alone_among_waiting_ones(tiny, prompts):
    """Six requests through two rows, the fourth with a token id outside the vocabulary: it fails when
    its turn to join comes; the rows decoding then and the requests after it are answered."""
    model, tokenizer = tiny
    budgets = [SamplingParams(temperature=0.0, max_new_tokens=n) for n in (3, 6, 2, 4, 5, 3)]
    many = [prompts[i % len(prompts)] for i in range(6)]
    many[3] = [model.config.vocab_size + 5]

    async def main(engine):
        return await asyncio.gather(*(engine.generate(p, b) for p, b in zip(many, budgets)), return_exceptions=True)

    engine = HFEngine(model, tokenizer, max_batch_size=2)
    results = asyncio.run(main(engine))
    assert isinstance(results[3], IndexError)
    alone = [asyncio.run(HFEngine(model, tokenizer).generate(p, b)) for p, b in zip(many, budgets) if p != many[3]]
    assert [r.token_ids for i, r in enumerate(results) if i != 3] == [r.token_ids for r in alone]
    assert engine.stats.joined >= 1  # some requests joined running rows; the bad one failed alone


def test_importing_engines_does_not_import_vllm():
    code = "import sys, longshort.engines; assert 'vllm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------- vLLM


class FakeCompletion(types.SimpleNamespace):
    pass


def fake_vllm_module(calls: dict):
    """A stand-in for vllm that records what the engine passes and answers like AsyncLLMEngine."""
    vllm = types.ModuleType("vllm")
    sampling_module = types.ModuleType("vllm.sampling_params")
    sampling_module.RequestOutputKind = enum.Enum("RequestOutputKind", "CUMULATIVE DELTA FINAL_ONLY")
    vllm.sampling_params = sampling_module
    vllm.SamplingParams = lambda **kw: ("SamplingParams", kw)
    vllm.TokensPrompt = lambda **kw: dict(kw)
    vllm.AsyncEngineArgs = lambda **kw: ("AsyncEngineArgs", kw)

    class AsyncLLMEngine:
        @classmethod
        def from_engine_args(cls, args):
            calls["engine_args"] = args
            return cls()

        async def generate(self, prompt, params, request_id):
            calls.setdefault("requests", []).append((prompt, params, request_id))
            ids = [7, 8, 9]
            logprobs = [{7: types.SimpleNamespace(logprob=-0.5)}, {8: types.SimpleNamespace(logprob=-1.5)},
                        {9: types.SimpleNamespace(logprob=-2.5), 3: types.SimpleNamespace(logprob=-0.1)}]
            stop = params[1]["stop"]
            finish, reason = ("stop", stop[0]) if stop else ("stop", None) if prompt["prompt_token_ids"][0] == 1 \
                else ("length", None)
            yield types.SimpleNamespace(finished=False, outputs=[])
            yield types.SimpleNamespace(finished=True, outputs=[FakeCompletion(
                token_ids=ids, logprobs=logprobs, text="ignored", finish_reason=finish, stop_reason=reason)])

    vllm.AsyncLLMEngine = AsyncLLMEngine
    return vllm, sampling_module


def test_vllm_engine_against_a_fake_vllm(monkeypatch, tiny):
    calls: dict = {}
    vllm, sampling_module = fake_vllm_module(calls)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling_module)
    tokenizer = tiny[1]
    engine = build_engine("vllm", model="org/policy", tokenizer=tokenizer, seed=3, gpu_memory_utilization=0.5)
    assert isinstance(engine, VLLMEngine) and isinstance(engine, Engine)
    assert calls["engine_args"] == ("AsyncEngineArgs", {
        "model": "org/policy", "gpu_memory_utilization": 0.5, "logprobs_mode": "processed_logprobs", "seed": 3})

    sampling = SamplingParams(temperature=0.6, top_p=0.9, top_k=0, max_new_tokens=50, stop=("</think>",))
    result = asyncio.run(engine.generate([5, 6], sampling))
    prompt, params, request_id = calls["requests"][-1]
    assert prompt == {"prompt_token_ids": [5, 6]}
    assert params == ("SamplingParams", {
        "temperature": 0.6, "top_p": 0.9, "top_k": -1, "max_tokens": 50, "stop": ["</think>"],
        "include_stop_str_in_output": True, "logprobs": 0,
        "output_kind": sampling_module.RequestOutputKind.FINAL_ONLY})
    assert result == Generation([7, 8, 9], [-0.5, -1.5, -2.5], tokenizer.decode([7, 8, 9]), "stop", "</think>")

    eos = asyncio.run(engine.generate([1, 2], SamplingParams(top_k=20)))
    assert calls["requests"][-1][1][1]["top_k"] == 20
    assert (eos.finish_reason, eos.stop_reason) == ("stop", "eos")
    length = asyncio.run(engine.generate([4], SamplingParams()))
    assert (length.finish_reason, length.stop_reason) == ("length", None)
    assert len({request_id for _, _, request_id in calls["requests"]}) == 3


def test_vllm_engine_without_vllm_says_how_to_install(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match=r"longshort\[openrlhf\]"):
        VLLMEngine("org/policy", tiny[1])


# ------------------------------------------------------------------------------------------- remote


class FakeOpenAIServer:
    """A vLLM-like /v1/completions endpoint on 127.0.0.1: echoes the last prompt tokens back."""

    def __init__(self, style: str):
        self.style, self.requests = style, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, dict(self.headers), body))
                if body["max_tokens"] == 999:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(b'{"error": "too many tokens"}')
                    return
                ids = body["prompt"][-3:]
                logprobs = {"token_logprobs": [-0.25 * (i + 1) for i in range(len(ids))], "text_offset": [0] * 3}
                choice = {"index": 0, "text": "server text", "logprobs": logprobs,
                          "finish_reason": "stop" if body.get("stop") else "length",
                          "stop_reason": body["stop"][0] if body.get("stop") else None}
                if server.style == "token_ids":
                    choice["token_ids"] = ids
                elif server.style == "token_strings":
                    logprobs["tokens"] = [f"token_id:{i}" for i in ids]
                else:
                    logprobs["tokens"] = ["a", "b", "c"]
                payload = json.dumps({"id": "cmpl-1", "object": "text_completion", "choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("style", ["token_ids", "token_strings"])
def test_remote_engine_speaks_vllm_completions(tiny, style):
    tokenizer = tiny[1]
    with FakeOpenAIServer(style) as server:
        engine = build_engine("remote", base_url=server.url + "/v1", model="policy", tokenizer=tokenizer,
                              api_key="secret", seed=5)
        assert isinstance(engine, RemoteEngine) and isinstance(engine, Engine)
        sampling = SamplingParams(temperature=0.5, top_p=0.8, top_k=10, max_new_tokens=32, stop=("</answer>",))
        results = run_all(engine, [[1, 20, 30, 40 + i] for i in range(8)], sampling)
        engine.close()
    path, headers, body = min(server.requests, key=lambda request: request[2]["prompt"])  # arrival order varies
    assert path == "/v1/completions" and headers["Authorization"] == "Bearer secret"
    assert body == {"model": "policy", "prompt": [1, 20, 30, 40], "max_tokens": 32, "temperature": 0.5,
                    "top_p": 0.8, "logprobs": 0, "return_token_ids": True, "return_tokens_as_token_ids": True,
                    "include_stop_str_in_output": True, "stop": ["</answer>"], "top_k": 10, "seed": 5}
    assert len(server.requests) == 8
    assert results[0] == Generation([20, 30, 40], [-0.25, -0.5, -0.75], tokenizer.decode([20, 30, 40]),
                                    "stop", "</answer>")


def test_remote_engine_refuses_servers_without_token_ids_and_reports_http_errors(tiny):
    with FakeOpenAIServer("text_only") as server:
        engine = RemoteEngine(server.url, "policy", tiny[1])
        with pytest.raises(RuntimeError, match="token ids"):
            asyncio.run(engine.generate([1, 2, 3], SamplingParams()))
        with pytest.raises(RuntimeError, match="HTTP 400.*too many tokens"):
            asyncio.run(engine.generate([1, 2, 3], SamplingParams(max_new_tokens=999)))
        engine.close()


# ------------------------------------------------------------------------------ decode attention


@pytest.mark.parametrize("masked", [False, True])
def test_decode_attention_equals_sdpa_with_grouped_heads(masked):
    from types import SimpleNamespace

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from longshort.engines.decode_attention import decode_attention

    generator = torch.Generator().manual_seed(0)
    query = torch.randn(3, 6, 1, 8, generator=generator)  # 6 query heads over 2 key/value heads
    key, value = torch.randn(2, 3, 2, 11, 8, generator=generator)
    mask = None
    if masked:  # left padding: row 0 hides 4 positions, row 2 one
        mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
        mask[0, ..., :4] = False
        mask[2, ..., :1] = False
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True)
    with torch.no_grad():
        ours, _ = decode_attention(module, query, key, value, mask, scaling=0.3)
        reference, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    assert ours.shape == reference.shape == (3, 1, 6, 8)
    assert torch.allclose(ours, reference, atol=1e-6)


def test_engine_decodes_with_its_attention_on_cpu_and_samples_as_with_sdpa(tiny, prompts, monkeypatch):
    """Same seeds, same tokens and log-probs as SDPA; training forwards still run SDPA's function."""
    from longshort.engines import decode_attention

    model, tokenizer = tiny
    sampling = SamplingParams(temperature=0.8, max_new_tokens=16)
    assert model.config._attn_implementation in ("sdpa", decode_attention.NAME)
    model.set_attn_implementation("sdpa")
    with monkeypatch.context() as patch:
        patch.setattr(hf, "use_for_decoding", lambda model: False)
        plain = run_all(HFEngine(model, tokenizer, seed=3), prompts, sampling)
    assert model.config._attn_implementation == "sdpa"
    ours = run_all(HFEngine(model, tokenizer, seed=3), prompts, sampling)
    assert model.config._attn_implementation == decode_attention.NAME
    for a, b in zip(plain, ours, strict=True):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    calls, real = [], decode_attention.sdpa_attention_forward
    monkeypatch.setattr(decode_attention, "sdpa_attention_forward",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    model(torch.tensor([prompts[1]])).logits.sum().backward()  # a training forward: SDPA in every layer
    model.zero_grad()
    assert len(calls) == model.config.num_hidden_layers


def test_decode_attention_leaves_other_attentions_alone():
    from longshort.engines.decode_attention import use_for_decoding

    model, _ = tiny_model(seed=1)
    model.set_attn_implementation("eager")
    assert not use_for_decoding(model) and model.config._attn_implementation == "eager"
