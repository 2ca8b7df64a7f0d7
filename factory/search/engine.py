"""Constrained multi-objective search for the best sub-network per target (NSGA-II, feasibility first).

Objectives: predicted accuracy (max), predicted p50 latency (min), and size (min) when the target
budgets size. Budgets (p50, p95, size, peak memory, min accuracy) are constraints handled
feasibility-first: an infeasible individual gets fitness values worse than any feasible one on
every objective and ordered by its total normalised violation, so under plain Pareto dominance
(DEAP's selNSGA2) any feasible individual dominates any infeasible one and, among infeasible ones,
the smaller violation dominates. Nothing loops until feasible: the search always ends after
`generations`, and an infeasible target yields the closest candidate and its misses.

Evaluation is batched: `accuracy_fn(archs) -> accuracies` is called once per generation on every
new canonical arch (a vectorised predictor forward), and `map_fn` maps an evaluator over chunks
(swap in `ProcessPoolExecutor.map` for slow accuracy functions). Every canonical arch is
evaluated once (cache).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from exports.budgets import Constraints
from factory.errors import UserInputError
from factory.search.nsga import GenomeLayout, NSGAConfig, make_toolbox, run_nsga2
from supernets.arch import ArchConfig
from supernets.space import SearchSpace

AccuracyFn = Callable[[Sequence[ArchConfig]], Sequence[float]]
MapFn = Callable[..., Iterable[Any]]

_INFEASIBLE_OFFSET = 1e9  # larger than any latency (ms) or size (MB) a feasible candidate can have


class LatencyLike(Protocol):
    """What search needs from `targets.latency.LatencyModel` (ms and MB, per arch)."""

    def predict(self, arch: ArchConfig) -> float: ...
    def predict_p95(self, arch: ArchConfig) -> float: ...
    def size_mb(self, arch: ArchConfig) -> float: ...
    def peak_memory_mb(self, arch: ArchConfig) -> float: ...


@dataclass(frozen=True)
class Prediction:
    """Predicted figures of one sub-network (accuracy 0..1, latency ms, sizes MB)."""

    accuracy: float
    latency_p50_ms: float
    latency_p95_ms: float
    size_mb: float
    peak_memory_mb: float

    def value(self, name: str) -> float:
        """The figure a budget constrains (`min_accuracy` constrains `accuracy`)."""
        return self.accuracy if name == "min_accuracy" else float(getattr(self, name))

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(getattr(self, k)), 6) for k in
                ("accuracy", "latency_p50_ms", "latency_p95_ms", "size_mb", "peak_memory_mb")}


@dataclass(frozen=True)
class Miss:
    """How far one figure is from its budget (excess > 0 means the budget is missed)."""

    budget_name: str
    value: float
    budget: float

    @property
    def excess(self) -> float:
        return self.budget - self.value if self.budget_name == "min_accuracy" else self.value - self.budget

    @property
    def fraction(self) -> float:
        """Excess relative to the budget: the normalised violation of this constraint."""
        return max(0.0, self.excess) / abs(self.budget) if self.budget else max(0.0, self.excess)

    def describe(self) -> str:
        unit = "" if self.budget_name == "min_accuracy" else (" ms" if "latency" in self.budget_name else " MB")
        if self.budget_name == "min_accuracy":
            return (f"min_accuracy: {self.value:.4f} < {self.budget:.4f} "
                    f"(short by {self.excess:.4f})")
        return (f"{self.budget_name}: {self.value:.4g}{unit} > {self.budget:.4g}{unit} "
                f"(over by {self.excess:.4g}{unit}, +{100 * self.fraction:.1f}%)")

    def to_dict(self) -> dict[str, float | str]:
        return {"budget": self.budget, "value": round(self.value, 6), "excess": round(self.excess, 6),
                "fraction": round(self.fraction, 6)}


def objectives_for(budgets: Constraints) -> tuple[str, ...]:
    """Accuracy and latency always; size as a third objective when the target budgets size."""
    return ("accuracy", "latency_p50_ms", "size_mb") if budgets.size_mb is not None else ("accuracy", "latency_p50_ms")


def check_budgets(budgets: Constraints, values: Prediction) -> dict[str, Miss]:
    """Every budgeted figure against its budget (misses and passes alike)."""
    return {name: Miss(name, values.value(name), budget) for name, budget in budgets.items()}


def arch_label(arch: ArchConfig) -> str:
    """One line naming a sub-network (for messages)."""
    return (f"r{arch.resolution} d{list(arch.depths)} k{list(arch.kernel_sizes)} "
            f"e{list(arch.expand_ratios)}")


@dataclass(frozen=True)
class Measurement:
    """Figures measured for real on a candidate (BN-recalibrated accuracy, exported-file latency)."""

    accuracy: float
    latency_p50_ms: float
    latency_p95_ms: float
    size_mb: float
    peak_memory_mb: float  # not measurable here: the latency model's estimate, said so in `notes`
    notes: str = ""
    latency_p50_spread_ms: float = 0.0  # slowest timing round's median minus p50 (exports.timing)

    def value(self, name: str) -> float:
        return self.accuracy if name == "min_accuracy" else float(getattr(self, name))

    def checked_value(self, name: str) -> float:
        """The figure a budget is checked against: the p50 together with its run-to-run spread, so a pick
        still fits when its user times it again; every other figure as measured."""
        return self.value(name) + (self.latency_p50_spread_ms if name == "latency_p50_ms" else 0.0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: round(float(getattr(self, k)), 6) for k in
                             ("accuracy", "latency_p50_ms", "latency_p95_ms", "latency_p50_spread_ms", "size_mb",
                              "peak_memory_mb")}
        if self.notes:
            d["notes"] = self.notes
        return d


@dataclass(frozen=True)
class Candidate:
    """One evaluated sub-network: its predictions against the budgets, and measurements once checked."""

    arch: ArchConfig
    predicted: Prediction
    checks: dict[str, Miss] = field(default_factory=dict)
    measured: Measurement | None = None
    measured_checks: dict[str, Miss] | None = None

    @property
    def feasible(self) -> bool:
        return all(m.excess <= 0 for m in self.checks.values())

    @property
    def violation(self) -> float:
        """Total normalised violation over all budgets (0 when feasible)."""
        return sum(m.fraction for m in self.checks.values())

    @property
    def misses(self) -> dict[str, Miss]:
        return {k: m for k, m in self.checks.items() if m.excess > 0}

    @property
    def passes_measured(self) -> bool:
        return self.measured_checks is not None and all(m.excess <= 0 for m in self.measured_checks.values())

    def fitness(self, objectives: Sequence[str]) -> tuple[float, ...]:
        """Feasibility-first encoding (see module docstring); objective 0 is maximised, the rest minimised."""
        if self.feasible:
            return tuple(self.predicted.value(o) for o in objectives)
        v = self.violation
        return (-1.0 - v,) + (_INFEASIBLE_OFFSET + v,) * (len(objectives) - 1)

    def describe_misses(self) -> str:
        return "; ".join(m.describe() for m in self.misses.values()) or "meets every budget"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "arch": self.arch.to_dict(),
            "ofa_arch": self.arch.to_ofa_dict(),
            "predicted": self.predicted.to_dict(),
            "feasible": self.feasible,
            "violation": round(self.violation, 6),
            "misses": {k: m.to_dict() for k, m in self.misses.items()},
        }
        if self.measured is not None:
            d["measured"] = self.measured.to_dict()
            d["measured_passes"] = self.passes_measured
            d["measured_misses"] = {k: m.to_dict() for k, m in (self.measured_checks or {}).items() if m.excess > 0}
        return d


@dataclass(frozen=True)
class SearchResult:
    """Pareto front (feasible first), the pick and, when nothing is feasible, the closest candidate."""

    pareto: list[Candidate]
    chosen: Candidate | None
    closest: Candidate | None
    objectives: tuple[str, ...]
    budgets: Constraints
    evaluations: int  # fitness assignments (population x generations, roughly)
    unique_evaluations: int  # distinct canonical archs evaluated
    seconds: float
    seed: int
    population: int
    generations: int
    checked: list[Candidate] = field(default_factory=list)  # candidates verified for real, in order
    notes: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> list[Candidate]:
        return [c for c in self.pareto if c.feasible]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": list(self.objectives),
            "budgets": self.budgets.to_dict(),
            "seed": self.seed,
            "population": self.population,
            "generations": self.generations,
            "evaluations": self.evaluations,
            "unique_evaluations": self.unique_evaluations,
            "seconds": round(self.seconds, 3),
            "pareto": [c.to_dict() for c in self.pareto],
            "checked": [c.to_dict() for c in self.checked],
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "closest": None if self.closest is None else self.closest.to_dict(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CandidateEvaluator:
    """Predicts every figure of a batch of archs. Picklable, so `map_fn` may be a process pool's map."""

    accuracy_fn: AccuracyFn
    latency_model: LatencyLike

    def __call__(self, archs: Sequence[ArchConfig]) -> list[Prediction]:
        if not archs:
            return []
        accs = [float(a) for a in self.accuracy_fn(archs)]
        lm = self.latency_model
        return [
            Prediction(acc, float(lm.predict(a)), float(lm.predict_p95(a)), float(lm.size_mb(a)),
                       float(lm.peak_memory_mb(a)))
            for a, acc in zip(archs, accs, strict=True)
        ]


