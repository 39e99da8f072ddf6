"""One AdamW step over SmolLM2-135M's parameter count in fp32: torch's fused kernel against ``foreach``
(torch's default) and the per-parameter loop, in one process. What ``longshort.trainers.optim.adamw``
picks, and why: time per step and the memory a step adds above the optimiser's own states.

    python benchmarks/adamw_step.py
"""
from __future__ import annotations

import time

import torch

from longshort.memory import release_freed_memory

SIZES = [28_311_552] + [3_538_944] * 30  # ~135M: the tied embedding and 30 decoder layers' worth


def _kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        return int(next(line for line in handle if line.startswith(field + ":")).split()[1])


def measure(kind: str, steps: int = 3) -> tuple[float, float]:
    """Seconds per step and GiB added above the RSS before the measured steps."""
    params = [torch.nn.Parameter(torch.randn(n)) for n in SIZES]
    for p in params:
        p.grad = torch.randn_like(p)
    options = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[kind]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, **options)
    optimizer.step()  # allocates the states
    release_freed_memory()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := current RSS
    base = _kib("VmRSS")
    began = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    seconds = (time.perf_counter() - began) / steps
    added = (_kib("VmHWM") - base) / 2**20
    del optimizer, params
    release_freed_memory()
    return seconds, added


def main() -> None:
    print(f"AdamW over {sum(SIZES) / 1e6:.0f}M fp32 parameters, threads={torch.get_num_threads()}")
    results = {kind: measure(kind) for kind in ("foreach", "loop", "fused")}
    for kind, (seconds, added) in results.items():
        print(f"{kind:>8}: {seconds:6.2f} s/step, +{added:.2f} GiB during the step")
    print(f"fused / foreach: {results['fused'][0] / results['foreach'][0]:.2f}x time")


if __name__ == "__main__":
    main()
