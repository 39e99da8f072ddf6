"""One trainable agent: its model, optimiser, learning-rate schedule, reference model and engine.

Precision: the model computes in the dtype it was loaded in (``agents.<role>.model.dtype``; ``auto``
picks bf16 where the hardware runs it natively), and the optimiser always updates fp32 **master
weights**. For a bf16 model the master copy lives here: each micro-batch's bf16 gradients are added
into fp32 master gradients, AdamW steps the master weights, and the result is cast back into the
model's own parameters in place. Why not fp32 weights under ``torch.autocast``: the rollout engine
decodes with this same model object outside the update's autocast region, so rollouts would run in
fp32 at half the speed (and autocast around them would cast every weight at every decode step,
which costs as much again). Why keep fp32 masters at all: a bf16 weight has 8 bits of
mantissa, so an update of relative size lr = 1e-5 would round away entirely.

The engine bound to a policy generates with the policy's model object, so an update in place is what
the next rollout samples from: there is no weight synchronisation step.

Memory and compute of the update's forward pass (``Policy.logprobs``), each checked against the
plain computation (one forward of every row, the full-vocabulary logits of the micro-batch, then
log-softmax) in ``tests/test_policy_logprobs.py`` for equal log-probabilities, losses and gradients:

- **Shared prefix.** Every sample of an agent opens with the same chat-templated system prompt (and
  the samples of a group with the same question too), most of a sequence at the tiny recipe's turn
  lengths. The micro-batch's common prefix runs once as a batch of one; its keys and values are
  repeated for the rows (``repeat_interleave`` is differentiable, so the gradients of the rows meet
  in the one prefix forward), and each row's rest attends to them through the cache, as SFT does.
  What every micro-batch of a pass shares (the system prompt) runs once per pass (``PassPrefix``):
  the micro-batches read its keys and values as fp32 leaf tensors, whose gradients add up over the
  micro-batches' backward passes and then flow through the prefix forward once.
- **Logits at action tokens only, in chunks.** The output projection runs only at the positions
  that predict the agent's own tokens (not the partner's turns in between), ``LOGPROB_CHUNK`` of
  them at a time. By default the backward pass keeps one copy of each chunk's fp32 logits (200 KiB
  a token for a 49k vocabulary) until the micro-batch's backward, where a whole-micro-batch
  log-softmax would hold several; under ``trainer.gradient_checkpointing`` (memory first) the chunks
  run under activation checkpointing, and the backward pass recomputes one chunk's logits at a
  time: one chunk's alive instead of all, for one more output projection of every action token.
- **Row checkpointing** (``trainer.gradient_checkpointing``). What the backward pass keeps is then
  the decoder's activations of the micro-batch's rows. Under this setting each row's rest (after the
  shared prefix, without its padding) runs under activation checkpointing by itself: the backward
  pass recomputes one row at a time, and the shared prefix, whose keys and values every row reads,
  still runs once with its gradients. HF's per-layer checkpointing cannot do this: it drops the
  cache, so the rows would no longer see the prefix (and a recomputed layer would append its keys
  to the cache a second time). Cost: one more forward pass of every row's rest.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import DynamicCache

from longshort.algos import entropy_from_logits
from longshort.config import TrainerConfig
from longshort.episode import TrainingSample
from longshort.engines.hf_cache import cache_kwarg, returned_cache
from longshort.trainers.optim import adamw, cosine_schedule

LOGPROB_CHUNK = 512  # action positions whose logits exist at once: ~100 MiB fp32 per copy at a 49k vocabulary
MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a second forward call


@dataclass
class MicroBatch:
    """Right-padded training samples. Only positions from ``start`` on hold action tokens, so the
    model computes logits for those positions alone (prompts are most of a Long-Short sequence).
    The first ``shared`` tokens are the same in every row and precede every action token's
    prediction (0: nothing worth sharing)."""

    input_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, L]
    start: int  # the first action token of any row
    action_mask: Tensor  # [B, L - start]: which targets input_ids[:, start:] are action tokens
    old_logprobs: Tensor  # [B, L - start]: rollout log-probabilities of those targets
    advantages: Tensor  # [B]
    shared: int = 0

    @classmethod
    def collate(cls, samples: Sequence[TrainingSample], pad_id: int, device: torch.device) -> "MicroBatch":
        width = max(len(s.input_ids) for s in samples)

        def pad(rows: list[list], value) -> list[list]:
            return [row + [value] * (width - len(row)) for row in rows]

        ids = torch.tensor(pad([s.input_ids for s in samples], pad_id), device=device)
        attention = torch.tensor(pad([[1] * len(s.input_ids) for s in samples], 0), device=device)
        action = torch.tensor(pad([s.action_mask for s in samples], 0), device=device)
        old = torch.tensor(pad([s.logprobs for s in samples], 0.0), dtype=torch.float32, device=device)
        start = min(s.action_mask.index(1) for s in samples)
        if start < 1:
            raise ValueError("a training sample starts with an action token: there is no prompt to predict it from")
        advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32, device=device)
        return cls(ids, attention, start, action[:, start:].float(), old[:, start:], advantages,
                   shared_prefix([s.input_ids for s in samples], start))


def shared_prefix(rows: Sequence[Sequence[int]], start: int) -> int:
    """Leading tokens common to every row that the rows can encode once: the position ``start - 1``
    predicts the first action token and has to run per row, so sharing stops before it."""
    if len(rows) < 2:
        return 0
    first, common = rows[0], min(min(len(r) for r in rows), start - 1)
    for row in rows[1:]:
        common = next((i for i in range(common) if row[i] != first[i]), common)
    return common if common >= MIN_SHARED_PREFIX else 0


class PassPrefix:
    """The keys and values of the prefix common to every micro-batch of a pass, encoded once.

    Micro-batches read them through ``cache()`` as copies of fp32 leaf tensors, so each micro-batch's
    backward pass stops at the leaves and adds its share to their gradients (in fp32, whatever the
    model's dtype); ``backward()`` then sends the sum through the prefix forward into the weights,
    once. Gradients equal running the prefix in every micro-batch, to float rounding.
    """

    def __init__(self, length: int, computed: list[tuple[Tensor, Tensor]]):
        self.length = length
        self._computed = [tensor for pair in computed for tensor in pair]  # keys and values, layer by layer
        self._leaves = [tensor.detach().float().requires_grad_(True) for tensor in self._computed]

    def cache(self) -> DynamicCache:
        """A fresh cache holding the prefix (in the model's dtype), for one micro-batch."""
        cast = [leaf.to(computed.dtype) for leaf, computed in zip(self._leaves, self._computed)]
        return DynamicCache(list(zip(cast[0::2], cast[1::2])))

    def backward(self) -> None:
        """Send the gradients the micro-batches left on the keys and values through the prefix forward."""
        pairs = [(computed, leaf.grad.to(computed.dtype)) for computed, leaf in zip(self._computed, self._leaves)
                 if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([computed for computed, _ in pairs], [grad for _, grad in pairs])


class Policy:
    """An agent's trainable model with its optimiser state.

    ``temperature`` is the agent's sampling temperature: log-probabilities are recomputed as
    ``log_softmax(logits / T)``, the distribution the engine sampled from (T = 1 for greedy agents).
    The reference model (a frozen copy of the starting weights, for the KL penalty) is made only
    when ``config.kl_coef > 0``.
    """

    def __init__(self, role: str, model, tokenizer, config: TrainerConfig, *, temperature: float,
                 optimizer_steps: int):
        if next(model.parameters()).dtype == torch.float16:
            raise ValueError(f"agent '{role}': fp16 training needs loss scaling, which this trainer does not do; "
                             "load the model in bf16 or fp32 (agents.<role>.model.dtype)")
        self.role = role
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.temperature = temperature if temperature > 0 else 1.0
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        _disable_dropout(model)
        model.eval()
        self.reference = _frozen_copy(model) if config.kl_coef > 0 else None
        self.params = [p for p in model.parameters() if p.requires_grad]
        mixed = any(p.dtype != torch.float32 for p in self.params)
        self.master = ([p.detach().float().clone().requires_grad_(True) for p in self.params] if mixed
                       else self.params)
        self.optimizer = adamw(self.master, config.lr)
        self.scheduler = cosine_schedule(self.optimizer, optimizer_steps, config.warmup_ratio)

    # ------------------------------------------------------------------ forward
    def pass_prefix(self, batches: Sequence[MicroBatch]) -> PassPrefix | None:
        """The prefix common to all ``batches``, encoded once with gradients; None when there is only
        one micro-batch (its own shared prefix is the same) or the common part is too short to pay."""
        if len(batches) < 2:
            return None
        # a micro-batch's rows agree up to its own shared prefix (a single row: up to its first prediction)
        limits = [b.shared if b.input_ids.shape[0] > 1 else b.start - 1 for b in batches]
        common = shared_prefix([b.input_ids[0, :limit].tolist() for b, limit in zip(batches, limits)], min(limits) + 1)
        if not common:
            return None
        cache = returned_cache(self.model.base_model(input_ids=batches[0].input_ids[:1, :common], use_cache=True))
        return PassPrefix(common, [(layer.keys, layer.values) for layer in cache.layers])

    def logprobs(self, batch: MicroBatch, *, reference: bool = False, with_entropy: bool = False,
                 prefix: PassPrefix | None = None) -> tuple[Tensor, Tensor | None]:
        """Log-probabilities ``[B, L - start]`` of the action tokens among ``input_ids[:, start:]`` at the
        agent's temperature, and (without gradient) the entropy of each of their distributions; both
        are 0 at the other positions, which every use masks out. ``prefix`` (``pass_prefix``) supplies
        the first positions' keys and values; the caller then owes it a ``backward()`` after the
        micro-batches' own."""
        model = self.reference if reference else self.model
        hidden, offset = self._hidden(model, batch, prefix)
        width = batch.input_ids.shape[1]
        actions = batch.action_mask.bool()  # [B, L - start]; position p predicts token p + 1
        predicting = hidden[:, batch.start - 1 - offset: width - 1 - offset][actions]  # [N, hidden]
        targets = batch.input_ids[:, batch.start:][actions]
        head = model.get_output_embeddings()
        recompute = torch.is_grad_enabled() and self.config.gradient_checkpointing
        pieces = []
        for begin in range(0, len(targets), LOGPROB_CHUNK):
            args = (head, predicting[begin: begin + LOGPROB_CHUNK], targets[begin: begin + LOGPROB_CHUNK],
                    self.temperature, with_entropy)
            pieces.append(checkpoint(_token_logprobs, *args, use_reentrant=False) if recompute
                          else _token_logprobs(*args))
        zeros = torch.zeros(actions.shape, dtype=torch.float32, device=actions.device)
        logprobs = zeros.masked_scatter(actions, torch.cat([p[0] for p in pieces]))
        entropy = zeros.masked_scatter(actions, torch.cat([p[1] for p in pieces])) if with_entropy else None
        return logprobs, entropy

    def _hidden(self, model, batch: MicroBatch, pass_prefix: PassPrefix | None) -> tuple[Tensor, int]:
        """The decoder's last hidden states of every row, without the first ``offset`` (shared) positions."""
        decoder = model.base_model
        shared, prefix = batch.shared, None
        if pass_prefix is not None:  # the pass's prefix, then what this micro-batch shares beyond it
            shared, prefix = max(shared, pass_prefix.length), pass_prefix.cache()
            if shared > pass_prefix.length:
                prefix = returned_cache(decoder(input_ids=batch.input_ids[:1, pass_prefix.length:shared],
                                                **cache_kwarg(prefix), use_cache=True))
        elif shared:
            prefix = returned_cache(decoder(input_ids=batch.input_ids[:1, :shared], use_cache=True))
        if self.config.gradient_checkpointing and torch.is_grad_enabled():
            return self._checkpointed_rows(decoder, batch, prefix, shared), shared
        if prefix is None:
            out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            return out.last_hidden_state, 0
        prefix.batch_repeat_interleave(batch.input_ids.shape[0])
        out = decoder(input_ids=batch.input_ids[:, shared:], attention_mask=batch.attention_mask,
                      **cache_kwarg(prefix), use_cache=True)
        return out.last_hidden_state, shared

    def _checkpointed_rows(self, decoder, batch: MicroBatch, prefix, shared: int) -> Tensor:
        """Each row's rest by itself under activation checkpointing, right-padded back into ``[B, L - shared]``."""
        layers = [] if prefix is None else [(layer.keys, layer.values) for layer in prefix.layers]
        flat = [tensor for pair in layers for tensor in pair]  # checkpoint tracks gradients of tensor arguments
        lengths = batch.attention_mask.sum(dim=1).tolist()
        rows = [checkpoint(_row_hidden, decoder, batch.input_ids[row:row + 1, shared:length], *flat,
                           use_reentrant=False)
                for row, length in enumerate(lengths)]
        width = batch.input_ids.shape[1] - shared
        return torch.cat([torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[1])) for h in rows])

    # ------------------------------------------------------------------ optimisation
    def train_mode(self) -> None:
        """Train mode for the update; dropout is off anyway."""
        self.model.train()

    def eval_mode(self) -> None:
        """Back to eval mode (KV cache on) before the engine decodes with the model again."""
        self.model.eval()

    def zero_grad(self) -> None:
        """Clear the gradients of a pass: None, so a pass without any backward is recognisable in ``step``."""
        for p in self.master:
            p.grad = None
        for p in self.params:
            p.grad = None

    def accumulate_grads(self) -> None:
        """Move the model's low-precision gradients into the fp32 master gradients (after each backward)."""
        if self.master is self.params:
            return
        for p, m in zip(self.params, self.master):
            if p.grad is not None:
                m.grad = p.grad.float() if m.grad is None else m.grad.add_(p.grad)
                p.grad = None

    def step(self) -> float:
        """Clip, step AdamW and the schedule, write the master weights back; returns the gradient norm.

        A pass that produced no gradient (no sample carried an advantage) moves nothing: AdamW is
        not stepped, so it does not re-apply old momentum to a batch without signal (TRL would step
        with a zero gradient); the schedule still advances, so it ends where it was planned to.

        The gradients are dropped once applied: kept, they are 4 bytes per parameter (0.5 GiB for each
        SmolLM2 agent) held through the next rollout and the other agent's update, for nothing.
        """
        norm = 0.0
        if any(m.grad is not None for m in self.master):
            norm = float(torch.nn.utils.clip_grad_norm_(self.master, self.config.grad_clip))
            self.optimizer.step()
            self._write_back()
            self.zero_grad()
        with warnings.catch_warnings():  # torch warns when the very first pass is such a skipped one
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        return norm

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _write_back(self) -> None:
        """Make the model's parameters the new master weights, and say so to whoever caches results of the
        old ones: the engine keeps keys and values (shared openings) until a parameter's in-place
        version counter moves, and torch's fused AdamW kernel writes without moving it."""
        if self.master is self.params:
            increment_version(self.params)
            return
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: Path, *, optimizer: bool = True) -> None:
        """The model in HF format with the fp32 master weights (loadable by ``load_model``), the
        tokenizer, and (``optimizer``) the optimiser and schedule state. A run's last checkpoint goes
        without: nothing resumes from it (another ``trainer.steps`` is another run), and AdamW's states
        are twice the master weights."""
        directory.mkdir(parents=True, exist_ok=True)
        master = {p.data_ptr(): m.detach() for p, m in zip(self.params, self.master)}  # tied keys share a pointer
        state = {name: master.get(tensor.data_ptr(), tensor) for name, tensor in self.model.state_dict().items()}
        self.model.save_pretrained(directory, state_dict=state)
        self.tokenizer.save_pretrained(directory)
        if optimizer:
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                       directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        """Restore what ``save`` wrote: master and model weights, optimiser and schedule (if saved)."""
        weights: dict[str, Tensor] = {}
        for shard in sorted(directory.glob("model*.safetensors")):  # one file, or shards of a big model
            weights.update(load_file(shard, device=str(self.device)))
        names: dict[int, list[str]] = {}  # a tied parameter has several names; the file keeps one of them
        for name, tensor in self.model.state_dict().items():
            names.setdefault(tensor.data_ptr(), []).append(name)
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                m.copy_(weights[next(name for name in names[p.data_ptr()] if name in weights)])
        self._write_back()
        if not (directory / "optimizer.pt").is_file():
            return
        state = torch.load(directory / "optimizer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _row_hidden(decoder, ids: Tensor, *prefix: Tensor) -> Tensor:
    """One row's last hidden states after ``prefix`` (flat keys, values per layer; none: from the start).

    The cache is built afresh at every call: the backward pass's recomputation must see the prefix
    alone, not the row's keys that the first run appended.
    """
    if not prefix:
        return decoder(input_ids=ids, use_cache=False).last_hidden_state
    cache = DynamicCache(list(zip(prefix[0::2], prefix[1::2])))
    return decoder(input_ids=ids, **cache_kwarg(cache), use_cache=True).last_hidden_state


def _token_logprobs(head, hidden: Tensor, targets: Tensor, temperature: float,
                    with_entropy: bool) -> tuple[Tensor, Tensor]:
    """Log-probabilities of ``targets`` under ``log_softmax(head(hidden) / T)``, and (detached) the entropy
    of each distribution (empty when not asked for). One chunk: its logits live only inside this call."""
    logits = head(hidden).float() / temperature
    logprobs = logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(dim=-1)
    entropy = entropy_from_logits(logits.detach()) if with_entropy else logits.new_zeros(0)
    return logprobs, entropy


def _disable_dropout(model) -> None:
    """Dropout off for good: the update's recomputed log-probabilities must equal the rollout's at the
    first pass (ratio 1), which dropout noise would break. HF attention reads a float attribute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def _frozen_copy(model):
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
