"""Episodes as the report shows them, and the rule that picks which ones a page embeds.

Two files hold transcripts: a training run's ``rl/episodes/step_XXXX.jsonl`` (full ``Episode``
records, with token ids and log-probabilities) and an evaluation's ``records/<set>.jsonl``
(``Record`` lines: turn texts and token counts, no rewards). Both become one compact form
(``view``): the turns' texts, token counts, finish reasons and format verdicts, the outcome, the
grader's verdict and the per-agent reward terms, without token ids.

**The sampling rule.** Every episode counts in the statistics (curves, outcome counts). What the
page embeds to read is limited, so a long run still opens in seconds:

1. a turn longer than ``TURN_CHARS`` characters keeps its first ``TURN_HEAD`` and last
   ``TURN_CHARS - TURN_HEAD`` characters around a marker saying how many were cut;
2. each group (one RL step, or one evaluation set) embeds at most ``k`` episodes, ``k`` being the
   largest value up to ``max_per_group`` for which all groups together fit in ``max_bytes`` of JSON
   (``k`` is at least 1);
3. inside a group the ``k`` are taken round-robin over its outcome classes (correct, wrong,
   format failure of each role, turn cap, budget, error), each class in file order, so a rare
   failure is shown even among hundreds of correct answers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TURN_CHARS = 6000
TURN_HEAD = 4000
MAX_PER_GROUP = 64
MAX_BYTES = 12_000_000


def outcome_class(reason: str, correct: bool) -> str:
    """``correct`` / ``wrong`` for an answered episode, else its end (``format:<role>``, ``turn_cap``, ...)."""
    if reason == "answered":
        return "correct" if correct else "wrong"
    return reason


def _clip(text: str) -> tuple[str, int]:
    if len(text) <= TURN_CHARS:
        return text, 0
    cut = len(text) - TURN_CHARS
    return f"{text[:TURN_HEAD]}\n[... {cut:,} characters not shown ...]\n{text[-(TURN_CHARS - TURN_HEAD):]}", cut


def _turn(role: str, text: str, tokens: int, finish: str, format_ok: bool, format_reason: str) -> dict:
    text, cut = _clip(text)
    turn = {"role": role, "text": text, "tokens": tokens, "finish": finish, "format_ok": format_ok,
            "format": format_reason}
    if cut:
        turn["cut"] = cut
    return turn


def view_of_episode(data: dict) -> dict:
    """An ``Episode.to_dict()`` line (RL rollouts) in the report's form."""
    outcome = data["outcome"]
    turns = [_turn(t["role"], t["text"], len(t["action_ids"]), t["finish_reason"], t.get("format_ok", True),
                   t.get("format_reason", "ok")) for t in data["turns"]]
    return {"id": data["problem_id"], "sample": data["sample_index"], "prompt": data.get("prompt"),
            "gold": data.get("gold"), "outcome": outcome["reason"],
            "class": outcome_class(outcome["reason"], bool(outcome.get("correct"))),
            "correct": bool(outcome.get("correct")), "verdict": outcome.get("verdict"),
            "extracted": outcome.get("extracted"), "answer_role": outcome.get("answer_role"),
            "tokens": _tokens(turns), "turns": turns, "rewards": data.get("rewards", {}),
            "totals": data.get("totals", {})}


def view_of_record(data: dict, prompt: str | None = None) -> dict:
    """An evaluation ``Record`` line in the report's form. Records carry no rewards, and records written
    before they kept the prompt take it from ``prompt`` (the run's own data files), if given."""
    turns = [_turn(t["role"], t["text"], t["tokens"], t["finish_reason"], t["format"] == "ok", t["format"])
             for t in data.get("turns", [])]
    view = {"id": data["id"], "sample": data["sample"], "prompt": data.get("prompt") or prompt,
            "gold": data.get("gold"), "outcome": data["outcome"],
            "class": outcome_class(data["outcome"], bool(data["correct"])),
            "correct": bool(data["correct"]), "verdict": data.get("verdict"), "extracted": data.get("extracted"),
            "tokens": data.get("tokens") or _tokens(turns), "turns": turns, "rewards": {}, "totals": {}}
    if data.get("error"):
        view["error"] = data["error"]
    return view


def _tokens(turns: list[dict]) -> dict[str, int]:
    tokens: dict[str, int] = {}
    for turn in turns:
        tokens[turn["role"]] = tokens.get(turn["role"], 0) + turn["tokens"]
    return tokens


def read_jsonl(path: Path) -> Iterator[dict]:
    """The complete JSON lines of a file; a torn last line (a run killed mid-write) is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


@dataclass
class Group:
    """The episodes of one RL step or one evaluation set: all counted, a sample embedded."""

    key: str  # stable id used in the page's URL (step-3, eval/rl/heldout)
    label: str
    kind: str  # "rl" or "eval"
    episodes: list[dict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for episode in self.episodes:
            counts[episode["class"]] = counts.get(episode["class"], 0) + 1
        return dict(sorted(counts.items()))


def round_robin(episodes: list[dict], k: int) -> list[dict]:
    """At most ``k`` episodes, taken in turn from each outcome class (classes sorted, each in order)."""
    if len(episodes) <= k:
        return list(episodes)
    by_class: dict[str, list[dict]] = {}
    for episode in episodes:
        by_class.setdefault(episode["class"], []).append(episode)
    queues = [by_class[name] for name in sorted(by_class)]
    picked: list[dict] = []
    depth = 0
    while len(picked) < k:
        for queue in queues:
            if depth < len(queue) and len(picked) < k:
                picked.append(queue[depth])
        depth += 1
    order = {id(episode): index for index, episode in enumerate(episodes)}
    return sorted(picked, key=lambda episode: order[id(episode)])  # shown in file order


def sample_groups(groups: list[Group], *, max_per_group: int = MAX_PER_GROUP, max_bytes: int = MAX_BYTES
                  ) -> tuple[dict[str, list[dict]], int]:
    """The episodes each group embeds (by group key) and the per-group limit ``k`` the budget allowed."""
    sizes = [[len(json.dumps(episode, ensure_ascii=False)) for episode in group.episodes] for group in groups]

    def total(k: int) -> int:
        picked = 0
        for group, group_sizes in zip(groups, sizes):
            index = {id(episode): i for i, episode in enumerate(group.episodes)}
            picked += sum(group_sizes[index[id(episode)]] for episode in round_robin(group.episodes, k))
        return picked

    low, high = 1, max(1, max_per_group)
    while low < high:  # the largest k whose total fits; the total grows with k
        middle = (low + high + 1) // 2
        if total(middle) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return {group.key: round_robin(group.episodes, low) for group in groups}, low
