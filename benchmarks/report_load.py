"""Run report: how long a 12-step x 32-episode run's page takes to write and to open, sampled vs. embedding all.

Issue requirement: "the page loads in a few seconds for 12 steps x 32 episodes and samples (with a
stated rule) beyond a size limit rather than embedding everything". This script writes such a run
with the trainer's own writers (``save_episodes``, ``episode_metrics``), at two scales:

- ``tiny``: the tiny recipe's shape, 1-4 turns of at most 96 tokens (about 400 characters each);
- ``long``: long-CoT episodes, 8 turns of 2,048 tokens (about 8,000 characters each), 25 MB of text;

then writes the report twice: with the default sampling rule, and with every episode embedded (the
peer), and opens each in headless Chromium. It prints the page size, the seconds to write it, the
seconds until the page has loaded and its script has built the episode list, and the seconds to open
one episode, with the ratio sampled / everything.

    python benchmarks/report_load.py            # both scales
    python benchmarks/report_load.py --scale tiny

Needs Debian's ``chromium`` (``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from longshort.episode import Episode, Outcome, Turn, save_episodes
from longshort.report import write_report
from longshort.report.chromium import Chromium
from longshort.trainers.metrics import episode_metrics

WORDS = ("so", "the", "total", "is", "we", "add", "then", "each", "bag", "has", "apples", "left", "after", "giving",
         "3", "12", "45", "times", "minus", "check", "again", "wait", "that", "means", "answer")
SCALES = {"tiny": {"turns": (1, 4), "long_tokens": 96, "short_tokens": 64},
          "long": {"turns": (8, 8), "long_tokens": 2048, "short_tokens": 2048}}


def text_of(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(int(tokens * 0.8)))  # about 4 characters per token


def make_run(root: Path, scale: str, steps: int = 12, episodes: int = 32) -> Path:
    shape, rng = SCALES[scale], random.Random(0)
    (root / "rl" / "episodes").mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: bench-{scale}\nstages: [rl]\nagents:\n  long: {{type: long}}\n"
                                      "  short: {type: short}\n")
    lines = []
    for step in range(1, steps + 1):
        batch = []
        for index in range(episodes):
            turns = []
            for position in range(rng.randint(*shape["turns"])):
                role = "long" if position % 2 == 0 else "short"
                n = rng.randint(shape[f"{role}_tokens"] // 2, shape[f"{role}_tokens"])
                turns.append(Turn(role, list(range(200)), list(range(n)), [-0.5] * n, text_of(rng, n), "stop", "bench"))
            kind = rng.choice(["correct", "correct", "wrong", "format:short", "turn_cap"])
            outcome = Outcome(reason="answered" if kind in ("correct", "wrong") else kind, correct=kind == "correct",
                              verdict="ok" if kind == "correct" else "wrong", extracted="42")
            batch.append(Episode(f"q{step}-{index // 4}", index % 4, "How many apples are left?", "42", turns, outcome,
                                 rewards={"long": {"collaboration": float(kind == "correct")},
                                          "short": {"correctness": float(kind == "correct")}},
                                 totals={"long": float(kind == "correct"), "short": float(kind == "correct")}))
        save_episodes(batch, root / "rl" / "episodes" / f"step_{step:04d}.jsonl")
        lines.append({"step": step, **episode_metrics(batch, ["long", "short"]), "time/step_s": 1.0})
    (root / "rl" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


def measure(browser: Chromium, page: Path) -> tuple[float, float]:
    """Seconds until the page has loaded with its episode list, and to open one episode."""
    loaded = browser.open(page.as_uri())
    browser.wait_for("document.querySelectorAll('#ep-list tr.episode').length > 0")
    opened = browser.evaluate("(() => { const t = performance.now(); "
                              "document.querySelectorAll('#ep-list tr.episode')[3].click(); "
                              "document.getElementById('ep-detail').innerText; "  # forces the layout
                              "return (performance.now() - t) / 1000; })()")
    return loaded, opened


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), action="append")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Chromium() as browser:
        for scale in args.scale or ["tiny", "long"]:
            run = make_run(Path(tmp) / scale, scale)
            text = sum(f.stat().st_size for f in (run / "rl" / "episodes").iterdir())
            print(f"\n{scale}: 12 steps x 32 episodes, episode files {text / 1e6:.1f} MB")
            rows = {}
            for label, limits in (("sampled (default rule)", {}),
                                  ("everything embedded", {"max_per_group": 10**6, "max_bytes": 10**12})):
                began = time.perf_counter()
                page = write_report(run, run / f"{label.split()[0]}.html", **limits)
                written = time.perf_counter() - began
                measure(browser, page)  # warm-up: the first page of a fresh browser pays its start-up
                loaded, opened = measure(browser, page)
                rows[label] = (page.stat().st_size / 1e6, written, loaded, opened)
                print(f"  {label:24s} page {rows[label][0]:6.1f} MB  write {written:5.2f} s  "
                      f"load {loaded:5.2f} s  open an episode {opened * 1000:6.1f} ms")
            (size_a, _, load_a, _), (size_b, _, load_b, _) = rows.values()
            print(f"  sampled / everything: page size x{size_a / size_b:.2f}, load time x{load_a / load_b:.2f}")


if __name__ == "__main__":
    main()
