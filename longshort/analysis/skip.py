"""``[SKIP]``: the token, SFT examples from pruned chains, and the GRPO reward terms of step entropy.

Token convention (the paper's code mixed two): ``[SKIP]`` is ONE added token in SFT, GRPO and
inference alike, so a pruned step costs exactly one token. It is added as a non-special added token
(atomic, never split by the BPE) rather than through ``add_special_tokens``, because special tokens
are dropped by ``decode(skip_special_tokens=True)``, which is how engines produce ``Generation.text``:
the reward terms below would then never see a ``[SKIP]``. Its embedding row starts at the mean of the
existing rows (a random row would put a huge logit on it, or none), and the embedding matrix is
never shrunk (the released GRPO script resized Qwen2's padded matrix down to ``len(tokenizer)``).

Reward terms (register names ``skip_ratio``, ``skip_count``, ``skip_length``; the paper's +2.0
correctness is the existing ``correctness`` term at weight 2.0). For the acting role's text,
``thinking`` is what precedes ``</think>``, ``n_skip`` its ``[SKIP]`` count and
``rho = n_skip / max(1, count("\\n\\n") + n_skip)`` (the released code's definition).

- ``skip_ratio``: +1.0 if rho >= 0.8, +0.5 if 0.5 <= rho < 0.8, else 0 -- paid ONLY when the episode's
  answer verified. DEVIATION from the released code, which paid it ungated, so a policy could earn
  +1.0 for a ``[SKIP]``-spammed wrong answer (1.0 > 0 for honest failure).
- ``skip_count``: penalty when n_skip > 100. The paper's text says -1.0, the released code -2.0; the
  default here is the paper's -1.0 (``count_penalty`` sets the code's value).
- ``skip_length``: -1.0 when the role's own generated tokens exceed 3500 (the code's tau_length).
Penalties are NOT gated: gating a penalty on correctness would make a wrong answer the cheaper way
out. All thresholds live in ``SkipRewardConfig``; a ``SkipRewardContext`` carries them to the terms.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from longshort.analysis.pruning import SKIP
from longshort.analysis.steps import DELIMITER, THINK_CLOSE, THINK_OPEN
from longshort.episode import Episode
from longshort.rewards import RewardContext, register_reward


# ------------------------------------------------------------------------------------- the token


def add_skip_token(model, tokenizer, token: str = SKIP) -> int:
    """Make ``token`` one token of ``tokenizer`` and give it a mean-initialised embedding; its id.

    Idempotent: a tokenizer that already has the token is left alone (its row is not reset).
    """
    from tokenizers import AddedToken

    existing = tokenizer.convert_tokens_to_ids(token)
    if existing is not None and existing != tokenizer.unk_token_id and tokenizer.encode(
            token, add_special_tokens=False) == [existing]:
        return existing
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False, single_word=False)])
    token_id = tokenizer.convert_tokens_to_ids(token)
    embeddings = model.get_input_embeddings()
    rows = embeddings.weight.shape[0]
    if len(tokenizer) > rows:  # grow only; padded matrices (Qwen2) already have a spare row
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for matrix in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())
                       if m is not None}.values():
            matrix.weight[token_id] = matrix.weight[:rows].float().mean(dim=0).to(matrix.weight.dtype)
    return token_id


# ------------------------------------------------------------------------------------ SFT examples


def sft_target(compressed_thinking: str, answer: str) -> str:
    """The assistant text a model learns to write: ``<think>\\n`` + thinking + ``\\n</think>\\n\\n`` + answer."""
    return f"{THINK_OPEN}\n{compressed_thinking}\n{THINK_CLOSE}\n\n{answer}"


def sft_example(problem_id: str, question: str, gold: str, compressed_thinking: str, answer: str,
                role: str = "single") -> dict:
    """One SFT record in the transcript format the SFT stage reads: a single turn of ``role``."""
    return {"id": problem_id, "question": question, "answer": gold, "role": role,
            "turns": [{"role": role, "text": sft_target(compressed_thinking, answer)}]}


def sft_examples(answers: Iterable[Mapping], chains: Mapping[str, Mapping], *, strategy: str = "low",
                 kappa: float = 0.8, correct_only: bool = True, role: str = "single") -> list[dict]:
    """SFT records from the pruning analysis' ``answers.jsonl`` rows at one (strategy, kappa).

    ``chains`` maps a problem id to ``{"question", "answer"}``. Only verified answers are kept by
    default (unconfirmed in the paper, but a wrong answer after pruning is no target to imitate).
    """
    out = []
    for row in answers:
        if row["strategy"] != strategy or abs(row["kappa"] - kappa) > 1e-9 or (correct_only and not row["correct"]):
            continue
        problem = chains[row["problem_id"]]
        out.append(sft_example(row["problem_id"], problem["question"], str(problem["answer"]), row["thinking"],
                               row["answer"].strip(), role))
    return out


# ----------------------------------------------------------------------------------- reward terms


@dataclass(frozen=True)
class SkipRewardConfig:
    ratio_high: float = 0.8
    ratio_low: float = 0.5
    bonus_high: float = 1.0
    bonus_low: float = 0.5
    max_skips: int = 100
    count_penalty: float = -1.0  # the paper; the released code uses -2.0
    max_tokens: int = 3500
    length_penalty: float = -1.0
    placeholder: str = SKIP


@dataclass
class SkipRewardContext(RewardContext):
    """The reward context with the ``[SKIP]`` thresholds; a plain ``RewardContext`` means the defaults."""

    skip: SkipRewardConfig = field(default_factory=SkipRewardConfig)


@dataclass(frozen=True)
class SkipStats:
    n_skip: int
    n_steps: int

    @property
    def ratio(self) -> float:
        return self.n_skip / self.n_steps


def skip_stats(text: str, placeholder: str = SKIP) -> SkipStats:
    """``[SKIP]`` count and step count of the thinking in ``text`` (all of it when ``</think>`` is missing)."""
    thinking = text.split(THINK_CLOSE, 1)[0]
    n_skip = thinking.count(placeholder)
    return SkipStats(n_skip, max(1, thinking.count(DELIMITER) + n_skip))


def _config(ctx: RewardContext) -> SkipRewardConfig:
    return ctx.skip if isinstance(ctx, SkipRewardContext) else SkipRewardConfig()


def _role_text(episode: Episode, role: str) -> str:
    return DELIMITER.join(turn.text for turn in episode.turns if turn.role == role)


@register_reward("skip_ratio")
def skip_ratio(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """+bonus_high / +bonus_low for a high / medium share of skipped steps, only on verified answers."""
    config = _config(ctx)
    values = []
    for episode in group:
        rho = skip_stats(_role_text(episode, role), config.placeholder).ratio
        bonus = config.bonus_high if rho >= config.ratio_high else config.bonus_low if rho >= config.ratio_low else 0.0
        values.append(bonus if episode.outcome.correct else 0.0)
    return values


@register_reward("skip_count")
def skip_count(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """``count_penalty`` when the thinking holds more than ``max_skips`` placeholders (anti-degeneration)."""
    config = _config(ctx)
    return [config.count_penalty if skip_stats(_role_text(ep, role), config.placeholder).n_skip > config.max_skips
            else 0.0 for ep in group]


@register_reward("skip_length")
def skip_length(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """``length_penalty`` when the role's own generated tokens exceed ``max_tokens``."""
    config = _config(ctx)
    return [config.length_penalty if ep.tokens(role) > config.max_tokens else 0.0 for ep in group]
