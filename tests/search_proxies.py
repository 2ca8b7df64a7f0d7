"""Stand-ins computed from `supernets.cost`, for unit tests and benchmarks without a trained run.

Not mocks of a runtime: a MACs-based latency estimate and a smooth synthetic accuracy, both pure
functions of the config. The CLI never uses them (it needs a real latency table and predictor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace


@dataclass(frozen=True)
class CostLatencyModel:
    """Latency ~ overhead + MACs / throughput; size from params (fp32); memory from peak activations."""

    space: SearchSpace
    num_classes: int = 10
    overhead_ms: float = 0.05
    macs_per_ms: float = 2.0e7
    p95_factor: float = 1.15
    bytes_per_param: int = 4

    def predict(self, arch: ArchConfig) -> float:
        return self.overhead_ms + cost(self.space, arch, self.num_classes).macs / self.macs_per_ms

    def predict_p95(self, arch: ArchConfig) -> float:
        return self.p95_factor * self.predict(arch)

    def size_mb(self, arch: ArchConfig) -> float:
        return cost(self.space, arch, self.num_classes).params * self.bytes_per_param / 1e6

    def peak_memory_mb(self, arch: ArchConfig) -> float:
        c = cost(self.space, arch, self.num_classes)
        return (c.peak_activation_bytes + c.params * self.bytes_per_param) / 1e6


@dataclass(frozen=True)
class SyntheticAccuracy:
    """Accuracy rising with log MACs and resolution, saturating below 1: a smooth, known truth."""

    space: SearchSpace
    num_classes: int = 10

    def __call__(self, archs: Sequence[ArchConfig]) -> list[float]:
        out = []
        for a in archs:
            m = math.log(cost(self.space, a, self.num_classes).macs)
            kernel_bonus = 0.002 * sum(k for k in a.kernel_sizes) / len(a.kernel_sizes)
            out.append(0.98 - 2.5 / (1.0 + math.exp(m - 12.5)) * 0.2 + kernel_bonus)
        return out
