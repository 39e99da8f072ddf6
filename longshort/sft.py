"""Embedded cold-start SFT of one agent: plain PyTorch, CPU or one GPU, resumable.

Each transcript goes through ``agent.training_sample`` (the same code the RL trainer uses on rollout
episodes), so SFT trains exactly the token layout the agent sees during rollouts: its chat-templated
system prompt and question, then the turns joined by the separator, with loss only on the agent's own
turns. The loss is the mean over all trained tokens of an optimiser step (summed over its
micro-batches, divided by their total count), so gradient accumulation gives the same update as one
large batch.

Why the pieces are as they are:

- Master weights and optimiser states stay fp32 (the model is converted in place); matmuls run under
  bf16 autocast where the device computes bf16 natively (``longshort.models.pick_dtype``). On the
  AVX512-BF16/AMX CPU here a bf16 matmul is ~5x faster than fp32, but a whole SmolLM2 training step
  only ~1.1-1.3x: elementwise work (casts, RMSNorm, rotary, SiLU) dominates at this model size.
- The system prompt that opens every example is encoded once per micro-batch and shared through the
  KV cache (``shared_prefix``): with the paper's ~250-token prompts that is ~2.3x less compute per step.
- Logits are computed only at trained positions: the output projection over a ~50k vocabulary at
  every prompt token would be most of the memory and a fifth of the compute of a 135M model.
- Micro-batches hold examples of similar length (sorted within shuffled windows) to limit padding;
  the order depends only on ``(seed, epoch)``, so a resumed run sees the same batches.
- Checkpoints (``checkpoint-<step>``: HF ``save_pretrained`` model + tokenizer, plus optimiser,
  scheduler, RNG and step in ``trainer_state.pt``) are written to a temporary folder and renamed, so a
  crash never leaves a half checkpoint; only the newest is kept. Calling ``run_sft`` again with the
  same ``out_dir`` resumes from it at the exact step, and once ``final/`` exists it just loads that.
- Gradients are clipped to norm ``MAX_GRAD_NORM`` and AdamW has no weight decay: the HF Trainer /
  LLaMA-Factory defaults, since the paper's SFT settings are unpublished (``longshort_method.md`` §3).
"""
from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file

from agents.base import Agent, vocab_key
from longshort.config import SFTConfig
from longshort.errors import UserError
from longshort.episode import Turn
from longshort.engines.hf_cache import cache_kwarg, returned_cache
from longshort.trainers.optim import adamw, cosine_schedule
from longshort.memory import release_freed_memory
from longshort.models import pick_dtype
from longshort.jsonl import trim_log
from longshort.paths import append_line, holds_weights, write_atomically
from longshort.plain_progress import PlainProgress, on_terminal

logger = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0
MIN_SHARED_PREFIX = 16  # shorter common prefixes are not worth a second forward call
BUCKET_WINDOW = 16  # micro-batches per length-sorting window: less padding vs. less order randomness
STATE_FILE = "trainer_state.pt"
LOG_FILE = "log.jsonl"

StepCallback = Callable[[dict], None]


class SFTDataError(UserError, ValueError):
    """Cold-start transcripts that leave an agent nothing to learn from; says which setting to change."""


@dataclass(frozen=True)
class SFTExample:
    """One tokenised transcript: ``loss_mask[i] = 1`` where ``input_ids[i]`` is the agent's own token."""

    input_ids: list[int]
    loss_mask: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


def turns_from_texts(turns: Sequence[dict], tokenizer, agent: Agent) -> list[Turn]:
    """Turn records for text-only turns, tokenised with ``tokenizer`` exactly as ``Agent.view`` would
    re-tokenise a partner's text (``encode(text, add_special_tokens=False)``). The ids are filled in
    here rather than left to the view because ``training_sample`` needs one logprob per own token.

    A turn of ``agent`` that does not end with one of its stop strings ended, when sampled, with the
    end-of-sequence token (the single and skip agents always do), and a rollout's turn keeps that
    token among its actions: it is appended here too, so SFT teaches the model to stop."""
    records = []
    eos = tokenizer.eos_token_id
    for turn in turns:
        ids = list(tokenizer.encode(turn["text"], add_special_tokens=False))
        ended_by_stop = bool(agent.stop) and turn["text"].rstrip().endswith(tuple(agent.stop))
        if turn["role"] == agent.role and not ended_by_stop and eos is not None:
            ids.append(eos)
        records.append(Turn(role=turn["role"], prompt_ids=[], action_ids=ids, logprobs=[0.0] * len(ids),
                            text=turn["text"], finish_reason="stop", vocab=vocab_key(tokenizer)))
    return records