def _chunks(items: list, size: int | None) -> list[list]:
    if not items:
        return []
    size = len(items) if size is None or size <= 0 else size
    return [items[i : i + size] for i in range(0, len(items), size)]


def nondominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of `points` (all objectives minimised) that no other row dominates.

    Rows are visited in lexicographic order, so a row can only be dominated by an earlier one, and
    only the current front needs checking (dominance is transitive): O(n x front), not O(n^2).
    """
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort(points.T[::-1])
    front = np.empty((0, points.shape[1]))
    for i in order:
        p = points[i]
        if len(front) and ((front <= p).all(1) & (front < p).any(1)).any():
            continue
        mask[i] = True
        front = np.vstack([front, p])
    return mask


def pareto_front(candidates: Sequence[Candidate], objectives: Sequence[str]) -> list[Candidate]:
    """Feasible non-dominated candidates (most accurate first), then the infeasible non-dominated
    ones (least violating first) so a plot shows what lies beyond the budgets."""
    out: list[Candidate] = []
    for group, key in (([c for c in candidates if c.feasible], lambda c: (-c.predicted.accuracy, c.violation)),
                       ([c for c in candidates if not c.feasible], lambda c: (c.violation, -c.predicted.accuracy))):
        if not group:
            continue
        pts = np.array([[-c.predicted.accuracy, *(c.predicted.value(o) for o in objectives[1:])] for c in group])
        mask = nondominated(pts)
        out.extend(sorted((c for c, keep in zip(group, mask, strict=True) if keep), key=key))
    return out


def closest_candidate(candidates: Iterable[Candidate]) -> Candidate | None:
    """Smallest total normalised violation; the more accurate one on ties."""
    return min(candidates, key=lambda c: (c.violation, -c.predicted.accuracy), default=None)


def search(
    space: SearchSpace,
    accuracy_fn: AccuracyFn,
    latency_model: LatencyLike,
    profile: Any,
    population: int = 100,
    generations: int = 100,
    seed: int = 0,
    map_fn: MapFn = map,
    chunk_size: int | None = None,
    mutation_rate: float = 2.0,
) -> SearchResult:
    """NSGA-II over `space` for the budgets of `profile`. Same seed (and inputs) -> same result.

    `chosen` is the most accurate feasible candidate by prediction (not yet verified: see
    `factory.search.pick`); `closest` is set when nothing is feasible.
    """
    if population < 4:
        raise UserInputError(f"population: must be >= 4, got {population}")
    if generations < 0:
        raise UserInputError(f"generations: must be >= 0, got {generations}")
    start = time.perf_counter()
    budgets = profile.constraints
    objectives = objectives_for(budgets)
    rng = random.Random(seed)
    toolbox = make_toolbox(space, rng, len(objectives), mutation_rate=mutation_rate)
    layout: GenomeLayout = toolbox.layout()
    evaluator = CandidateEvaluator(accuracy_fn, latency_model)
    cache: dict[tuple[int, ...], Candidate] = {}
    counter = {"evaluations": 0}

    def evaluate_batch(genomes: Sequence[Sequence[int]]) -> list[tuple[float, ...]]:
        keys = [layout.canonical_key(g) for g in genomes]
        missing = list(dict.fromkeys(k for k in keys if k not in cache))
        archs = [space.decode(k) for k in missing]
        preds = [p for chunk in map_fn(evaluator, _chunks(archs, chunk_size)) for p in chunk]
        for key, arch, pred in zip(missing, archs, preds, strict=True):
            cache[key] = Candidate(arch, pred, check_budgets(budgets, pred))
        counter["evaluations"] += len(keys)
        return [cache[k].fitness(objectives) for k in keys]

    seeds = [toolbox.individual(space.smallest()), toolbox.individual(space.largest())]
    run_nsga2(toolbox, evaluate_batch, NSGAConfig(population, generations), seeds=seeds)
    evaluated = list(cache.values())
    front = pareto_front(evaluated, objectives)
    feasible = [c for c in front if c.feasible]
    return SearchResult(
        pareto=front,
        chosen=feasible[0] if feasible else None,
        closest=None if feasible else closest_candidate(evaluated),
        objectives=objectives,
        budgets=budgets,
        evaluations=counter["evaluations"],
        unique_evaluations=len(cache),
        seconds=time.perf_counter() - start,
        seed=seed,
        population=population,
        generations=generations,
    )


def random_search(
    space: SearchSpace,
    accuracy_fn: AccuracyFn,
    latency_model: LatencyLike,
    profile: Any,
    evaluations: int,
    seed: int = 0,
) -> SearchResult:
    """Baseline: `evaluations` uniformly sampled sub-networks, same evaluator and front (for benchmarks)."""
    start = time.perf_counter()
    budgets = profile.constraints
    objectives = objectives_for(budgets)
    rng = random.Random(seed)
    archs = {space.canonical(space.sample(rng)): None for _ in range(evaluations)}
    preds = CandidateEvaluator(accuracy_fn, latency_model)(list(archs))
    evaluated = [Candidate(a, p, check_budgets(budgets, p)) for a, p in zip(archs, preds, strict=True)]
    front = pareto_front(evaluated, objectives)
    feasible = [c for c in front if c.feasible]
    return SearchResult(front, feasible[0] if feasible else None,
                        None if feasible else closest_candidate(evaluated), objectives, budgets,
                        evaluations, len(evaluated), time.perf_counter() - start, seed, evaluations, 0)
