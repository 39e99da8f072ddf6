"""The step-entropy paper's ``[SKIP]`` reward terms: skip_ratio, skip_count and skip_length.

The paper's +2.0 for a correct answer is the ``correctness`` term at weight 2.0. For the acting
role's text, ``thinking`` is what precedes ``</think>``, ``n_skip`` its ``[SKIP]`` count and
``rho = n_skip / max(1, count("\\n\\n") + n_skip)`` (the released code's definition). Thresholds come
from ``rewards.skip`` (``SkipRewardsConfig``), carried by ``RewardContext.skip``.

- ``skip_ratio``: +bonus_high if rho >= ratio_high (0.8), +bonus_low if rho >= ratio_low (0.5), else
  0 -- paid ONLY when the episode's answer verified. DEVIATION from the released code, which paid it
  ungated, so a policy could earn +1.0 for a ``[SKIP]``-spammed wrong answer (1.0 > 0 for honest failure).
- ``skip_count``: ``count_penalty`` when n_skip > max_skips (100). The paper's text says -1.0, the
  released code -2.0; the default is the paper's.
- ``skip_length``: ``length_penalty`` (-1.0) when the role's own generated tokens exceed max_tokens (3500).

Penalties are NOT gated: gating a penalty on correctness would make a wrong answer the cheaper way out.
"""
from __future__ import annotations

from dataclasses import dataclass

from longshort.analysis.steps import DELIMITER, THINK_CLOSE
from longshort.episode import Episode
from longshort.rewards.base import RewardContext, register_reward


@dataclass(frozen=True)
class SkipStats:
    n_skip: int
    n_steps: int

    @property
    def ratio(self) -> float:
        return self.n_skip / self.n_steps


def skip_stats(text: str, placeholder: str = "[SKIP]") -> SkipStats:
    """``[SKIP]`` count and step count of the thinking in ``text`` (all of it when ``</think>`` is missing)."""
    thinking = text.split(THINK_CLOSE, 1)[0]
    n_skip = thinking.count(placeholder)
    return SkipStats(n_skip, max(1, thinking.count(DELIMITER) + n_skip))


def _role_text(episode: Episode, role: str) -> str:
    return DELIMITER.join(turn.text for turn in episode.turns if turn.role == role)


@register_reward("skip_ratio")
def skip_ratio(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """+bonus_high / +bonus_low for a high / medium share of skipped steps, only on verified answers."""
    config = ctx.skip
    values = []
    for episode in group:
        rho = skip_stats(_role_text(episode, role), config.placeholder).ratio
        bonus = config.bonus_high if rho >= config.ratio_high else config.bonus_low if rho >= config.ratio_low else 0.0
        values.append(bonus if episode.outcome.correct else 0.0)
    return values


@register_reward("skip_count")
def skip_count(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """``count_penalty`` when the thinking holds more than ``max_skips`` placeholders (anti-degeneration)."""
    config = ctx.skip
    return [config.count_penalty if skip_stats(_role_text(ep, role), config.placeholder).n_skip > config.max_skips
            else 0.0 for ep in group]


@register_reward("skip_length")
def skip_length(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """``length_penalty`` when the role's own generated tokens exceed ``max_tokens``."""
    config = ctx.skip
    return [config.length_penalty if ep.tokens(role) > config.max_tokens else 0.0 for ep in group]
