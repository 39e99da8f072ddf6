"""PNG figures of the analyses (matplotlib, headless): importance by thought index, pruning curves."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from longshort.analysis.importance import ImportanceResult
    from longshort.analysis.pruning import Cell

STRATEGY_STYLE = {"low": ("lowest entropy first", "tab:green"), "random": ("random", "tab:gray"),
                  "high": ("highest entropy first", "tab:red")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    return plt


def plot_importance(results: Sequence["ImportanceResult"], path: str | Path) -> Path:
    """S_i and A_i against the thought index: one faint line per chain, the mean per index on top,
    and the empty-thinking accuracy as a dashed reference (the paper's Fig. 3 shape)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, attr, title in ((axes[0], "score", "joint score S_i = A_i * delta(y_i)"),
                            (axes[1], "accuracy", "rollout accuracy A_i")):
        by_index: dict[int, list[float]] = {}
        for r in results:
            values = [getattr(t, attr) for t in r.thoughts]
            ax.plot(range(1, len(values) + 1), values, color="tab:blue", alpha=0.15, linewidth=1)
            for i, v in enumerate(values, 1):
                by_index.setdefault(i, []).append(v)
        xs = sorted(by_index)
        ax.plot(xs, [sum(by_index[x]) / len(by_index[x]) for x in xs], color="tab:blue", marker="o", linewidth=2,
                label="mean over chains")
        if results:
            ax.axhline(sum(r.baseline for r in results) / len(results), color="black", linestyle="--",
                       linewidth=1, label="no thinking (A_0)")
        ax.set(title=title, xlabel="thought index i", ylim=(-0.02, 1.02))
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_ylabel("value")
    return _save(fig, path)


def plot_pruning(cells: Sequence["Cell"], path: str | Path, title: str = "") -> Path:
    """Accuracy and thinking-token reduction against the pruned fraction kappa, per strategy."""
    plt = _pyplot()
    fig, (acc_ax, red_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for strategy, (label, color) in STRATEGY_STYLE.items():
        rows = sorted((c for c in cells if c.strategy == strategy), key=lambda c: c.kappa)
        if not rows:
            continue
        kappas = [c.kappa for c in rows]
        acc_ax.plot(kappas, [100 * c.accuracy for c in rows], marker="o", color=color, label=label)
        red_ax.plot(kappas, [100 * c.reduction for c in rows], marker="o", color=color, label=label)
    acc_ax.set(xlabel="fraction of steps pruned (kappa)", ylabel="accuracy (%)", title="answer after pruning")
    red_ax.set(xlabel="fraction of steps pruned (kappa)", ylabel="thinking tokens removed (%)",
               title="token reduction")
    for ax in (acc_ax, red_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
