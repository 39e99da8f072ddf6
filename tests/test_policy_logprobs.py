"""The RL update's forward pass (shared prefix, logits at action tokens only, chunked log-softmax) gives
the log-probabilities, entropies, loss and gradients of the plain computation: every row run through
the whole model and the full-vocabulary logits of the micro-batch log-softmaxed at once. A pass's
prompt encoded once for all its micro-batches gives the gradients of encoding it in each."""
from __future__ import annotations

import random

import pytest
import torch

from longshort.algos import entropy_from_logits, masked_sum, ppo_clip_loss
from longshort.config import TrainerConfig
from longshort.episode import TrainingSample
from longshort.models import tiny_model
from longshort.trainers import policy as policy_module
from longshort.trainers.policy import MicroBatch, Policy

TEMPERATURE = 0.7


def _samples(vocab: int, *, shared: int, rows: int = 5, seed: int = 0) -> list[TrainingSample]:
    """Rows with a common opening of ``shared`` tokens, then a question, then two own turns around a
    partner turn (masked), of different lengths."""
    rng = random.Random(seed)
    opening = [rng.randrange(3, vocab) for _ in range(shared)]
    samples = []
    for row in range(rows):
        question = [rng.randrange(3, vocab) for _ in range(3 + row % 2)]
        own1, partner, own2 = ([rng.randrange(3, vocab) for _ in range(n)] for n in (4 + row, 3, 2 + 2 * row))
        ids = opening + question + own1 + partner + own2
        mask = [0] * (len(opening) + len(question)) + [1] * len(own1) + [0] * len(partner) + [1] * len(own2)
        logprobs = [-rng.random() * 3 if m else 0.0 for m in mask]
        samples.append(TrainingSample(role="long", input_ids=ids, action_mask=mask, logprobs=logprobs,
                                      advantage=rng.choice([-1.0, 0.5, 1.5])))
    return samples