def build_examples(agent: Agent, transcripts: Sequence[dict], tokenizer, max_length: int) -> list[SFTExample]:
    """The agent's SFT examples: transcripts it acts in, right-truncated to ``max_length`` tokens.

    When the cut falls inside one of the agent's own turns, that turn is left out (the example ends
    where it starts): trained up to the cut, it would teach the model a turn that stops without its
    closing tag, and OpenRLHF, which always trains an EOS after a row's last token, would teach a
    stop right there (``openrlhf.launch.openrlhf_sft_rows`` renders these same examples). Transcripts
    where the agent never acts, or with no whole own turn within ``max_length``, are dropped; both
    are counted in the log.
    """
    examples, truncated, dropped = [], 0, 0
    for record in transcripts:
        sample = agent.training_sample(record["question"], turns_from_texts(record["turns"], tokenizer, agent), tokenizer)
        if sample is None:
            continue
        ids, mask = list(sample.input_ids), list(sample.action_mask)
        if len(ids) > max_length:
            truncated += 1
            end = max_length
            while end and mask[end - 1] and mask[max_length]:  # the cut is inside an own turn: end before it
                end -= 1
            ids, mask = ids[:end], mask[:end]
        if not any(mask):
            dropped += 1
            continue
        examples.append(SFTExample(ids, mask))
    if truncated or dropped:
        logger.warning("sft %s: %d of %d examples cut at %d tokens (an own turn the cut fell inside is not trained), "
                       "%d dropped (no whole own turn left)", agent.role, truncated, len(transcripts), max_length,
                       dropped)
    return examples


