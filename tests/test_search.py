"""NSGA-II search: valid variation, reproducibility, feasibility-first ordering, infeasible targets.

Accuracy and latency here are pure functions of the config computed from `supernets.cost`
(search_proxies): the algorithm is under test, not a runtime.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from deap import tools
from search_proxies import CostLatencyModel, SyntheticAccuracy

from factory.search.engine import (
    Candidate,
    Prediction,
    check_budgets,
    nondominated,
    objectives_for,
    random_search,
    search,
)
from factory.search.nsga import (
    GenomeLayout,
    crossover_uniform,
    individual_class,
    make_toolbox,
    mutate_genes,
    repair_compound,
)
from supernets import get_space
from targets.profile import Constraints, TargetProfile


def _profile(**budgets: float) -> TargetProfile:
    return TargetProfile("unit", "onnxruntime", "fp32", constraints=Constraints(**budgets))


SPACE = get_space()
LAT = CostLatencyModel(SPACE)
ACC = SyntheticAccuracy(SPACE)


@pytest.mark.parametrize("sampling", ["independent", "compound"])
def test_crossover_and_mutation_always_give_valid_archs(sampling: str) -> None:
    space = get_space(sampling=sampling)
    layout = GenomeLayout.of(space)
    rng = random.Random(0)
    for _ in range(400):
        a = space.encode(space.sample(rng))
        b = space.encode(space.sample(rng))
        crossover_uniform(a, b, indpb=0.5, rng=rng)
        mutate_genes(a, gene_sizes=layout.gene_sizes, genes=layout.mutable_genes, indpb=0.3, rng=rng)
        for g in (a, b):
            repair_compound(g, layout=layout)
            space.validate(space.decode(g))  # raises on an invalid config


def test_compound_crossover_without_repair_breaks_coupling_so_repair_matters() -> None:
    space = get_space(sampling="compound")
    rng = random.Random(1)
    broken = 0
    for _ in range(200):
        a, b = space.encode(space.sample(rng)), space.encode(space.sample(rng))
        crossover_uniform(a, b, indpb=0.5, rng=rng)
        try:
            space.validate(space.decode(a))
        except ValueError:
            broken += 1
    assert broken > 20


def test_mutation_changes_the_expected_number_of_genes() -> None:
    layout = GenomeLayout.of(SPACE)
    rng = random.Random(2)
    changed = []
    for _ in range(500):
        g = SPACE.encode(SPACE.sample(rng))
        before = list(g)
        mutate_genes(g, gene_sizes=layout.gene_sizes, genes=layout.mutable_genes, indpb=2 / len(g), rng=rng)
        changed.append(sum(x != y for x, y in zip(before, g, strict=True)))
    assert 1.7 < np.mean(changed) < 2.3


def test_canonical_key_matches_space_canonical() -> None:
    layout = GenomeLayout.of(SPACE)
    rng = random.Random(3)
    for _ in range(100):
        arch = SPACE.sample(rng)
        assert SPACE.decode(layout.canonical_key(SPACE.encode(arch))) == SPACE.canonical(arch)


def test_same_seed_same_front_and_different_seed_differs() -> None:
    prof = _profile(latency_p50_ms=0.4)
    r1 = search(SPACE, ACC, LAT, prof, population=24, generations=8, seed=7)
    r2 = search(SPACE, ACC, LAT, prof, population=24, generations=8, seed=7)
    r3 = search(SPACE, ACC, LAT, prof, population=24, generations=8, seed=8)
    assert [c.arch for c in r1.pareto] == [c.arch for c in r2.pareto]
    assert r1.chosen == r2.chosen
    assert [c.arch for c in r1.pareto] != [c.arch for c in r3.pareto]


def test_process_pool_map_gives_the_same_result_as_map() -> None:
    prof = _profile(latency_p50_ms=0.4)
    serial = search(SPACE, ACC, LAT, prof, population=16, generations=4, seed=3)
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = search(SPACE, ACC, LAT, prof, population=16, generations=4, seed=3, map_fn=pool.map, chunk_size=8)
    assert [c.arch for c in pooled.pareto] == [c.arch for c in serial.pareto]


def test_feasible_dominates_infeasible_and_smaller_violation_dominates_larger() -> None:
    budgets = Constraints(latency_p50_ms=1.0, size_mb=2.0)
    objectives = objectives_for(budgets)
    arch = SPACE.smallest()

    def cand(acc: float, lat: float, size: float) -> Candidate:
        p = Prediction(acc, lat, lat, size, 1.0)
        return Candidate(arch, p, check_budgets(budgets, p))

    worst_feasible = cand(0.01, 0.99, 1.99)  # barely feasible and inaccurate
    best_infeasible = cand(0.99, 1.01, 0.5)  # 1% over one budget but accurate and small
    more_infeasible = cand(0.99, 1.5, 0.5)
    cls = individual_class(len(objectives))
    inds = []
    for c in (worst_feasible, best_infeasible, more_infeasible):
        ind = cls([0])
        ind.fitness.values = c.fitness(objectives)
        inds.append(ind)
    assert objectives == ("accuracy", "latency_p50_ms", "size_mb")
    assert inds[0].fitness.dominates(inds[1].fitness)
    assert inds[1].fitness.dominates(inds[2].fitness)
    assert best_infeasible.violation == pytest.approx(0.01)
    assert [len(f) for f in tools.sortNondominated(inds, 3)] == [1, 1, 1]


def test_search_pick_meets_budgets_and_beats_random_baseline_accuracy() -> None:
    prof = _profile(latency_p50_ms=0.3, size_mb=6.0)
    r = search(SPACE, ACC, LAT, prof, population=40, generations=25, seed=0)
    assert r.objectives == ("accuracy", "latency_p50_ms", "size_mb")
    assert r.chosen is not None and r.closest is None
    assert LAT.predict(r.chosen.arch) <= 0.3 and LAT.size_mb(r.chosen.arch) <= 6.0
    assert r.pareto[0] == r.chosen and all(c.feasible for c in r.feasible)
    rand = random_search(SPACE, ACC, LAT, prof, evaluations=r.evaluations, seed=0)
    assert rand.chosen is not None
    assert r.chosen.predicted.accuracy >= rand.chosen.predicted.accuracy


def test_infeasible_target_returns_closest_with_misses_quickly() -> None:
    fastest = LAT.predict(SPACE.smallest())
    prof = _profile(latency_p50_ms=fastest * 0.5, min_accuracy=0.999)
    r = search(SPACE, ACC, LAT, prof, population=100, generations=30, seed=0)
    assert r.evaluations <= 100 * (30 + 1)  # the generation budget ends an infeasible search: no hang
    assert r.chosen is None and r.closest is not None and not r.feasible
    misses = r.closest.misses
    assert set(misses) == {"latency_p50_ms", "min_accuracy"}
    assert misses["latency_p50_ms"].excess >= fastest * 0.5 - 1e-9
    # the closest candidate is the least-violating evaluated one: nothing on the front is closer
    assert all(r.closest.violation <= c.violation + 1e-12 for c in r.pareto)
    assert "latency_p50_ms" in r.closest.describe_misses()


def test_nondominated_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    pts = np.round(rng.random((300, 3)), 1)  # many ties
    brute = np.array([not any((q <= p).all() and (q < p).any() for q in pts) for p in pts])
    assert (nondominated(pts) == brute).all()


def test_log_nondominated_sort_agrees_with_standard_on_encoded_fitness() -> None:
    """The toolbox uses selNSGA2(nd="log") for speed; it must rank exactly like the standard sort."""
    rng = random.Random(0)
    for n_obj in (2, 3):
        cls = individual_class(n_obj)
        for _ in range(40):
            inds = []
            for i in range(60):
                ind = cls([i])
                if rng.random() < 0.3:
                    v = rng.choice([0.1, 0.5, rng.random()])
                    ind.fitness.values = (-1 - v,) + (1e9 + v,) * (n_obj - 1)
                else:
                    ind.fitness.values = tuple(round(rng.random(), 1) for _ in range(n_obj))
                inds.append(ind)
            std = [sorted(i[0] for i in f) for f in tools.sortNondominated(inds, len(inds))]
            log = [sorted(i[0] for i in f) for f in tools.sortLogNondominated(inds, len(inds))]
            assert std == log


def test_toolbox_operators_are_bound_to_the_given_rng_not_the_global_one() -> None:
    def offspring(seed: int) -> list[list[int]]:
        tb = make_toolbox(SPACE, random.Random(seed), 2)
        a, b = tb.sample(), tb.sample()
        random.seed(12345 + seed)  # global state must not matter
        tb.mate(a, b)
        tb.mutate(a)
        return [list(a), list(b)]

    assert offspring(5) == offspring(5)
