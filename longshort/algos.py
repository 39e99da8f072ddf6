"""The RL maths, as pure tensor functions: advantage estimators, the PPO-clip loss, KL estimators.

Nothing here knows about models, episodes or agents, so every formula can be checked by hand (see
``tests/test_algos.py``) and reused by any trainer.

**Advantages** are computed from one scalar reward per episode, shaped ``[n_groups, G]`` (a group is
the G samples of one problem), by an estimator registered by name (``trainer.algorithm``)::

    @register_advantage("my_estimator")
    def my_estimator(rewards: Tensor, mask: Tensor) -> Tensor: ...

``mask`` marks the episodes the trained agent acted in. In a multi-agent episode an agent may never
get a turn (the long agent's malformed first turn ends the episode before the short agent speaks).
Such an episode has no training sample for that agent, and its reward says nothing about that agent's
behaviour, so it is left out of the group's statistics: the baseline (mean), the spread (std) and the
leave-one-out means are taken over the acting episodes only, and a group with fewer than two acting
episodes gives advantage 0 (there is nothing to compare a lone sample with). Excluded entries get
advantage 0. Counting them would pull the baseline towards the reward of "not acting" and credit or
blame the agent for a partner's failure.

**The policy loss** is PPO-clip per action token, summed and divided by a token count (see
``ppo_clip_loss`` for why token-mean). **KL** to the frozen reference uses Schulman's estimators
k1/k2/k3 per token; the paper's TRL 0.16 GRPO adds ``beta * k3`` to each token's loss.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from longshort.registry import ADVANTAGE_ESTIMATORS

AdvantageEstimator = Callable[[Tensor, Tensor], Tensor]

GROUP_NORM_EPS = 1e-4  # TRL 0.16 GRPO: (r - mean) / (std + 1e-4)
BATCH_NORM_EPS = 1e-8  # OpenRLHF's whole-batch advantage normalisation


def register_advantage(name: str):
    """Decorator: make an estimator available to recipes as ``trainer.algorithm: name``."""
    return ADVANTAGE_ESTIMATORS.register(name)


def compute_advantages(name: str, rewards: Tensor, mask: Tensor | None = None) -> Tensor:
    """Advantages ``[n_groups, G]`` by the estimator ``name``; ``mask`` (bool) marks acting episodes."""
    rewards = rewards.double()  # small groups of near-equal rewards: keep the statistics exact
    mask = torch.ones_like(rewards, dtype=torch.bool) if mask is None else mask.bool()
    if rewards.dim() != 2 or mask.shape != rewards.shape:
        raise ValueError(f"rewards must be [n_groups, G] with a mask of the same shape; got "
                         f"{tuple(rewards.shape)} and {tuple(mask.shape)}")
    advantages = ADVANTAGE_ESTIMATORS.get(name)(rewards, mask)
    return advantages.masked_fill(~mask, 0.0).float()


def _group_stats(rewards: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per group: the count of acting episodes, their mean reward, and each entry minus that mean."""
    count = mask.sum(dim=1, keepdim=True).to(rewards.dtype)
    mean = (rewards * mask).sum(dim=1, keepdim=True) / count.clamp(min=1)
    centred = (rewards - mean) * mask
    return count, mean, centred


