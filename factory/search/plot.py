"""pareto.png: predicted accuracy vs predicted p50 latency of the front, the budget lines, the pick, and
the hand-scaled baselines (uniformly scaled sub-networks: measured accuracy at predicted latency).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it works
headless and leaves no state behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from factory.search.engine import Candidate, SearchResult


def plot_pareto(result: SearchResult, path: Path, title: str,
                baselines: Sequence[tuple[Candidate, float]] = ()) -> Path:
    """Write the plot to `path` (PNG) and return it. `baselines`: (candidate, measured accuracy) of the
    hand-scaled networks a user would otherwise try."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    feas = [c for c in result.pareto if c.feasible]
    infeas = [c for c in result.pareto if not c.feasible]
    if infeas:
        ax.scatter([c.predicted.latency_p50_ms for c in infeas], [100 * c.predicted.accuracy for c in infeas],
                   s=12, c="0.65", label=f"front beyond budgets ({len(infeas)})")
    if feas:
        ax.scatter([c.predicted.latency_p50_ms for c in feas], [100 * c.predicted.accuracy for c in feas],
                   s=14, c="tab:blue", label=f"feasible front ({len(feas)})")
    if baselines:
        ax.scatter([c.predicted.latency_p50_ms for c, _ in baselines], [100 * acc for _, acc in baselines],
                   s=22, marker="s", facecolors="none", edgecolors="tab:green",
                   label=f"hand-scaled (uniform) networks ({len(baselines)})")
    checked = [c for c in result.checked if c.measured is not None]
    if checked:
        ax.scatter([c.measured.latency_p50_ms for c in checked],  # type: ignore[union-attr]
                   [100 * c.measured.accuracy for c in checked],  # type: ignore[union-attr]
                   s=40, facecolors="none", edgecolors="tab:orange", label="checked (measured)")
    b = result.budgets
    if b.latency_p50_ms is not None:
        ax.axvline(b.latency_p50_ms, color="tab:red", ls="--", lw=1, label=f"p50 budget {b.latency_p50_ms:g} ms")
    if b.latency_p95_ms is not None:
        ax.axvline(b.latency_p95_ms, color="tab:red", ls=":", lw=1, label=f"p95 budget {b.latency_p95_ms:g} ms")
    if b.min_accuracy is not None:
        ax.axhline(100 * b.min_accuracy, color="tab:purple", ls="--", lw=1,
                   label=f"min accuracy {100 * b.min_accuracy:g}%")
    pick = result.chosen or result.closest
    if pick is not None:
        label = "pick (predicted)" if result.chosen is not None else "closest (infeasible)"
        ax.scatter([pick.predicted.latency_p50_ms], [100 * pick.predicted.accuracy], marker="*", s=220,
                   c="tab:red", edgecolors="k", zorder=5, label=label)
    ax.set_xlabel("predicted latency p50 (ms)")
    ax.set_ylabel("predicted accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
