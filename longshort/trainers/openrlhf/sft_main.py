"""``deepspeed --module longshort.trainers.openrlhf.sft_main <train_sft flags>``: OpenRLHF's SFT on our token ids.

OpenRLHF's ``SFTDataset`` tokenizes text: the prompt alone (for the loss mask) and prompt + response
(for the ids). Our examples are token ids rendered turn by turn (the agent's view, exactly what RL
later generates after), and a text of several turns re-tokenizes differently wherever the tokenizer
merges across a turn boundary (``">" + "\n\n"`` into one token with Qwen2/Llama-3-style
pre-tokenizers; ``"\n\n" + "<"`` with GPT-2's). This entry point runs ``openrlhf.cli.train_sft``
unchanged, with its tokenizer wrapped so that the two texts of every row of ``--data.dataset`` come
back as the row's own ids (``input_ids``, ``ids``, written by ``launch.write_sft_data``); any other
text goes to the real tokenizer. The flags are OpenRLHF's, checked by its own parser.
"""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any


class ExactTokenizer:
    """A tokenizer that returns known ids for known texts and defers everything else to ``tokenizer``."""

    def __init__(self, tokenizer, known: dict[str, list[int]]):
        self._tokenizer = tokenizer
        self._known = known

    @classmethod
    def from_rows(cls, tokenizer, rows) -> "ExactTokenizer":
        """The texts ``SFTDataset`` tokenizes for each row, mapped to the row's ids."""
        known = {}
        for row in rows:
            known[row["input"]] = list(row["input_ids"])
            known[(row["input"] + row["output"]).rstrip("\n")] = list(row["ids"])
        return cls(tokenizer, known)

    def __call__(self, text=None, max_length: int | None = None, truncation: bool = False, return_tensors=None,
                 **kwargs):
        ids = self._known.get(text) if isinstance(text, str) else None
        if ids is None:
            return self._tokenizer(text, max_length=max_length, truncation=truncation, return_tensors=return_tensors,
                                   **kwargs)
        if truncation and max_length is not None:
            ids = ids[:max_length]
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.tensor([ids], dtype=torch.long),
                    "attention_mask": torch.ones((1, len(ids)), dtype=torch.long)}
        return {"input_ids": list(ids), "attention_mask": [1] * len(ids)}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._tokenizer, name)

    def __getstate__(self) -> dict:  # datasets.map pickles the tokenizer into its worker processes
        return {"_tokenizer": self._tokenizer, "_known": self._known}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def _dataset_path(argv: list[str]) -> Path:
    return Path(argv[argv.index("--data.dataset") + 1])


def main() -> None:
    import openrlhf.utils

    with _dataset_path(sys.argv).open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    real = openrlhf.utils.get_tokenizer

    def get_tokenizer(*args, **kwargs):
        return ExactTokenizer.from_rows(real(*args, **kwargs), rows)

    openrlhf.utils.get_tokenizer = get_tokenizer  # train_sft imports it from there when it runs below
    runpy.run_module("openrlhf.cli.train_sft", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
