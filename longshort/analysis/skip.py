"""``[SKIP]`` SFT examples: compressed chains in the step-entropy paper's training format.

The rest of ``[SKIP]`` lives where a user would look for it: the token is added by
``agents.<role>.model.add_tokens: ["[SKIP]"]`` (``longshort.models.add_tokens``: one atomic token,
its embedding row drawn like the others, kept when decoding), the reward terms are ``longshort/rewards/skip.py``, the agent
that emits it is ``agents/skip.py``, and the pipeline's cold-start builder ``entropy_skip`` is in
``longshort/coldstart.py``.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from longshort.analysis.steps import THINK_CLOSE, THINK_OPEN


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
