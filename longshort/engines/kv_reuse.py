"""Keys and values an agent's model has already computed, kept between the turns of one episode.

An agent's view is append-only (``agents.base``): the prompt of its turn k+1 is the prompt of turn k,
the tokens it sampled, and what the partner said since. Prefilling the whole view again at every
turn is quadratic work per episode; keeping the keys and values of what the model has seen makes a
turn cost only its new tokens. The HF engine keeps one entry per *session* (the rollout runner uses
one session per episode and agent), stores it when a turn finishes and takes it back when the next
turn of that session starts.

Memory stays bounded: the runner ends a session (and frees its entry) the moment its episode is
over, and the store holds at most ``budget`` tokens in all, evicting the least recently stored
entries first. An evicted session simply prefills its whole view again at its next turn: eviction
changes speed, never results. Size the budget for the live sessions (episodes in flight x agents x
view tokens): agents take turns in lockstep across episodes, so with a smaller budget the entries
stored last evict the ones the other agent needs next, and little is reused.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable

from torch import Tensor


@dataclass
class KVEntry:
    """The keys and values of ``ids``: one ``(keys, values)`` pair per layer, each ``[heads, len(ids), dim]``."""

    ids: list[int]
    layers: list[tuple[Tensor, Tensor]]

    def prefix(self, length: int) -> list[tuple[Tensor, Tensor]]:
        """The layers cut to the first ``length`` tokens."""
        if length == len(self.ids):
            return self.layers
        return [(k[:, :length], v[:, :length]) for k, v in self.layers]


class KVStore:
    """Per-session cache entries, least recently used evicted beyond ``budget`` tokens (0: keep none).

    Entries are stored from the thread running the engine's steps (``model_thread``) and sessions ended
    from the event loop's thread, hence the lock.
    """

    def __init__(self, budget: int):
        if budget < 0:
            raise ValueError(f"kv_cache_budget must be >= 0 tokens, got {budget}")
        self.budget = budget
        self.evictions = 0
        self._entries: OrderedDict[Hashable, KVEntry] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()

    @property
    def tokens(self) -> int:
        """Tokens held over all sessions."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, session: Hashable, prompt_ids: list[int]) -> tuple[int, KVEntry | None]:
        """Remove the session's entry and say how many leading tokens of ``prompt_ids`` it covers.

        That is the common prefix of the entry's ids and the prompt, less the prompt's last token at
        most (the model has to run at least one token to give the next token's logits). ``(0, None)``
        when the session has no entry or nothing in common with the prompt.
        """
        with self._lock:
            entry = self._entries.pop(session, None)
            if entry is None:
                return 0, None
            self._tokens -= len(entry.ids)
        limit = min(len(entry.ids), len(prompt_ids) - 1)
        common = next((i for i in range(limit) if entry.ids[i] != prompt_ids[i]), limit)
        return (common, entry) if common > 0 else (0, None)

    def put(self, session: Hashable, entry: KVEntry) -> None:
        """Store (or replace) the session's entry, then evict the oldest beyond the budget."""
        if len(entry.ids) > self.budget:
            self.drop(session)
            return
        with self._lock:
            old = self._entries.pop(session, None)
            self._tokens += len(entry.ids) - (len(old.ids) if old is not None else 0)
            self._entries[session] = entry
            while self._tokens > self.budget:
                _, evicted = self._entries.popitem(last=False)
                self._tokens -= len(evicted.ids)
                self.evictions += 1

    def clear(self) -> None:
        """Forget every session (the model's weights changed, so their keys and values are stale)."""
        with self._lock:
            self._entries.clear()
            self._tokens = 0

    def drop(self, session: Hashable) -> None:
        """Forget the session (its episode is over)."""
        with self._lock:
            entry = self._entries.pop(session, None)
            if entry is not None:
                self._tokens -= len(entry.ids)


MIN_SHARED_OPENING = 16  # shorter shared openings are not worth a forward call of their own


class PrefixCache:
    """Keys and values of prompt openings that many requests share, across episodes and batches.

    Every request of an agent opens with the same chat-templated system prompt (most of a first
    turn's tokens at the tiny recipe's lengths: ~280 of ~330), and the samples of a group repeat
    the question as well. The engine encodes such an opening once (``shared_openings``) and keeps
    its keys and values here; a later request that starts with it prefills only the rest. ``take``
    uses the stored entry sharing the most leading tokens with a prompt, so an entry longer than the
    system prompt still serves other questions' requests up to where they differ. At most ``entries``
    openings are kept, least recently used dropped first (each agent's system prompt, when agents
    share an engine). The engine clears it when the model's weights change (an RL update in place).
    """

    def __init__(self, entries: int = 4, min_tokens: int = MIN_SHARED_OPENING):
        self.entries = entries
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], KVEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, prompt_ids: list[int]) -> tuple[int, KVEntry | None]:
        """The stored opening covering the most leading tokens of ``prompt_ids`` (its last token excluded:
        the model has to run at least one), or ``(0, None)`` when none covers ``min_tokens``."""
        best, found = 0, None
        for key, entry in self._entries.items():
            limit = min(len(key), len(prompt_ids) - 1)
            common = next((i for i in range(limit) if key[i] != prompt_ids[i]), limit)
            if common > best:
                best, found = common, key
        if found is None or best < self.min_tokens:
            return 0, None
        self._entries.move_to_end(found)
        return best, self._entries[found]

    def clear(self) -> None:
        self._entries.clear()

    def put(self, entry: KVEntry) -> None:
        self._entries[tuple(entry.ids)] = entry
        self._entries.move_to_end(tuple(entry.ids))
        while len(self._entries) > self.entries:
            self._entries.popitem(last=False)


def shared_openings(prompts: dict[int, list[int]], min_tokens: int = MIN_SHARED_OPENING) -> list[tuple[list[int], int]]:
    """Groups of at least two rows (keys of ``prompts``) and the length of the opening each group shares.

    The rows are split where their prompts first diverge until a group's common opening reaches
    ``min_tokens`` (so two agents' prompts in one batch give each agent's system prompt, not the
    few template tokens they share). An opening never covers a prompt's last token.
    """
    groups: list[tuple[list[int], int]] = []

    def visit(rows: list[int], known: int) -> None:
        if len(rows) < 2:
            return
        limit = min(len(prompts[r]) for r in rows) - 1
        first = prompts[rows[0]]
        length = next((i for i in range(known, limit) if any(prompts[r][i] != first[i] for r in rows[1:])), limit)
        if length >= min_tokens:
            groups.append((rows, length))
            return
        if length == limit:  # a prompt ends here: no longer opening to find
            return
        by_next: dict[int, list[int]] = {}
        for r in rows:
            by_next.setdefault(prompts[r][length], []).append(r)
        for part in by_next.values():
            visit(part, length)

    visit(sorted(prompts), 0)
    return groups