def _plain_logprobs(model, batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain computation: full forward, full-vocabulary logits from ``start`` on, then log-softmax."""
    keep = batch.input_ids.shape[1] - batch.start + 1
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, :-1].float() / TEMPERATURE
    targets = batch.input_ids[:, batch.start:]
    logprobs = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    return logprobs, entropy_from_logits(logits.detach())


def _loss_and_grads(policy: Policy, batch: MicroBatch, compute) -> tuple:
    policy.zero_grad()
    logprobs, entropy = compute(batch)
    terms = ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, batch.action_mask, clip_eps=0.2,
                          normalizer=float(batch.action_mask.sum()))
    terms.loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.model.named_parameters()}
    return terms.loss.detach(), logprobs.detach() * batch.action_mask, masked_sum(entropy, batch.action_mask), grads


@pytest.mark.parametrize("shared, chunk, checkpointing", [(20, 3, False), (20, 512, False), (0, 4, False),
                                                          (20, 3, True), (0, 512, True)])
def test_update_forward_matches_plain_computation(shared, chunk, checkpointing, monkeypatch):
    monkeypatch.setattr(policy_module, "LOGPROB_CHUNK", chunk)
    model, tokenizer = tiny_model(seed=1)
    policy = Policy("long", model, tokenizer, TrainerConfig(gradient_checkpointing=checkpointing),
                    temperature=TEMPERATURE, optimizer_steps=1)
    batch = MicroBatch.collate(_samples(len(tokenizer), shared=shared), policy.pad_id, policy.device)
    assert (batch.shared > 0) == (shared > 0)
    policy.train_mode()
    fast = _loss_and_grads(policy, batch, lambda b: policy.logprobs(b, with_entropy=True))
    plain = _loss_and_grads(policy, batch, lambda b: _plain_logprobs(policy.model, b))
    assert torch.allclose(fast[0], plain[0], atol=1e-6)
    assert torch.allclose(fast[1], plain[1], atol=1e-5)
    assert torch.allclose(fast[2], plain[2], atol=1e-4)
    for name, grad in plain[3].items():
        assert torch.allclose(fast[3][name], grad, atol=1e-6, rtol=1e-4), name
    with torch.no_grad():  # the reference model's path (no gradient, no checkpointing)
        assert torch.allclose(policy.logprobs(batch)[0] * batch.action_mask, plain[1], atol=1e-5)


def test_shared_prefix_stops_before_the_first_predicting_position():
    samples = _samples(500, shared=20)
    batch = MicroBatch.collate(samples, 0, torch.device("cpu"))
    first_action = min(s.action_mask.index(1) for s in samples)
    assert batch.start == first_action and 20 <= batch.shared <= first_action - 1
    assert MicroBatch.collate(samples[:1], 0, torch.device("cpu")).shared == 0  # one row: nothing to share
    assert MicroBatch.collate(_samples(500, shared=5), 0, torch.device("cpu")).shared == 0  # too short to pay


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_output_projection_runs_again_in_the_backward_pass_only_under_checkpointing(checkpointing, monkeypatch):
    """By default each chunk's logits are kept for the backward pass (no second output projection);
    ``trainer.gradient_checkpointing`` trades one more projection per chunk for their memory."""
    monkeypatch.setattr(policy_module, "LOGPROB_CHUNK", 3)
    model, tokenizer = tiny_model(seed=1)
    policy = Policy("long", model, tokenizer, TrainerConfig(gradient_checkpointing=checkpointing),
                    temperature=TEMPERATURE, optimizer_steps=1)
    batch = MicroBatch.collate(_samples(len(tokenizer), shared=20), policy.pad_id, policy.device)
    rows = []
    model.get_output_embeddings().register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    logprobs, _ = policy.logprobs(batch)
    forward = list(rows)
    (logprobs * batch.action_mask).sum().backward()
    assert sum(forward) == int(batch.action_mask.sum())  # the action positions, in chunks of 3
    assert rows[len(forward):] == (list(reversed(forward)) if checkpointing else [])


@pytest.mark.parametrize("shared", [20, 0])
def test_row_checkpointing_recomputes_each_row_once_and_the_prefix_never(shared):
    model, tokenizer = tiny_model(seed=1)
    policy = Policy("long", model, tokenizer, TrainerConfig(gradient_checkpointing=True), temperature=TEMPERATURE,
                    optimizer_steps=1)
    batch = MicroBatch.collate(_samples(len(tokenizer), shared=shared), policy.pad_id, policy.device)
    rows = []
    # a pre-hook: torch stops a recomputation once it has what backward needs, before the layer returns
    model.model.layers[0].mlp.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[:2]))
    logprobs, _ = policy.logprobs(batch)
    forward = list(rows)
    (logprobs * batch.action_mask).sum().backward()
    lengths = [int(n) - batch.shared for n in batch.attention_mask.sum(dim=1)]
    # forward: the prefix once (a batch of one), then every row alone and without its padding
    assert forward == ([(1, batch.shared)] if shared else []) + [(1, n) for n in lengths]
    assert rows[len(forward):] == [(1, n) for n in reversed(lengths)]  # backward: each row again, never the prefix


@pytest.mark.parametrize("checkpointing, dtype", [(False, torch.float32), (True, torch.float32),
                                                  (False, torch.bfloat16)])
def test_a_pass_encodes_the_prefix_of_all_its_micro_batches_once(checkpointing, dtype):
    """Three micro-batches (a group sharing its question too, a single row, two questions): the
    system prompt runs once for the pass, and the losses and gradients equal running it in each."""
    model, tokenizer = tiny_model(seed=1)
    model.to(dtype)
    policy = Policy("long", model, tokenizer, TrainerConfig(gradient_checkpointing=checkpointing),
                    temperature=TEMPERATURE, optimizer_steps=1)
    samples = _samples(len(tokenizer), shared=20, rows=5)
    group = _samples(len(tokenizer), shared=20, rows=2, seed=0)  # seed 0 again: row 0's opening
    # the group's second row asks row 0's question (3 tokens), then has turns of its own
    group[1] = TrainingSample(role="long", input_ids=group[0].input_ids[:23] + group[1].input_ids[24:],
                              action_mask=[0] * 23 + group[1].action_mask[24:],
                              logprobs=[0.0] * 23 + group[1].logprobs[24:], advantage=group[1].advantage)
    batches = [MicroBatch.collate(rows, policy.pad_id, policy.device) for rows in (group, samples[1:2], samples[2:4])]
    assert (batches[0].shared, batches[1].shared, batches[2].shared) == (22, 0, 20)
    normalizer = float(sum(b.action_mask.sum() for b in batches))
    opening = samples[0].input_ids[:20]
    encoded = []  # (rows, length) of every forward that starts at the opening's first token
    model.model.embed_tokens.register_forward_pre_hook(
        lambda _, args: encoded.append(tuple(args[0].shape)) if args[0][0, :20].tolist() == opening else None)

    def pass_grads(shared_once: bool) -> tuple[list[float], dict]:
        policy.zero_grad()
        encoded.clear()
        prefix = policy.pass_prefix(batches) if shared_once else None
        losses = []
        for batch in batches:
            logprobs, _ = policy.logprobs(batch, prefix=prefix)
            terms = ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, batch.action_mask, clip_eps=0.2,
                                  normalizer=normalizer)
            terms.loss.backward()
            losses.append(float(terms.loss.detach()))
        if prefix is not None:
            assert prefix.length == 20
            prefix.backward()
        return losses, {name: p.grad.float().clone() for name, p in model.named_parameters()}

    policy.train_mode()
    once_losses, once = pass_grads(True)
    assert encoded == [(1, 20)]  # the system prompt once; every micro-batch (and each recomputed row) starts after it
    each_losses, each = pass_grads(False)
    # the other two micro-batches encode their prefixes (22 and 20 tokens), the single row runs whole
    assert encoded.count((1, 22)) == encoded.count((1, 20)) == 1
    assert set(encoded) == {(1, 22), (1, 20), (1, len(samples[1].input_ids))}
    tolerance = dict(atol=1e-6, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=5e-2)
    assert once_losses == pytest.approx(each_losses, rel=tolerance["rtol"], abs=tolerance["atol"])
    for name, grad in each.items():
        assert torch.allclose(once[name], grad, **tolerance), name
