"""Device budgets: the one definition of what a target may constrain.

The target profile reads them, the search treats them as constraints and the package gate checks the
ones a file can be measured against. Import-cheap (stdlib only): the CLI and probe bundles load it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

BUDGET_NAMES: tuple[str, ...] = ("latency_p50_ms", "latency_p95_ms", "size_mb", "peak_memory_mb", "min_accuracy")
LATENCY_BUDGETS: tuple[str, ...] = ("latency_p50_ms", "latency_p95_ms")
# peak memory is an estimate of the latency model, not a figure of the file: the search owns it
GATE_BUDGETS: tuple[str, ...] = tuple(n for n in BUDGET_NAMES if n != "peak_memory_mb")


@dataclass(frozen=True)
class Constraints:
    """Hard budgets; None = no budget. Latencies in ms, sizes in MB (1e6 bytes), accuracy in 0..1."""

    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    size_mb: float | None = None
    peak_memory_mb: float | None = None
    min_accuracy: float | None = None

    def items(self) -> Iterator[tuple[str, float]]:
        """(name, budget) of every budget that is set, in BUDGET_NAMES order."""
        for name in BUDGET_NAMES:
            value = getattr(self, name)
            if value is not None:
                yield name, float(value)

    def to_dict(self) -> dict[str, float]:
        return dict(self.items())

    def gate_budgets(self, latency_measured_here: bool) -> dict[str, float]:
        """What the package gate can check on this machine: not peak memory, and latency only when the
        target's latency is measured here (a remote device's budgets say nothing about this CPU)."""
        skip = () if latency_measured_here else LATENCY_BUDGETS
        return {k: v for k, v in self.items() if k in GATE_BUDGETS and k not in skip}