def epoch_batches(lengths: Sequence[int], batch_size: int, grad_accum: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """One epoch as optimiser steps, each a list of micro-batches of example indices.

    Shuffle, sort by length within windows of ``BUCKET_WINDOW`` micro-batches, cut into micro-batches,
    shuffle those. Every epoch has ``ceil(ceil(n / batch_size) / grad_accum)`` steps.
    """
    rng = random.Random(f"longshort-sft:{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * BUCKET_WINDOW
    micro = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
        micro += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(micro)
    return [micro[i: i + grad_accum] for i in range(0, len(micro), grad_accum)]


def steps_per_epoch(num_examples: int, config: SFTConfig) -> int:
    return math.ceil(math.ceil(num_examples / config.batch_size) / config.grad_accum)


def _collate(examples: Sequence[SFTExample], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        mask[row, :n] = torch.tensor(example.loss_mask, dtype=torch.bool)
    return ids.to(device), attention.to(device), mask.to(device)


def shared_prefix(examples: Sequence[SFTExample]) -> int:
    """How many leading tokens a micro-batch can encode once: common to every example and untrained.

    Every example of an agent starts with the same chat-templated system prompt (~250 tokens for the
    paper's prompts, often most of a short example). Token ``p`` is predicted from position ``p - 1``,
    so the shared part stops before the first trained token of any example. 0 means "do not share".
    """
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    common = min(len(e.input_ids) for e in examples)
    for example in examples[1:]:
        common = next((i for i in range(common) if example.input_ids[i] != first[i]), common)
    first_trained = min(e.loss_mask.index(1) for e in examples)
    shared = min(common, first_trained - 1)
    return shared if shared >= MIN_SHARED_PREFIX else 0


def _token_loss_sum(model, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor, shared: int) -> torch.Tensor:
    """Summed next-token cross-entropy at the trained positions only (token i predicted from i - 1).

    With ``shared > 0`` the first ``shared`` tokens (identical in every row) run once as a batch of one;
    their keys and values are repeated across the batch (``repeat_interleave`` is differentiable, so
    their gradients sum over the rows, as in the unshared computation) and the rest of each row attends
    to them through the cache. Same loss and gradients, a fraction of the prompt compute.
    """
    decoder = model.base_model
    if shared:
        cache = returned_cache(decoder(input_ids=ids[:1, :shared], use_cache=True))
        cache.batch_repeat_interleave(ids.shape[0])
        hidden = decoder(input_ids=ids[:, shared:], attention_mask=attention, **cache_kwarg(cache),
                         use_cache=True).last_hidden_state
        ids, mask = ids[:, shared:], mask[:, shared:]
    else:
        hidden = decoder(input_ids=ids, attention_mask=attention).last_hidden_state
    targets = mask[:, 1:]
    logits = model.get_output_embeddings()(hidden[:, :-1][targets])
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][targets], reduction="sum")


# ------------------------------------------------------------------------------------- checkpoints


def _latest_checkpoint(out_dir: Path) -> Path | None:
    found = [p for p in out_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file() and p.name[11:].isdigit()]
    return max(found, key=lambda p: int(p.name[11:]), default=None)


def _load_weights(model, folder: Path) -> None:
    """Load HF safetensors weights into ``model`` in place; only tied duplicates may be absent."""
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file, device=str(next(model.parameters()).device)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors weights in {folder}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = ({name for name, _ in model.named_parameters(remove_duplicate=False)}
            - {name for name, _ in model.named_parameters()})
    untied_missing = [name for name in missing if name not in tied]
    if unexpected or untied_missing:
        raise RuntimeError(f"checkpoint {folder} does not fit the model: missing {untied_missing[:5]}, "
                           f"unexpected {unexpected[:5]}; pass the same base model the run started from")


def _run_key(config: SFTConfig, seed: int, role: str, num_examples: int) -> dict:
    """What must match for a checkpoint to be resumed (anything else would silently change the run);
    ``save_every`` may change between attempts."""
    settings = {k: v for k, v in asdict(config).items() if k != "save_every"}
    return {"sft": settings, "seed": seed, "role": role, "num_examples": num_examples}


# ------------------------------------------------------------------------------------------- train


def run_sft(model, tokenizer, agent: Agent, transcripts: Sequence[dict], config: SFTConfig, out_dir: str | Path, *,
            seed: int = 0, on_step: StepCallback | None = None, progress: bool = True) -> Path:
    """Fine-tune ``model`` in place on ``agent``'s turns of ``transcripts``; returns ``out_dir/final``.

    The model is converted to fp32 (master weights) and left in eval mode on its device. ``on_step``
    receives each step's metrics (the dict written to ``log.jsonl``); an exception raised from it
    interrupts the run like a crash would, and the next call with the same ``out_dir`` resumes from the
    newest checkpoint.
    """
    out = Path(out_dir)
    final = out / "final"
    if holds_weights(final):
        model.float()
        _load_weights(model, final)
        model.eval()
        logger.info("sft %s: %s already exists; loaded it", agent.role, final)
        return final
    examples = build_examples(agent, transcripts, tokenizer, config.max_length)
    if not examples:
        roles = sorted({t["role"] for r in transcripts for t in r["turns"]})
        why = (f"every transcript's '{agent.role}' turns fall past sft.max_length={config.max_length} tokens; raise it"
               if agent.role in roles else f"no transcript has a turn with that role (roles present: {roles})")
        raise SFTDataError(f"no SFT examples for agent '{agent.role}' in {len(transcripts)} transcripts: {why}")
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    model.float()
    per_epoch = steps_per_epoch(len(examples), config)
    total = per_epoch * config.epochs
    optimizer = adamw(model.parameters(), config.lr)
    scheduler = cosine_schedule(optimizer, total, config.warmup_ratio)  # the RL schedule: no step at lr 0
    key = _run_key(config, seed, agent.role, len(examples))
    step, rng_state = 0, None
    checkpoint = _latest_checkpoint(out)
    if checkpoint is not None:
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)
        if state["key"] != key:
            raise ValueError(f"{checkpoint} belongs to a different SFT run ({state['key']} vs {key}); "
                             "use a new out_dir or delete the old one")
        _load_weights(model, checkpoint)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, rng_state = state["step"], state["rng"]
        logger.info("sft %s: resuming from %s (step %d of %d)", agent.role, checkpoint, step, total)
    trim_log(out / LOG_FILE, step)
    use_bf16 = pick_dtype(device) == torch.bfloat16
    checkpointing = config.gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False)
    if checkpointing:
        _set_checkpointing(model, True)
    model.train()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = [len(e.input_ids) for e in examples]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), _progress(progress, agent.role, total, step) as update_bar:
            if rng_state is None:
                torch.manual_seed(seed)
            else:
                _set_rng(rng_state, device)
            while step < total:
                epoch, index = divmod(step, per_epoch)
                micro_batches = epoch_batches(lengths, config.batch_size, config.grad_accum, seed, epoch)[index]
                metrics = _train_step(model, optimizer, scheduler, [[examples[i] for i in mb] for mb in micro_batches],
                                      pad_id, device, use_bf16, share_prefix=not checkpointing)
                step += 1
                metrics = {"step": step, "epoch": epoch + (index + 1) / per_epoch, **metrics}
                append_line(out / LOG_FILE, json.dumps(metrics))
                update_bar(step, metrics)
                if step % config.save_every == 0 and step < total:
                    _save_checkpoint(out, step, model, tokenizer, optimizer, scheduler, key, device)
                if on_step is not None:
                    on_step(metrics)
            write_atomically(final, lambda path: _save_pretrained(model, tokenizer, path))
        _remove_checkpoints(out)  # a finished run loads ``final``, never its checkpoint (weights + AdamW: 12 B/param)
        release_freed_memory()  # once the agent is done: after every step, each step paged its memory in again
    finally:
        if checkpointing:
            _set_checkpointing(model, False)
        model.eval()
    return final


