"""DEAP NSGA-II over the integer genome of a search space: operators, toolbox, generational loop.

Follows DEAP's `examples/ga/nsga2.py` shape (free operator functions wired into a toolbox by one
factory function, hyper-parameters bound at registration) with two changes:
- randomness is a `random.Random` bound into every operator (DEAP's own operators use the global
  `random` module, which would make two searches in one process interfere);
- `creator` classes are created on first use, guarded, never at import time.

The genome is `space.encode(arch)`: one choice index per gene, `space.gene_choices` gives the
number of choices. Every operator keeps each gene in range, and `repair_compound` restores the
depth/expand coupling of a `sampling="compound"` space, so variation always yields valid configs.
Fitness *values* are whatever the caller's `evaluate_batch` returns (already encoded for
feasibility-first domination by `factory.search.engine`); this module knows nothing about budgets.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deap import base, creator, tools

from supernets.space import SearchSpace

Genome = list[int]
EvaluateBatch = Callable[[Sequence[Sequence[int]]], list[tuple[float, ...]]]


def individual_class(n_objectives: int) -> type:
    """The DEAP individual class for `n_objectives` (first maximised, the rest minimised).

    Created once per process and reused: `creator.create` twice with the same name warns and
    replaces the class, which breaks pickling of existing individuals.
    """
    if n_objectives < 2:
        raise ValueError(f"n_objectives: expected >= 2, got {n_objectives}")
    fit_name = f"FactorySearchFitness{n_objectives}"
    ind_name = f"FactorySearchIndividual{n_objectives}"
    if not hasattr(creator, fit_name):
        creator.create(fit_name, base.Fitness, weights=(1.0,) + (-1.0,) * (n_objectives - 1))
    if not hasattr(creator, ind_name):
        creator.create(ind_name, list, fitness=getattr(creator, fit_name))
    return getattr(creator, ind_name)


@dataclass(frozen=True)
class GenomeLayout:
    """Where each stage's genes sit in the genome (precomputed once per space, for fast operators)."""

    gene_sizes: tuple[int, ...]
    depth_gene: tuple[int, ...]  # per stage: index of its depth gene
    kernel_genes: tuple[tuple[int, ...], ...]  # per stage: indices of its kernel genes (slot order)
    expand_genes: tuple[tuple[int, ...], ...]  # per stage: indices of its expand genes
    depth_values: tuple[tuple[int, ...], ...]  # per stage: the depth choices
    kernel_min: tuple[int, ...]  # per stage: index of the smallest kernel choice
    expand_min: tuple[int, ...]
    compound: bool

    @classmethod
    def of(cls, space: SearchSpace) -> GenomeLayout:
        n = len(space.stages)
        s = space.num_slots
        kernel_genes = tuple(tuple(1 + n + slot for slot in space.stage_slots(st)) for st in range(n))
        expand_genes = tuple(tuple(1 + n + s + slot for slot in space.stage_slots(st)) for st in range(n))
        return cls(
            gene_sizes=tuple(len(c) for c in space.gene_choices),
            depth_gene=tuple(1 + st for st in range(n)),
            kernel_genes=kernel_genes,
            expand_genes=expand_genes,
            depth_values=tuple(st.depth_choices for st in space.stages),
            kernel_min=tuple(st.kernel_choices.index(min(st.kernel_choices)) for st in space.stages),
            expand_min=tuple(st.expand_choices.index(min(st.expand_choices)) for st in space.stages),
            compound=space.sampling == "compound",
        )

    @property
    def mutable_genes(self) -> tuple[int, ...]:
        """Genes that mutation may change: in compound mode expand genes follow depth, so not them."""
        frozen = {g for genes in self.expand_genes for g in genes} if self.compound else set()
        return tuple(i for i in range(len(self.gene_sizes)) if i not in frozen)

    def canonical_key(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The genome with inactive slots set to the smallest choice (as `space.canonical`)."""
        g = list(genome)
        for st, dg in enumerate(self.depth_gene):
            depth = self.depth_values[st][g[dg]]
            for pos in range(depth, len(self.kernel_genes[st])):
                g[self.kernel_genes[st][pos]] = self.kernel_min[st]
                g[self.expand_genes[st][pos]] = self.expand_min[st]
        return tuple(g)


# ----- operators (free functions; hyper-parameters bound by `make_toolbox`) -------------------------
def crossover_uniform(ind1: list[int], ind2: list[int], *, indpb: float, rng: random.Random) -> tuple[list, list]:
    """Swap each gene with probability `indpb` (in place, DEAP convention). Genes stay in range."""
    for i in range(len(ind1)):
        if rng.random() < indpb:
            ind1[i], ind2[i] = ind2[i], ind1[i]
    return ind1, ind2


def mutate_genes(
    individual: list[int], *, gene_sizes: Sequence[int], genes: Sequence[int], indpb: float, rng: random.Random
) -> tuple[list]:
    """Resample each gene in `genes` with probability `indpb` to a *different* valid choice."""
    for i in genes:
        n = gene_sizes[i]
        if n > 1 and rng.random() < indpb:
            new = rng.randrange(n - 1)
            individual[i] = new if new < individual[i] else new + 1
    return (individual,)


def repair_compound(individual: list[int], *, layout: GenomeLayout) -> list[int]:
    """Restore compound coupling (expand index = depth index in each stage); no-op otherwise."""
    if layout.compound:
        for st, dg in enumerate(layout.depth_gene):
            for g in layout.expand_genes[st]:
                individual[g] = individual[dg]
    return individual


def select_tournament_dcd(individuals: Sequence, k: int, *, rng: random.Random) -> list:
    """Binary tournaments on dominance, then crowding distance (DEAP's selTournamentDCD, seeded rng,
    any `k`). Needs `fitness.crowding_dist`, which `tools.selNSGA2` assigns."""

    def tourn(a, b):
        if a.fitness.dominates(b.fitness):
            return a
        if b.fitness.dominates(a.fitness):
            return b
        if a.fitness.crowding_dist != b.fitness.crowding_dist:
            return a if a.fitness.crowding_dist > b.fitness.crowding_dist else b
        return a if rng.random() < 0.5 else b

    chosen: list = []
    while len(chosen) < k:
        perm = rng.sample(list(individuals), len(individuals))
        if len(perm) % 2:
            perm.append(perm[0])
        chosen.extend(tourn(perm[i], perm[i + 1]) for i in range(0, len(perm), 2))
    return chosen[:k]


def make_toolbox(
    space: SearchSpace,
    rng: random.Random,
    n_objectives: int,
    *,
    crossover_indpb: float = 0.5,
    mutation_rate: float = 2.0,
) -> base.Toolbox:
    """Wire the operators for `space` into a toolbox; `mutation_rate` = expected genes changed per mutation."""
    layout = GenomeLayout.of(space)
    ind_cls = individual_class(n_objectives)
    genes = layout.mutable_genes
    toolbox = base.Toolbox()
    toolbox.register("layout", lambda: layout)
    toolbox.register("coin", rng.random)
    toolbox.register("individual", lambda arch: ind_cls(space.encode(arch)))
    toolbox.register("clone", ind_cls)  # a fresh, invalid fitness: cheaper than DEAP's deepcopy
    toolbox.register("sample", lambda: ind_cls(space.encode(space.sample(rng))))
    toolbox.register("mate", crossover_uniform, indpb=crossover_indpb, rng=rng)
    toolbox.register("mutate", mutate_genes, gene_sizes=layout.gene_sizes, genes=genes,
                     indpb=min(1.0, mutation_rate / max(1, len(genes))), rng=rng)
    toolbox.register("repair", repair_compound, layout=layout)
    toolbox.register("select", tools.selNSGA2, nd="log")
    toolbox.register("select_parents", select_tournament_dcd, rng=rng)
    return toolbox


@dataclass(frozen=True)
class NSGAConfig:
    population: int = 100
    generations: int = 100
    cxpb: float = 0.9  # probability that a pair of parents is crossed
    mutpb: float = 1.0  # probability that a child is mutated


def _dedupe(individuals: Sequence, layout: GenomeLayout) -> list:
    """Keep the first individual of each canonical genome: duplicates would crowd the front."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for ind in individuals:
        key = layout.canonical_key(ind)
        if key not in seen:
            seen.add(key)
            out.append(ind)
    return out


def run_nsga2(
    toolbox: base.Toolbox,
    evaluate_batch: EvaluateBatch,
    config: NSGAConfig,
    seeds: Sequence = (),
    on_generation: Callable[[int], None] | None = None,
) -> list:
    """NSGA-II (mu + lambda, mu = lambda = population). Returns the final population.

    `seeds` are extra initial individuals (e.g. the largest and smallest sub-networks) so the
    extremes of the front are known from generation 0. `evaluate_batch` gets every genome that
    needs a fitness in one call per generation (so it can batch a predictor and map a pool).
    """
    layout = toolbox.layout()
    pop = _dedupe([toolbox.repair(ind) for ind in seeds], layout)[: config.population]
    keys = {layout.canonical_key(ind) for ind in pop}
    for _ in range(50 * config.population):  # bounded: a tiny space may have fewer members
        if len(pop) >= config.population:
            break
        ind = toolbox.sample()
        key = layout.canonical_key(ind)
        if key not in keys:
            keys.add(key)
            pop.append(ind)
    _assign(pop, evaluate_batch)
    pop = toolbox.select(pop, len(pop))  # assigns crowding distance
    for gen in range(config.generations):
        parents = toolbox.select_parents(pop, len(pop))
        offspring = [toolbox.clone(ind) for ind in parents]
        for a, b in zip(offspring[::2], offspring[1::2], strict=False):
            if toolbox.coin() < config.cxpb:
                toolbox.mate(a, b)
        for child in offspring:
            if toolbox.coin() < config.mutpb:
                toolbox.mutate(child)
            toolbox.repair(child)
            del child.fitness.values
        _assign(offspring, evaluate_batch)
        pop = toolbox.select(_dedupe(pop + offspring, layout), config.population)
        if on_generation is not None:
            on_generation(gen)
    return pop


def _assign(individuals: Sequence, evaluate_batch: EvaluateBatch) -> None:
    todo = [ind for ind in individuals if not ind.fitness.valid]
    if todo:
        for ind, fit in zip(todo, evaluate_batch(todo), strict=True):
            ind.fitness.values = fit
