"""A decode step of SmolLM2-135M (bf16 where the CPU runs it natively) four ways, alternating in one
process and fed the same tokens: transformers as it comes (SDPA attention, a ``DynamicCache`` that
appends with ``torch.cat``), with ``longshort.engines.decode_attention``, with that plus the in-place
cache of ``longshort.engines.decode_cache``, and with those plus the weights laid out once for oneDNN
(``longshort.engines.packed_weights``; the HF engine's path on CPU for a bf16 model). Milliseconds per
step for a batch of left-padded rows of real text at a few context lengths, the ratios, and for a
bf16 model how far each one's next-token distributions are from fp32 SDPA's (total variation
distance: bf16 rounding either way; in fp32 the tests hold them equal to 1e-5).

    python benchmarks/decode_step.py [--batch 32] [--contexts 128 256 512] [--steps 32] [--breakdown]

``--breakdown`` then profiles the engine's path (torch.profiler, operators' self time) and splits a
step into the weight matrix products (every ``nn.Linear``, the vocabulary head included, with the rate
they ran at), attention and the rest: whether a faster step needs fewer or faster matrix products
or less of everything around them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch

from longshort.data import synthetic_problems
from longshort.engines.decode_attention import NAME
from longshort.engines.decode_cache import grow
from longshort.engines.hf_cache import cache_kwarg, returned_cache
from longshort.engines.packed_weights import PackedWeights
from longshort.engines.packed_weights import applies as packed_applies
from longshort.models import load_model

WAYS = {"transformers": ("sdpa", False, False), "decode attention": (NAME, False, False),
        "+ in-place cache": (NAME, True, False), "+ packed weights": (NAME, True, True)}
PARTS = {"weight matrix products": ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise"),
         "attention": ("aten::bmm", "aten::_softmax", "aten::masked_fill_", "aten::bitwise_not")}


def laid_out(model, packed: bool):
    """The engine's laid-out weights for the block when ``packed`` and the engine would lay them out for
    this model here (``packed_weights.applies``); otherwise the model's own."""
    return PackedWeights(model).installed(0) if packed and packed_applies(model) else contextlib.nullcontext()


def decode(model, prompt: torch.Tensor, mask: torch.Tensor, steps: int, in_place: bool,
           forced: torch.Tensor | None = None, around=contextlib.nullcontext
           ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seconds per decode step after a prefill, the tokens fed (greedy, or ``forced``) and their log-probabilities;
    ``around`` is entered for the decode steps only (not the prefill)."""
    keep = grow if in_place else (lambda cache: cache)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=prompt, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        position, tokens, logprobs = positions[:, -1:] + 1, [], []
        began = time.perf_counter()
        with around():
            for step in range(steps):
                token = out.logits[:, -1].argmax(-1, keepdim=True) if forced is None else forced[step]
                tokens.append(token)
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
                out = model(input_ids=token, attention_mask=mask, position_ids=position,
                            **cache_kwarg(keep(returned_cache(out))), use_cache=True, logits_to_keep=1)
                position = position + 1
                logprobs.append(out.logits[:, -1].float().log_softmax(-1))
        seconds = (time.perf_counter() - began) / steps
    return seconds, torch.stack(tokens), torch.stack(logprobs)


def breakdown(model, prompt: torch.Tensor, mask: torch.Tensor, steps: int) -> None:
    """Print where the engine's decode step goes: ``PARTS`` by operators' self time under torch.profiler."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    decode(model, prompt, mask, steps, True, around=lambda: profiler)
    spent = {event.key: event.self_cpu_time_total / 1e3 / steps for event in profiler.key_averages()}  # ms per step
    total = sum(spent.values())
    weights = sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    parts = {name: sum(spent.get(key, 0.0) for key in keys) for name, keys in PARTS.items()}
    parts["everything else"] = total - sum(parts.values())
    rate = 2 * weights * len(prompt) / (parts["weight matrix products"] / 1e3) / 1e9
    print(f"    where a step goes (profiled, {total:.1f} ms/step with the profiler's overhead): "
          + ", ".join(f"{name} {ms:.1f} ms ({ms / total:.0%})" for name, ms in parts.items())
          + f"; the weight products ran at {rate:.0f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=32, help="decode steps per measurement (the in-place cache "
                        "grows every 64 positions, so steps of 64 or more include its copies)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="also profile the engine's path (see docstring)")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m")
    text = " ".join(p.prompt + " " + " ".join(p.meta["steps"]) for p in synthetic_problems(400, seed=0))
    corpus = torch.tensor(tokenizer.encode(text))
    dtype = next(model.parameters()).dtype
    print(f"SmolLM2-135M {dtype}, batch {args.batch}, {args.steps} decode steps, threads={torch.get_num_threads()}")
    reference = copy.deepcopy(model).float() if dtype != torch.float32 else None
    if reference is not None:
        reference.set_attn_implementation("sdpa")
    generator = torch.Generator().manual_seed(0)
    for context in args.contexts:
        starts = torch.randint(0, len(corpus) - context, (args.batch,), generator=generator).tolist()
        prompt = torch.stack([corpus[start: start + context] for start in starts])  # real text, different per row
        mask = torch.ones_like(prompt)
        for row in range(0, args.batch, 4):  # a quarter of the rows left-padded by up to half the context
            mask[row, : (row * context) // (2 * args.batch)] = 0
        seconds: dict[str, list[float]] = {way: [] for way in WAYS}
        logprobs, tokens = {}, None
        for _ in range(args.repeats):
            for way, (attention, in_place, packed) in WAYS.items():  # the same tokens fed to all: the first way's
                model.set_attn_implementation(attention)                  # greedy choices
                with laid_out(model, packed):
                    took, tokens, logprobs[way] = decode(model, prompt, mask, args.steps, in_place, tokens)
                seconds[way].append(took)
        best = {way: min(values) for way, values in seconds.items()}
        base = best["transformers"]
        print(f"context {context:4d}: " + ", ".join(f"{way} {1000 * s:6.1f} ms/step ({base / s:.2f}x)"
                                                    for way, s in best.items()))
        if args.breakdown:
            model.set_attn_implementation(NAME)
            with laid_out(model, True):
                breakdown(model, prompt, mask, args.steps)
        if reference is not None:  # how far each is from fp32: bf16 rounding either way
            _, _, exact = decode(reference, prompt, mask, args.steps, False, tokens)
            for way, values in logprobs.items():
                gap = (values.softmax(-1) - exact.softmax(-1)).abs().sum(-1) / 2
                print(f"    {way} vs fp32 SDPA: total variation of the next-token distribution "
                      f"mean {gap.mean():.1e}, max {gap.max():.1e}")


if __name__ == "__main__":
    main()
