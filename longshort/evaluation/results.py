"""``results.json``: one evaluated system, its settings, and the metrics of every problem set."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from longshort.evaluation.metrics import SetResult
from longshort.paths import write_text_atomically


@dataclass
class Results:
    """What one evaluation produced.

    ``models`` maps each agent role to its model; ``settings`` holds the sampling protocol
    (temperature, tokens per turn, turn cap, engine); samples per item are per set (``SetResult``).
    ``generated_tokens`` and
    ``generation_seconds`` cover only the episodes this invocation played (records found from an
    earlier, interrupted run are not re-timed), so their ratio is the measured decoding throughput.
    """

    system: str
    mode: str
    models: dict[str, str]
    settings: dict
    sets: dict[str, SetResult] = field(default_factory=dict)
    generated_tokens: int = 0
    generation_seconds: float = 0.0

    @property
    def average_accuracy(self) -> float:
        """Unweighted mean over sets, as the paper's "Avg." column (every benchmark counts the same)."""
        return statistics.fmean(s.accuracy for s in self.sets.values())

    @property
    def average_tokens(self) -> float:
        return statistics.fmean(s.tokens for s in self.sets.values())

    @property
    def tokens_per_second(self) -> float | None:
        return self.generated_tokens / self.generation_seconds if self.generation_seconds > 0 else None

    def to_dict(self) -> dict:
        return {
            "system": self.system, "mode": self.mode, "models": self.models, "settings": self.settings,
            "sets": {name: result.to_dict() for name, result in self.sets.items()},
            "average": {"accuracy": self.average_accuracy, "tokens": self.average_tokens} if self.sets else None,
            "generated_tokens": self.generated_tokens, "generation_seconds": self.generation_seconds,
            "tokens_per_second": self.tokens_per_second,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Results:
        """A ``results.json`` file, or a directory holding one (an earlier evaluation's output)."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"no results.json at {path}: evaluate that system first, or fix the path")
        data = json.loads(path.read_text())
        return cls(system=data["system"], mode=data["mode"], models=data["models"], settings=data["settings"],
                   sets={name: SetResult.from_dict(s) for name, s in data["sets"].items()},
                   generated_tokens=data.get("generated_tokens", 0),
                   generation_seconds=data.get("generation_seconds", 0.0))