def _train_step(model, optimizer, scheduler, micro_batches: list[list[SFTExample]], pad_id: int,
                device: torch.device, use_bf16: bool, *, share_prefix: bool) -> dict:
    """One optimiser step over its micro-batches; the loss is the mean over all their trained tokens."""
    start = time.perf_counter()
    # Token 0 has nothing before it to be predicted from, so it never counts.
    trained = sum(sum(e.loss_mask[1:]) for mb in micro_batches for e in mb)
    tokens = sum(len(e.input_ids) for mb in micro_batches for e in mb)
    optimizer.zero_grad(set_to_none=True)
    loss_total = 0.0
    for examples in micro_batches:
        ids, attention, mask = _collate(examples, pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = _token_loss_sum(model, ids, attention, mask, shared_prefix(examples) if share_prefix else 0)
            loss = loss / max(trained, 1)
        loss.backward()
        loss_total += loss.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM).item()
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    return {"loss": loss_total, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "trained_tokens": trained,
            "seconds": round(time.perf_counter() - start, 4)}


def _set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing; transformers renamed it from "gradient checkpointing" during 5.x."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _save_pretrained(model, tokenizer, path: Path) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def _save_checkpoint(out: Path, step: int, model, tokenizer, optimizer, scheduler, key: dict,
                     device: torch.device) -> None:
    def write(path: Path) -> None:
        _save_pretrained(model, tokenizer, path)
        rng = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        torch.save({"step": step, "key": key, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng}, path / STATE_FILE)

    write_atomically(out / f"checkpoint-{step}", write)
    _remove_checkpoints(out, keep=f"checkpoint-{step}")


def _remove_checkpoints(out: Path, keep: str | None = None) -> None:
    """Delete the resume checkpoints in ``out`` other than ``keep``: only the newest can be resumed from."""
    for old in out.glob("checkpoint-*"):
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def _set_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def _progress(enabled: bool, role: str, total: int, done: int) -> Iterator[Callable[[int, dict], None]]:
    """A rich progress bar with loss and lr on stderr (stdout stays clean); yields its update function.
    Off a terminal, one plain line per step instead (``longshort.plain_progress``)."""
    if not enabled:
        yield lambda step, metrics: None
        return
    if not on_terminal():
        lines = PlainProgress(f"sft {role} step", total, done)
        yield lambda step, metrics: lines.line(step, f"loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}")
        return
    bar = Progress(TextColumn(f"sft {role}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"), TimeRemainingColumn(),
                   console=Console(stderr=True))
    task = bar.add_task("sft", total=total, completed=done, loss=float("nan"), lr=0.0)
    with bar:
        yield lambda step, metrics: bar.update(task, completed=step, loss=metrics["loss"], lr=metrics["lr"])
