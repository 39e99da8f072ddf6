"""The RL maths against hand computations: advantage estimators, PPO-clip, KL estimators, entropy."""
from __future__ import annotations

import math

import pytest
import torch

from longshort.algos import (ADVANTAGE_ESTIMATORS, compute_advantages, entropy_from_logits, kl_penalty,
                             masked_sum, ppo_clip_loss, register_advantage)
from longshort.registry import UnknownNameError

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0],
                        [2.0, 0.0, 1.0, 1.0]])


def _flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def test_group_norm_is_trl_grpo():
    # group 1: mean 0.5, unbiased std sqrt(1/3); group 2: mean 1, unbiased std sqrt(2/3)
    s1, s2 = math.sqrt(1 / 3), math.sqrt(2 / 3)
    expected = [[0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), 0.5 / (s1 + 1e-4)],
                [1 / (s2 + 1e-4), -1 / (s2 + 1e-4), 0.0, 0.0]]
    assert compute_advantages("group_norm", REWARDS).flatten().tolist() == pytest.approx(_flat(expected), rel=1e-6)


def test_reinforce_baseline_centres_per_group_and_scales_by_the_batch_std():
    centred = [[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]]
    batch_std = math.sqrt((4 * 0.25 + 2 * 1.0) / 8)  # population std over all 8 (mean already 0)
    expected = [[c / batch_std for c in row] for row in centred]
    assert compute_advantages("reinforce_baseline", REWARDS).flatten().tolist() == pytest.approx(_flat(expected), rel=1e-6)


def test_rloo_subtracts_the_mean_of_the_other_samples():
    expected = [[1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3],
                [2 - 2 / 3, 0 - 4 / 3, 1 - 1.0, 1 - 1.0]]
    assert compute_advantages("rloo", REWARDS).flatten().tolist() == pytest.approx(_flat(expected), rel=1e-6)


@pytest.mark.parametrize("name", ["group_norm", "reinforce_baseline", "rloo"])
def test_equal_rewards_give_no_signal(name):
    assert compute_advantages(name, torch.full((2, 4), 0.7)).abs().max() < 1e-6


@pytest.mark.parametrize("name", ["group_norm", "reinforce_baseline", "rloo"])
def test_episodes_the_agent_did_not_act_in_are_left_out_of_the_group(name):
    """A masked episode gets 0 and does not move the statistics of the others: the result on the acting
    entries equals the estimator on the group with the masked entries removed."""
    rewards = torch.tensor([[1.0, 0.0, -5.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False, True, True]])
    got = compute_advantages(name, rewards, mask)
    alone = compute_advantages(name, torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    assert got[0, 2] == 0
    assert got[mask].tolist() == pytest.approx(alone[0].tolist(), rel=1e-6)


@pytest.mark.parametrize("name", ["group_norm", "reinforce_baseline", "rloo"])
def test_a_group_with_one_acting_episode_has_nothing_to_compare(name):
    rewards = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    got = compute_advantages(name, rewards, mask)
    assert got[0].tolist() == [0.0, 0.0, 0.0]
    assert got[1].abs().sum() > 0


def test_estimators_are_a_registry():
    assert {"group_norm", "reinforce_baseline", "rloo"} <= set(ADVANTAGE_ESTIMATORS.names())
    with pytest.raises(UnknownNameError, match="did you mean 'rloo'"):
        compute_advantages("rlo", REWARDS)

    @register_advantage("test_raw_reward")
    def raw(rewards, mask):
        return rewards

    assert compute_advantages("test_raw_reward", REWARDS).tolist() == REWARDS.tolist()


# ------------------------------------------------------------------------------------------- PPO-clip


def _loss_and_grad(logp: float, old: float, advantage: float, eps: float = 0.2):
    logprobs = torch.tensor([[logp]], requires_grad=True)
    terms = ppo_clip_loss(logprobs, torch.tensor([[old]]), torch.tensor([advantage]), torch.ones(1, 1), clip_eps=eps)
    terms.loss.backward()
    return terms, float(logprobs.grad)


def test_ppo_gradient_raises_the_probability_of_a_positive_advantage_and_lowers_a_negative_one():
    _, grad = _loss_and_grad(-1.0, -1.0, advantage=2.0)
    assert grad == pytest.approx(-2.0)  # d/dlogp of -rho*A at rho = 1; descent raises logp
    _, grad = _loss_and_grad(-1.0, -1.0, advantage=-0.5)
    assert grad == pytest.approx(0.5)


def test_ppo_clipping_stops_the_gradient_outside_the_trust_region():
    # rho = e^0.5 > 1.2 with A > 0: the clipped term is the min, constant -> no gradient
    terms, grad = _loss_and_grad(-0.5, -1.0, advantage=1.0)
    assert grad == 0.0 and terms.clipped_tokens == 1
    assert float(terms.loss.detach()) == pytest.approx(-1.2)
    # rho = e^-0.5 < 0.8 with A < 0: clipped as well
    terms, grad = _loss_and_grad(-1.5, -1.0, advantage=-1.0)
    assert grad == 0.0 and terms.clipped_tokens == 1
    # rho > 1 + eps with A < 0 is NOT clipped (pessimistic bound): the gradient stays
    terms, grad = _loss_and_grad(-0.5, -1.0, advantage=-1.0)
    assert grad == pytest.approx(math.exp(0.5)) and terms.clipped_tokens == 0


def test_ppo_loss_is_a_token_mean_over_the_batch_and_ignores_masked_positions():
    logprobs = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    terms = ppo_clip_loss(logprobs, logprobs, torch.tensor([1.0, -2.0]), mask, clip_eps=0.2)
    assert float(terms.loss.detach()) == pytest.approx((-1 - 1 + 2) / 3)
    # an explicit normaliser (the whole batch's tokens) divides the same sum
    terms = ppo_clip_loss(logprobs, logprobs, torch.tensor([1.0, -2.0]), mask, clip_eps=0.2, normalizer=6)
    assert float(terms.loss.detach()) == pytest.approx(0.0)
    terms = ppo_clip_loss(logprobs, logprobs, torch.tensor([1.0, 1.0]), mask, clip_eps=0.2, normalizer=6)
    assert float(terms.loss.detach()) == pytest.approx(-3 / 6)


def test_micro_batches_with_the_batch_normaliser_accumulate_to_the_full_batch_gradient():
    torch.manual_seed(0)
    logp = torch.randn(4, 5, requires_grad=True)
    old, adv = logp.detach() + 0.1 * torch.randn(4, 5), torch.randn(4)
    mask = (torch.rand(4, 5) > 0.3).float()
    ppo_clip_loss(logp, old, adv, mask, clip_eps=0.2).loss.backward()
    full = logp.grad.clone()
    logp.grad = None
    for rows in (slice(0, 1), slice(1, 4)):
        ppo_clip_loss(logp[rows], old[rows], adv[rows], mask[rows], clip_eps=0.2,
                      normalizer=mask.sum()).loss.backward()
    assert torch.allclose(logp.grad, full, atol=1e-6)


def test_kl_penalty_adds_beta_times_the_token_mean_kl():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    terms = ppo_clip_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), clip_eps=0.2,
                          ref_logprobs=ref, kl_coef=0.04)
    k3 = [math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1.0 - 1]
    assert float(terms.kl) == pytest.approx(sum(k3))
    assert float(terms.loss.detach()) == pytest.approx(0.04 * sum(k3) / 2)


