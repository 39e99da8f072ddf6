"""Token and step entropy of chains of thought, from one batched teacher-forced forward pass.

The step-entropy paper scores the j-th token of step i by the Shannon entropy (log base 2) of the
model's full next-token distribution given the question and everything before it. The released code
kept only ``-p log p`` of the sampled token (one term of the sum); here the whole vocabulary counts.
The distribution is the raw T=1 softmax of the logits, whatever temperature sampled the chain
(vLLM's V1 engine, which the released code ran on, reports logprobs before temperature too).

All of a chain's entropies come out of one forward pass over ``prompt + chain``: causal attention
means position t sees exactly the context the token was sampled in, so there is no need to run the
model step by step. Many chains go through together, right-padded and packed by a token budget.
Right padding needs no attention mask at all (the causal mask already keeps every real position from
seeing the padding after it), which keeps attention on its fast unmasked path (~30% faster here).
The vocabulary projection is the memory hog (positions x vocabulary floats), so it runs only on chain
positions, in slices, straight from the backbone's hidden states. ``stepwise_token_entropies`` is
the slow way (one forward per step over the growing prefix), kept as the reference the batched pass
is tested and benchmarked against.

Precision: in fp32 the batched and step-by-step entropies agree to ~1e-5 bits. In bf16 they differ by
up to ~0.5 bits per token (mean ~0.04) because the rounding depends on the batch shape; step means
average most of it out, but pass ``dtype=fp32`` (about 3x slower on CPU) when exact values matter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from longshort.analysis.steps import Step

LN2 = math.log(2.0)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits) over the last dimension, computed in fp32.

    With z = logits - max and e = exp(z): H = log(sum e) - sum(e * z) / sum(e) nats. Written with
    in-place ops on one buffer because, for a small model, this pass over positions x vocabulary
    floats costs as much as the forward pass itself (30% faster than ``log_softmax`` on CPU).
    """
    z = logits.to(torch.float32, copy=True)  # worked on in place; the caller's logits stay intact
    z.sub_(z.amax(dim=-1, keepdim=True))
    e = z.exp()
    total = e.sum(dim=-1)
    return (total.log() - e.mul_(z).sum(dim=-1) / total) / LN2


def _project(model, hidden: torch.Tensor) -> torch.Tensor:
    """The model's logits for hidden states (its output head plus any final soft-capping)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Row indices grouped longest first so rows x longest row stays within the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


@torch.inference_mode()
def token_entropies(model, sequences: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                    max_batch_tokens: int = 16384, head_rows: int = 512) -> list[torch.Tensor]:
    """Entropy (bits) of the next-token distribution at every chain token, for many chains at once.

    ``sequences`` holds ``(prompt_ids, chain_ids)`` pairs; the result's i-th tensor has one value per
    token of chain i: the entropy of the distribution that token was drawn from. ``max_batch_tokens``
    bounds rows x padded length per forward pass; ``head_rows`` bounds the positions projected onto
    the vocabulary at once (``head_rows x vocabulary`` fp32 logits).
    """
    for prompt, chain in sequences:
        if not prompt:
            raise ValueError("each chain needs a non-empty prompt: the first chain token is predicted from it")
    device = next(model.parameters()).device
    lengths = [len(p) + len(c) for p, c in sequences]
    results: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    backbone = model.base_model
    for rows in _batches(lengths, max_batch_tokens):
        width = lengths[rows[0]]
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        for r, index in enumerate(rows):
            prompt, chain = sequences[index]
            ids[r, : lengths[index]] = torch.tensor([*prompt, *chain])
        hidden = backbone(input_ids=ids.to(device)).last_hidden_state
        # position t predicts token t + 1: chain tokens are predicted from len(prompt) - 1 onwards
        picks = [(r, len(sequences[i][0]) - 1, len(sequences[i][1])) for r, i in enumerate(rows)]
        gathered = torch.cat([hidden[r, start:start + n] for r, start, n in picks])
        values = torch.cat([entropy_bits(_project(model, part)) for part in gathered.split(head_rows)]) \
            if len(gathered) else torch.empty(0)
        for (r, _, n), index, part in zip(picks, rows, values.cpu().split([n for _, _, n in picks])):
            results[index] = part
    return results


@torch.inference_mode()
def stepwise_token_entropies(model, prompt_ids: Sequence[int], chain_ids: Sequence[int],
                             steps: Sequence[Step]) -> torch.Tensor:
    """The same entropies as ``token_entropies`` for one chain, the slow way: for every step, run the
    model on the whole prefix up to that step's end and project only that step's positions."""
    device = next(model.parameters()).device
    out = torch.zeros(len(chain_ids))
    for step in steps:
        ids = torch.tensor([[*prompt_ids, *chain_ids[: step.end]]], device=device)
        # the step's tokens are predicted at the n positions before the last one
        logits = model(input_ids=ids, logits_to_keep=step.num_tokens + 1).logits[0, :-1]
        out[step.start:step.end] = entropy_bits(logits).cpu()
    return out


OPENER_TOKENS = 2  # a step's first tokens, which say what kind of step comes next (see StepEntropy.body)


@dataclass
class StepEntropy:
    """Per-step scores of one chain: ``mean`` is the paper's length-normalised step entropy (v2, used
    for ranking); ``total`` is the v1 sum, the quantity Theorem 1 bounds the information by.

    ``body`` (not the paper's) is the mean over the step's content after its first ``OPENER_TOKENS``
    tokens (the whole step when it is no longer than that). Why: a step's opener ("Wait,", "So")
    carries the choice of what kind of step comes next, which is uncertain for every kind of step
    alike, while the redundancy of a step (a re-check copies numbers already written) shows in how
    predictable its content is. On chains with known redundancy (``analysis.redundancy``) this
    separates the two; on a model's own chains it is a lever to try, not the paper's method.
    """

    mean: list[float]
    total: list[float]
    body: list[float]

    def ranking(self, score: str) -> list[float]:
        """The scores one of ``pruning.SCORES`` names."""
        return {"mean": self.mean, "sum": self.total, "body": self.body}[score]


def step_entropies(token_entropy: torch.Tensor, steps: Sequence[Step]) -> StepEntropy:
    """Aggregate token entropies over each step's content tokens (``Step.scored``)."""
    means, totals, bodies = [], [], []
    for step in steps:
        values = token_entropy[step.scored.start:step.scored.stop]
        body = values[OPENER_TOKENS:] if len(values) > OPENER_TOKENS else values
        totals.append(float(values.sum()))
        means.append(float(values.mean()) if len(values) else 0.0)
        bodies.append(float(body.mean()) if len(body) else 0.0)
    return StepEntropy(means, totals, bodies)
