"""A decode step of SmolLM2-135M (bf16 where the CPU runs it natively) three ways, alternating in one
process and fed the same tokens: transformers as it comes (SDPA attention, a ``DynamicCache`` that
appends with ``torch.cat``), with ``longshort.engines.decode_attention``, and with that plus the
in-place cache of ``longshort.engines.decode_cache`` (the HF engine's path on CPU). Milliseconds per
step for a batch of left-padded rows of real text at a few context lengths, the ratios, and for a
bf16 model how far each one's next-token distributions are from fp32 SDPA's (total variation
distance: bf16 rounding either way; in fp32 the tests hold them equal to 1e-5).

    python benchmarks/decode_step.py [--batch 32] [--contexts 128 256 512] [--steps 32]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from longshort.data import synthetic_problems
from longshort.engines.decode_attention import NAME
from longshort.engines.decode_cache import grow
from longshort.engines.hf_cache import cache_kwarg, returned_cache
from longshort.models import load_model

WAYS = {"transformers": ("sdpa", False), "decode attention": (NAME, False), "+ in-place cache": (NAME, True)}


def decode(model, prompt: torch.Tensor, mask: torch.Tensor, steps: int, in_place: bool,
           forced: torch.Tensor | None = None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Seconds per decode step after a prefill, the tokens fed (greedy, or ``forced``) and their log-probabilities."""
    keep = grow if in_place else (lambda cache: cache)
    with torch.inference_mode():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=prompt, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        position, tokens, logprobs = positions[:, -1:] + 1, [], []
        began = time.perf_counter()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--steps", type=int, default=32, help="decode steps per measurement (the in-place cache "
                        "grows every 64 positions, so steps of 64 or more include its copies)")
    parser.add_argument("--repeats", type=int, default=3)
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
            for way, (attention, in_place) in WAYS.items():  # the same tokens fed to all: the first way's greedy choices
                model.set_attn_implementation(attention)
                took, tokens, logprobs[way] = decode(model, prompt, mask, args.steps, in_place, tokens)
                seconds[way].append(took)
        best = {way: min(values) for way, values in seconds.items()}
        base = best["transformers"]
        print(f"context {context:4d}: " + ", ".join(f"{way} {1000 * s:6.1f} ms/step ({base / s:.2f}x)"
                                                    for way, s in best.items()))
        if reference is not None:  # how far each is from fp32: bf16 rounding either way
            _, _, exact = decode(reference, prompt, mask, args.steps, False, tokens)
            for way, values in logprobs.items():
                gap = (values.softmax(-1) - exact.softmax(-1)).abs().sum(-1) / 2
                print(f"    {way} vs fp32 SDPA: total variation of the next-token distribution "
                      f"mean {gap.mean():.1e}, max {gap.max():.1e}")


if __name__ == "__main__":
    main()