# ------------------------------------------------------------------------------------- KL and entropy


def test_k3_matches_a_direct_computation_and_is_non_negative():
    torch.manual_seed(1)
    logp, ref = -torch.rand(100) * 5, -torch.rand(100) * 5
    direct = [math.exp(r - l) - (r - l) - 1 for l, r in zip(logp.tolist(), ref.tolist())]
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx(direct, rel=1e-5, abs=1e-6)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx((logp - ref).tolist())
    assert kl_penalty(logp, ref, "k2").tolist() == pytest.approx((0.5 * (logp - ref) ** 2).tolist())
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(logp, ref, "k4")


def test_k3_is_an_unbiased_estimate_of_the_kl():
    """Sampling tokens from p: the mean of k3 over samples approaches KL(p || q)."""
    torch.manual_seed(2)
    p, q = torch.softmax(torch.randn(6), 0), torch.softmax(torch.randn(6), 0)
    tokens = torch.multinomial(p, 200_000, replacement=True)
    estimate = kl_penalty(p.log()[tokens], q.log()[tokens], "k3").mean()
    assert float(estimate) == pytest.approx(float((p * (p / q).log()).sum()), rel=0.03)


def test_entropy_and_masked_sum():
    uniform = torch.zeros(2, 8)
    assert entropy_from_logits(uniform).tolist() == pytest.approx([math.log(8)] * 2)
    peaked = torch.tensor([[100.0, 0.0, 0.0]])
    assert float(entropy_from_logits(peaked)) == pytest.approx(0.0, abs=1e-6)
    assert float(masked_sum(torch.tensor([1.0, 5.0, 3.0]), torch.tensor([1.0, 0.0, 1.0]))) == 4.0


def test_masked_positions_cannot_make_the_loss_nan():
    """A partner's or padding token can have ref - logp far beyond fp32's exp range: k3 there is inf,
    and inf * 0 would be NaN. Masking selects, so the loss stays finite and equals the unmasked part."""
    logprobs = torch.tensor([[-1.0, -1.0, -200.0]], requires_grad=True)
    ref = torch.tensor([[-1.1, -0.9, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    terms = ppo_clip_loss(logprobs, logprobs.detach(), torch.tensor([1.0]), mask, clip_eps=0.2,
                          ref_logprobs=ref, kl_coef=0.1)
    assert torch.isinf(torch.exp(ref - logprobs.detach())).any()
    assert torch.isfinite(terms.loss) and torch.isfinite(terms.kl)
    terms.loss.backward()
    assert torch.isfinite(logprobs.grad).all() and logprobs.grad[0, 2] == 0
    assert masked_sum(torch.tensor([1.0, float("nan"), 2.0]), torch.tensor([1, 0, 1])) == 3.0
