"""Published reference numbers that stand beside ours in the tables, each with the source it comes from.

Only numbers that could be read in a citable source are here; everything else is ``None`` and shows
as a blank cell (the table footnote says why). In particular:

- DeepSeek-R1-Distill-Qwen-7B / -Llama-8B: the DeepSeek-R1 distillation table (arXiv 2501.12948),
  as reproduced in the official repository's README ("Distilled Model Evaluation"). It reports
  pass@1 on MATH-500, AIME 2024 and GPQA Diamond (estimated from 64 samples at temperature 0.6,
  top-p 0.95, up to 32,768 tokens) and no token lengths, no AIME 2025, no AMC 2023.
- Long-Short (Ning et al. 2025, arXiv 2505.11827): the paper's tables could not be retrieved (only
  its abstract is readable in our sources: "comparable performance ... while reducing token length
  by over 80%"), so its rows are listed with every cell blank rather than with guessed numbers.
  Fill them in, with the source, when the tables are at hand.

Which rows a run shows is decided by the model family its recipe names (``families_of``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from longshort.config import Config

R1_README = ("deepseek-ai/DeepSeek-R1 README.md, section 'Distilled Model Evaluation' (commit 00f3296), "
             "reproducing the DeepSeek-R1 paper's distillation table (arXiv 2501.12948)")
LONG_SHORT_PAPER = ("Ning et al. 2025, arXiv 2505.11827: table numbers not retrievable "
                    "(see docs/longshort_method.md section 6)")


@dataclass(frozen=True)
class PublishedScore:
    """One published cell: accuracy in percent (pass@1) and mean generated tokens; None = not published/known."""

    accuracy: float | None = None
    tokens: float | None = None


@dataclass(frozen=True)
class PublishedSystem:
    name: str
    family: str  # the base-model family of the comparison: "qwen7b" or "llama8b"
    source: str
    scores: Mapping[str, PublishedScore] = field(default_factory=dict)

    def score(self, benchmark: str) -> PublishedScore:
        return self.scores.get(benchmark, PublishedScore())


PUBLISHED: tuple[PublishedSystem, ...] = (
    PublishedSystem("DeepSeek-R1-Distill-Qwen-7B", "qwen7b", R1_README, {
        "math500": PublishedScore(accuracy=92.8),
        "aime24": PublishedScore(accuracy=55.5),
        "gpqa_diamond": PublishedScore(accuracy=49.1),
    }),
    PublishedSystem("Long-Short Qwen2.5-7B", "qwen7b", LONG_SHORT_PAPER),
    PublishedSystem("DeepSeek-R1-Distill-Llama-8B", "llama8b", R1_README, {
        "math500": PublishedScore(accuracy=89.1),
        "aime24": PublishedScore(accuracy=50.4),
        "gpqa_diamond": PublishedScore(accuracy=49.0),
    }),
    PublishedSystem("Long-Short Llama3.1-8B", "llama8b", LONG_SHORT_PAPER),
)

# A recipe "names the paper's models" when its name or an agent's model says Qwen2.5-7B or Llama-3.1-8B
# (recipes qwen7b / llama8b, the Hub ids, or checkpoints whose path keeps the base name).
_FAMILIES = {
    "qwen7b": re.compile(r"qwen[-_]?2\.5[-_]?7b|qwen7b", re.IGNORECASE),
    "llama8b": re.compile(r"llama[-_]?3\.1[-_]?8b|llama8b", re.IGNORECASE),
}


def families_of(config: Config) -> list[str]:
    """The paper's model families that a recipe names (usually none or one)."""
    names = [config.name, *(spec.model.name_or_path for spec in config.agents.values())]
    return [family for family, pattern in _FAMILIES.items() if any(pattern.search(name) for name in names)]


def published_for(config: Config) -> list[PublishedSystem]:
    """The published reference systems to show beside a run of ``config``."""
    families = families_of(config)
    return [system for system in PUBLISHED if system.family in families]