@register_advantage("group_norm")
def group_norm(rewards: Tensor, mask: Tensor) -> Tensor:
    """GRPO (TRL 0.16, the paper): ``(r - mean_g) / (std_g + 1e-4)``, unbiased std over the group.

    A group whose rewards are all equal gets 0 everywhere (no signal, no update), as in TRL.
    """
    count, _, centred = _group_stats(rewards, mask)
    std = ((centred ** 2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
    return centred / (std + GROUP_NORM_EPS)


@register_advantage("reinforce_baseline")
def reinforce_baseline(rewards: Tensor, mask: Tensor) -> Tensor:
    """REINFORCE++-baseline (OpenRLHF): ``r - mean_g``, then divided by the std over the whole batch.

    Dividing by the batch std instead of each group's keeps the scale of a group with a small spread
    (a near-solved problem) from being blown up to unit variance. The batch mean of ``r - mean_g`` is
    already zero, so only the division remains of the normalisation. OpenRLHF normalises over action
    tokens; here each acting episode counts once (the estimator sees rewards, not token counts).
    """
    _, _, centred = _group_stats(rewards, mask)
    n = mask.sum().clamp(min=1)
    batch_std = ((centred ** 2).sum() / n).sqrt()
    return centred / (batch_std + BATCH_NORM_EPS)


@register_advantage("rloo")
def rloo(rewards: Tensor, mask: Tensor) -> Tensor:
    """RLOO: ``r_i - mean of the other acting samples of the group`` = ``n/(n-1) * (r_i - mean_g)``."""
    count, _, centred = _group_stats(rewards, mask)
    return centred * count / (count - 1).clamp(min=1)


# ---------------------------------------------------------------------------------- token-level terms


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum of ``values`` where ``mask`` is non-zero. Masked by selection, not multiplication: an inf or
    NaN at a masked position (a partner's or padding token, where ``ref - logp`` can exceed the ~88 nats
    at which fp32 ``exp`` overflows) must not turn the sum, and so the loss, into NaN (inf * 0 = NaN)."""
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    With ``d = ref - logp`` (Schulman, "Approximating KL divergence"): k1 = ``-d`` (unbiased, can be
    negative), k2 = ``d^2 / 2`` (biased, low variance), k3 = ``exp(d) - d - 1`` (unbiased, always
    >= 0; TRL's GRPO and OpenRLHF's default).
    """
    d = ref_logprobs - logprobs
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d ** 2
    if estimator == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of: k1, k2, k3")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax over the last dimension, per position (logits already divided by T)."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


@dataclass
class PolicyLossTerms:
    """The pieces of one micro-batch's loss; ``loss`` is what backward runs on."""

    loss: Tensor
    policy_loss: Tensor  # the PPO part alone, same normalisation
    kl: Tensor  # sum of per-token KL over action tokens (0 without a reference)
    clipped_tokens: Tensor  # action tokens whose clipped term was the active one
    tokens: Tensor  # action tokens in this micro-batch


def ppo_clip_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                  clip_eps: float, normalizer: float | Tensor | None = None,
                  ref_logprobs: Tensor | None = None, kl_coef: float = 0.0,
                  kl_estimator: str = "k3") -> PolicyLossTerms:
    """PPO-clip with an optional KL penalty, token-level: the paper's (TRL 0.16) GRPO loss.

    Per action token t of sequence i, with ``rho = exp(logp - logp_old)``::

        l_t = -min(rho * A_i, clip(rho, 1 - eps, 1 + eps) * A_i) + kl_coef * KL_t

    and the loss is ``sum_t l_t / normalizer``. Token-mean (``normalizer`` = the number of action
    tokens in the whole batch) rather than sequence-mean (average per sequence, then over sequences)
    because DAPO argues for it: every generated token weighs the same, so a long wrong answer is not
    diluted by being long. This whole-batch token mean is TRL's ``loss_type="dapo"``; TRL 0.16 (the
    paper's) averaged per micro-batch instead (later named ``bnpo``), which equals it only when every
    micro-batch holds the same number of action tokens. When a batch is split into micro-batches, pass
    the whole batch's token count as ``normalizer`` so that the accumulated gradient equals the
    gradient of the full-batch loss. Shapes: ``[B, T]`` for the per-token tensors, ``[B]`` for
    ``advantages``; ``mask`` is 1 on action tokens.
    """
    mask = mask.to(logprobs.dtype)
    normalizer = mask.sum().clamp(min=1) if normalizer is None else normalizer
    # Off the action tokens (a partner's or padding tokens) the rollout and reference log-probs are
    # replaced by the policy's own, so every term there is exp(0)-sized: masking selects the terms
    # away, but an inf there would still make their gradient 0 * inf = NaN.
    keep = mask.bool()
    old_logprobs = torch.where(keep, old_logprobs, logprobs.detach())
    if ref_logprobs is not None:
        ref_logprobs = torch.where(keep, ref_logprobs, logprobs.detach())
    advantages = advantages[:, None].to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    per_token = -torch.min(unclipped, clipped)
    policy_loss = masked_sum(per_token, mask) / normalizer
    kl = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    loss = policy_loss
    if ref_logprobs is not None:
        per_token_kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)
        kl = masked_sum(per_token_kl, mask)
        loss = loss + kl_coef * kl / normalizer
    clipped_tokens = masked_sum((clipped < unclipped).to(logprobs.dtype), mask)
    return PolicyLossTerms(loss=loss, policy_loss=policy_loss.detach(), kl=kl.detach(),
                           clipped_tokens=clipped_tokens.detach(), tokens=mask.sum().detach())
