"""Our search against its peers on the same work, per target, over seeds 0..N-1.

Four searches per target and seed:
- ours: `factory.search.engine.search` (DEAP NSGA-II, feasibility first);
- pymoo: pymoo's NSGA-II over the same integer genome (`space.encode`: one choice index per gene), with
  pymoo's documented integer recipe (integer random sampling, SBX and polynomial mutation rounded back to
  integers, duplicates eliminated). Objectives as ours (-accuracy, p50 latency[, size]); every budget is
  an inequality constraint `out["G"]` = normalised excess (as ours' `Miss.fraction`), so pymoo's
  constraint domination puts feasible first and ranks infeasible ones by total violation, like ours;
- ofa: MIT OFA's `EvolutionFinder` (regularised evolution, its default hyper-parameters, population as
  ours) driven through its own interface: an efficiency predictor (our latency model) and an accuracy
  predictor (ours) whose `arch_encoder` is OFA's `MobileNetArchEncoder` built from the space's choices and
  resolutions. The finder takes one efficiency constraint: the target's p50 latency budget. Every other
  budget (p95, size, peak memory) is a filter: the efficiency adapter reports an infinite latency for a
  sub-network that misses one, so the finder's own rejection loops only ever keep sub-networks inside
  every budget. A `min_accuracy` budget is checked afterwards on its candidates, as for random search;
- random: `factory.search.engine.random_search`, uniform samples.

Same work: the same run predictor (predictor.pt) and latency tables (latency/<target>.json), the same
target budgets, seed s for every search of seed s (OFA's finder draws from the global `random` and
`numpy.random`: they are seeded with s for its run and restored afterwards), and the same number of
accuracy-predictor calls. A call is one sub-network scored by the predictor (a counting wrapper around it);
every search scores each canonical sub-network at most once (ours has its cache; the pymoo and OFA adapters
get the same cache; random search dedupes its samples). Ours runs `--population x --generations` (default
100 x 100, its defaults) and its count for that seed is the budget of the three peers: pymoo and OFA stop
at the first generation that reaches it (so they may run past it by less than one population), random
search draws that many samples. The table prints every search's actual count.

Reported per target and search, mean and min-max over seeds: hypervolume of the feasible front (every
feasible non-dominated sub-network the search evaluated; same reference point for all searches, as
bench/search_vs_random.py), best feasible predicted accuracy, measured test-split accuracy of the chosen
sub-network (the best feasible predicted accuracy among all it scored, for OFA's finder too, whose own
`best_info` leaves out its last generation; BN recalibrated on the calib split, scored on the test
split that nothing selects on, with its 95% Wilson interval per seed), wall time of the search, predictor
calls. Ours against each peer on test accuracy: paired bootstrap over test images of the per-image hits
averaged over seeds (`exports.intervals.paired_difference`); "tie" when its interval contains 0. Without a
test split (runs made before it existed) or without --run (cost-based stand-ins, no supernet) the measured
column is skipped and said so. Verdict per target: ours >= every peer on mean hypervolume and on measured
test accuracy (a tie is not worse), and faster on mean wall time.

    .venv/bin/python bench/search_peers.py [--run runs/demo] [--targets all|a,b] [--seeds 3]
        [--population 100] [--generations 100] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from ofa.nas.accuracy_predictor import MobileNetArchEncoder
from ofa.nas.search_algorithm import EvolutionFinder
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from search_speed import BenchTarget, load_targets
from search_vs_random import hypervolume, reference_point

from exports.intervals import AccuracyEstimate, paired_difference
from factory.data import to_model_input
from factory.evaluate import DEFAULT_BATCH, on_device, preserved_bn_stats, recalibrate_bn
from factory.search.engine import (
    Candidate,
    CandidateEvaluator,
    SearchResult,
    arch_label,
    check_budgets,
    closest_candidate,
    objectives_for,
    pareto_front,
    random_search,
    search,
)
from factory.search.nsga import GenomeLayout, repair_compound
from supernets.arch import ArchConfig

SEARCHES = ("ours", "pymoo-nsga2", "ofa-evolution", "random")
_STALL_FACTOR = 20  # a peer whose generations keep yielding known archs stops after this many x its expected ones


class CountingPredictor:
    """The run's accuracy predictor, counting the sub-networks it scores (one per arch, however batched)."""

    def __init__(self, predictor: Callable[[Sequence[ArchConfig]], Sequence[float]]) -> None:
        self.predictor = predictor
        self.calls = 0

    def __call__(self, archs: Sequence[ArchConfig]) -> list[float]:
        self.calls += len(archs)
        return [float(a) for a in self.predictor(archs)] if archs else []


class CandidateCache:
    """Predictions of canonical sub-networks, each scored once: the cache ours has, for the peers."""

    def __init__(self, t: BenchTarget, predictor: CountingPredictor) -> None:
        self.space = t.space
        self.budgets = t.profile.constraints
        self.evaluator = CandidateEvaluator(predictor, t.latency_model)
        self.candidates: dict[ArchConfig, Candidate] = {}
        self.requests = 0  # sub-networks the search asked to have scored, repeats included

    def evaluate(self, archs: Sequence[ArchConfig]) -> list[Candidate]:
        self.requests += len(archs)
        canon = [self.space.canonical(a) for a in archs]
        new = list(dict.fromkeys(a for a in canon if a not in self.candidates))
        for arch, pred in zip(new, self.evaluator(new), strict=True):
            self.candidates[arch] = Candidate(arch, pred, check_budgets(self.budgets, pred))
        return [self.candidates[a] for a in canon]

    def result(self, seed: int, seconds: float, population: int, generations: int) -> SearchResult:
        """A SearchResult like ours: front and pick over everything scored; `evaluations` = requests."""
        evaluated = list(self.candidates.values())
        objectives = objectives_for(self.budgets)
        front = pareto_front(evaluated, objectives)
        feasible = [c for c in front if c.feasible]
        return SearchResult(front, feasible[0] if feasible else None,
                            None if feasible else closest_candidate(evaluated), objectives, self.budgets,
                            self.requests, len(evaluated), seconds, seed, population, generations)


@contextlib.contextmanager
def seeded_globals(seed: int) -> Iterator[None]:
    """Seed the global `random` and `numpy.random` (what OFA's finder draws from); restore them on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# ----- pymoo NSGA-II ---------------------------------------------------------------------------------------
class GenomeProblem(Problem):
    """The space's integer genome as a pymoo problem: objectives as ours, one constraint per budget."""

    def __init__(self, cache: CandidateCache) -> None:
        self.cache = cache
        self.objectives = objectives_for(cache.budgets)
        self.budget_names = list(cache.budgets.to_dict())
        sizes = np.array([len(c) for c in cache.space.gene_choices])
        super().__init__(n_var=len(sizes), n_obj=len(self.objectives), n_ieq_constr=len(self.budget_names),
                         xl=np.zeros(len(sizes)), xu=sizes - 1, vtype=int)

    def _evaluate(self, x: np.ndarray, out: dict, *args, **kwargs) -> None:
        cands = self.cache.evaluate([self.cache.space.decode([int(g) for g in row]) for row in x])
        out["F"] = np.array([[-c.predicted.accuracy, *(c.predicted.value(o) for o in self.objectives[1:])]
                             for c in cands])
        if self.budget_names:
            out["G"] = np.array([[c.checks[n].excess / (abs(c.checks[n].budget) or 1.0) for n in self.budget_names]
                                 for c in cands])


class GenomeRepair(Repair):
    """Integer genes in range, and compound coupling restored (a no-op for independent sampling)."""

    def __init__(self, layout: GenomeLayout) -> None:
        super().__init__()
        self.layout = layout

    def _do(self, problem, x, **kwargs):
        x = np.clip(np.around(x), problem.xl, problem.xu).astype(int)
        return np.array([repair_compound(list(row), layout=self.layout) for row in x])


def pymoo_search(t: BenchTarget, predictor: CountingPredictor, budget: int, population: int, seed: int
                 ) -> SearchResult:
    """pymoo NSGA-II (ask and tell) until the predictor has scored `budget` sub-networks."""
    start = time.perf_counter()
    cache = CandidateCache(t, predictor)
    problem = GenomeProblem(cache)
    algorithm = NSGA2(pop_size=population, sampling=IntegerRandomSampling(),
                      crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                      repair=GenomeRepair(GenomeLayout.of(t.space)), eliminate_duplicates=True, seed=seed)
    algorithm.setup(problem, termination=NoTermination())
    generations = 0
    while predictor.calls < budget and generations < _STALL_FACTOR * (budget // population + 1):
        pop = algorithm.ask()
        if pop is None or len(pop) == 0:
            break
        algorithm.evaluator.eval(problem, pop)
        algorithm.tell(infills=pop)
        generations += 1
    return cache.result(seed, time.perf_counter() - start, population, generations)


# ----- OFA's evolution finder --------------------------------------------------------------------------------
class BudgetSpent(Exception):
    """The accuracy adapter's way to end OFA's finder once the predictor budget is used."""


def ofa_arch(sample: dict) -> ArchConfig:
    """OFA finder sample {"ks", "e", "d", "image_size"} -> ArchConfig (via OFA's {"ks","e","d","r"} format)."""
    return ArchConfig.from_ofa_dict({"ks": list(sample["ks"]), "e": list(sample["e"]), "d": list(sample["d"]),
                                     "r": [int(sample["image_size"])]})


def ofa_encoder(space) -> MobileNetArchEncoder:
    """OFA's MobileNetV3 arch encoder over the space's choices and resolutions (every stage must offer the
    same choices, as in OFA's space; ValueError otherwise)."""
    stages = space.stages
    first = stages[0]
    for i, s in enumerate(stages):
        if (s.kernel_choices, s.expand_choices, s.depth_choices) != (
                first.kernel_choices, first.expand_choices, first.depth_choices):
            raise ValueError(f"stage {i}: choices differ from stage 0; OFA's encoder needs one set for all stages")
    if space.sampling != "independent":
        raise ValueError(f"sampling: OFA's finder mutates expand ratios freely; needs 'independent', "
                         f"got {space.sampling!r}")
    enc = MobileNetArchEncoder(image_size_list=list(space.resolutions), ks_list=list(first.kernel_choices),
                               expand_list=list(first.expand_choices), depth_list=list(first.depth_choices),
                               n_stage=len(stages))
    if enc.max_n_blocks != space.num_slots:
        raise ValueError(f"OFA encoder has {enc.max_n_blocks} block slots, the space {space.num_slots}")
    return enc


@dataclass
class OFAEfficiency:
    """OFA's efficiency predictor: our p50 latency; infinite when another budget is missed (a filter)."""

    t: BenchTarget
    others: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.others = tuple(n for n in self.t.profile.constraints.to_dict()
                            if n not in ("latency_p50_ms", "min_accuracy"))

    def get_efficiency(self, sample: dict) -> float:
        arch = ofa_arch(sample)
        lm, budgets = self.t.latency_model, self.t.profile.constraints.to_dict()
        figures = {"latency_p95_ms": lm.predict_p95, "size_mb": lm.size_mb, "peak_memory_mb": lm.peak_memory_mb}
        if any(figures[n](arch) > budgets[n] for n in self.others):
            return math.inf
        return float(lm.predict(arch))


@dataclass
class OFAAccuracy:
    """OFA's accuracy predictor: `arch_encoder` (OFA's) and `predict_acc` (ours, through the shared cache);
    raises BudgetSpent when asked for more once `budget` sub-networks have been scored."""

    arch_encoder: MobileNetArchEncoder
    cache: CandidateCache
    predictor: CountingPredictor
    budget: int
    batches: int = 0  # predict_acc calls: the initial population, then one per generation

    def predict_acc(self, samples: list[dict]) -> torch.Tensor:
        if self.predictor.calls >= self.budget:
            raise BudgetSpent
        self.batches += 1
        cands = self.cache.evaluate([ofa_arch(s) for s in samples])
        return torch.tensor([c.predicted.accuracy for c in cands], dtype=torch.float64)


def ofa_search(t: BenchTarget, predictor: CountingPredictor, budget: int, population: int, seed: int
               ) -> SearchResult:
    """OFA's EvolutionFinder with the target's p50 budget until the predictor has scored `budget` archs."""
    start = time.perf_counter()
    cache = CandidateCache(t, predictor)
    accuracy = OFAAccuracy(ofa_encoder(t.space), cache, predictor, budget)
    finder = EvolutionFinder(OFAEfficiency(t), accuracy, population_size=population,
                             max_time_budget=_STALL_FACTOR * (budget // population + 1))
    p50 = t.profile.constraints.latency_p50_ms
    constraint = p50 if p50 is not None else sys.float_info.max
    quiet = contextlib.redirect_stdout(io.StringIO())  # it prints every 100 iterations
    with seeded_globals(seed), quiet, contextlib.suppress(BudgetSpent):
        finder.run_evolution_search(constraint, verbose=False)
    return cache.result(seed, time.perf_counter() - start, population, max(0, accuracy.batches - 1))


# ----- measured test accuracy --------------------------------------------------------------------------------
@torch.no_grad()
def test_hits(run, arch: ArchConfig, device: str) -> np.ndarray:
    """Per-image hits of `arch` on the test split, BN recalibrated on the calib split (as
    `factory.evaluate.evaluate_on`, which returns counts only); the supernet's buffers are restored."""
    ds, net, dev = run.dataset(), run.supernet, torch.device(device)
    hits = []
    with on_device(net, dev), preserved_bn_stats(net):
        recalibrate_bn(net, arch, ds.calib.images, run.mean, run.std, DEFAULT_BATCH, dev)
        with net.activated(arch):
            for s in range(0, len(ds.test), DEFAULT_BATCH):
                x = to_model_input(ds.test.images[s:s + DEFAULT_BATCH], arch.resolution, run.mean, run.std).to(dev)
                if dev.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                hits.append((net(x).float().argmax(1).cpu() == ds.test.labels[s:s + DEFAULT_BATCH]).numpy())
    return np.concatenate(hits)


class TestMeter:
    """Test-split hits per canonical arch, measured once per bench run; None when nothing can be measured."""

    def __init__(self, run, device: str) -> None:
        self.run, self.device = run, device
        self.hits: dict[ArchConfig, np.ndarray] = {}

    @classmethod
    def of(cls, run_dir: str | None, device: str) -> tuple[TestMeter | None, str]:
        if run_dir is None:
            return None, "no --run (stand-ins, no supernet): measured test accuracy skipped"
        from factory.run import load_run

        run = load_run(run_dir)
        n = len(run.dataset().test)
        if n == 0:
            return None, f"{run_dir}: no test split (a run made before it existed): measured test accuracy skipped"
        return cls(run, device), f"test split: {n} images (nothing selects on it)"

    def __call__(self, arch: ArchConfig) -> np.ndarray:
        key = self.run.space.canonical(arch)
        if key not in self.hits:
            self.hits[key] = test_hits(self.run, key, self.device)
        return self.hits[key]


# ----- the bench ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    search: str
    seed: int
    result: SearchResult
    seconds: float
    calls: int  # sub-networks the predictor scored
    budget: int  # ours' count for this seed
    hv: float
    hits: np.ndarray | None = None

    @property
    def best(self) -> float:
        return self.result.chosen.predicted.accuracy if self.result.chosen else float("nan")


def run_search(name: str, t: BenchTarget, predictor: CountingPredictor, seed: int, budget: int, population: int,
               generations: int) -> SearchResult:
    """One search: ours with population x generations, a peer with ours' `budget` of predictor calls."""
    if name == "ours":
        return search(t.space, predictor, t.latency_model, t.profile, population, generations, seed)
    if name == "pymoo-nsga2":
        return pymoo_search(t, predictor, budget, population, seed)
    if name == "ofa-evolution":
        return ofa_search(t, predictor, budget, population, seed)
    return random_search(t.space, predictor, t.latency_model, t.profile, budget, seed)


def run_target(t: BenchTarget, seeds: int, population: int, generations: int, meter: TestMeter | None
               ) -> list[Outcome]:
    """Every search for every seed. Ours first runs once untimed for the budget (it is deterministic), then
    the four run timed in an order rotated by seed, so a load shift on the shared machine hits each alike."""
    outcomes = []
    for seed in range(seeds):
        counter = CountingPredictor(t.accuracy_fn)
        search(t.space, counter, t.latency_model, t.profile, population, generations, seed)
        budget = counter.calls
        order = SEARCHES[seed % len(SEARCHES):] + SEARCHES[:seed % len(SEARCHES)]
        runs: dict[str, tuple[SearchResult, float, int]] = {}
        for name in order:
            counter = CountingPredictor(t.accuracy_fn)
            t0 = time.perf_counter()
            res = run_search(name, t, counter, seed, budget, population, generations)
            runs[name] = (res, time.perf_counter() - t0, counter.calls)
        ref = reference_point(t, objectives_for(t.profile.constraints))
        for name in SEARCHES:
            res, sec, calls = runs[name]
            hits = meter(res.chosen.arch) if meter is not None and res.chosen is not None else None
            outcomes.append(Outcome(name, seed, res, sec, calls, budget, hypervolume(res, ref), hits))
    return outcomes


def _stat(values: list[float], fmt: str, scale: float = 1.0) -> str:
    vals = [v * scale for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    return f"{format(statistics.mean(vals), fmt)} ({format(min(vals), fmt)}-{format(max(vals), fmt)})"


def compare_measured(by: dict[str, list[Outcome]], peer: str) -> tuple[str, str | None]:
    """Ours against `peer` on test accuracy over the seeds where both chose a sub-network: (line, failure).
    A seed where only one of them found something feasible counts against the other."""
    pairs = [(o, p) for o, p in zip(by["ours"], by[peer], strict=True)]
    only_peer = [o.seed for o, p in pairs if o.hits is None and p.hits is not None]
    only_ours = [o.seed for o, p in pairs if o.hits is not None and p.hits is None]
    both = [(o, p) for o, p in pairs if o.hits is not None and p.hits is not None]
    notes = ([f"{peer} found nothing feasible on seed(s) {only_ours}"] if only_ours else []) + (
        [f"ours found nothing feasible on seed(s) {only_peer}"] if only_peer else [])
    failure = f"nothing feasible on seed(s) {only_peer} where {peer} found something" if only_peer else None
    if not both:
        return f"  test accuracy, ours - {peer}: no seed where both chose ({'; '.join(notes)})", failure
    d = paired_difference(np.mean([o.hits for o, _ in both], axis=0), np.mean([p.hits for _, p in both], axis=0))
    verdict = {"a better": "ours better", "b better": f"{peer} better"}.get(d.verdict, "tie")
    line = (f"  test accuracy, ours - {peer} (mean over seeds {[o.seed for o, _ in both]}, paired over {d.images} "
            f"images): {100 * d.difference:+.2f} pts [{100 * d.low:+.2f}, {100 * d.high:+.2f}] {verdict}"
            + (f" ({'; '.join(notes)})" if notes else ""))
    if d.verdict == "b better":
        failure = (failure + "; " if failure else "") + (
            f"test accuracy {100 * d.difference:+.2f} pts vs {peer} (interval excludes 0)")
    return line, failure


def report_target(t: BenchTarget, outcomes: list[Outcome], measured: bool) -> str:
    """Print the target's table, per-seed picks and paired comparisons; return its verdict line."""
    by = {name: [o for o in outcomes if o.search == name] for name in SEARCHES}
    budgets = t.profile.constraints.to_dict()
    ref = reference_point(t, objectives_for(t.profile.constraints))
    print(f"\n== {t.name}: budgets {budgets}; objectives {list(objectives_for(t.profile.constraints))}; "
          f"HV reference {[round(float(r), 4) for r in ref]}")
    print(f"{'search':<14} {'predictor calls':>20} {'asked':>20} {'hypervolume':>28} {'best pred. acc %':>22} "
          f"{'test acc % (chosen)':>22} {'wall s':>22}")
    for name, outs in by.items():
        test = [float(o.hits.mean()) if o.hits is not None else float("nan") for o in outs]
        test_s = _stat(test, ".2f", 100) if measured else "skipped"
        print(f"{name:<14} {_stat([o.calls for o in outs], '.0f'):>20} "
              f"{_stat([o.result.evaluations for o in outs], '.0f'):>20} {_stat([o.hv for o in outs], '.5g'):>28} "
              f"{_stat([o.best for o in outs], '.2f', 100):>22} {test_s:>22} "
              f"{_stat([o.seconds for o in outs], '.2f'):>22}")
    for o in outcomes:
        c = o.result.chosen
        test = "" if o.hits is None else f"; test {AccuracyEstimate.of(o.hits)}"
        what = "nothing feasible" if c is None else (
            f"{arch_label(c.arch)} pred {100 * c.predicted.accuracy:.2f}% p50 {c.predicted.latency_p50_ms:.3f} ms "
            f"size {c.predicted.size_mb:.2f} MB{test}")
        print(f"  seed {o.seed} {o.search:<14} {what}")
    for o in outcomes:
        if o.calls < 0.97 * o.budget:
            print(f"  note: seed {o.seed} {o.search} stopped after {o.result.generations} generations having scored "
                  f"{o.calls} of {o.budget} sub-networks ({o.result.evaluations} asked): its offspring were "
                  f"mostly sub-networks it had already scored (cap: {_STALL_FACTOR}x the generations the budget needs)")
    fails = []
    hv = {name: statistics.mean(o.hv for o in outs) for name, outs in by.items()}
    sec = {name: statistics.mean(o.seconds for o in outs) for name, outs in by.items()}
    for name in SEARCHES[1:]:
        if hv["ours"] < hv[name]:
            fails.append(f"hypervolume {hv['ours']:.5g} < {name} {hv[name]:.5g} "
                         f"({100 * (hv['ours'] / hv[name] - 1):+.2f}%)")
        if sec["ours"] >= sec[name]:
            fails.append(f"wall time {sec['ours']:.2f} s >= {name} {sec[name]:.2f} s")
    if measured:
        for name in SEARCHES[1:]:
            line, failure = compare_measured(by, name)
            print(line)
            if failure:
                fails.append(failure)
    if fails:
        return f"verdict {t.name}: ours NOT >= every peer: " + "; ".join(fails)
    return (f"verdict {t.name}: ours >= every peer on hypervolume" + (", measured test accuracy" if measured else "")
            + " and faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="run folder with predictor.pt and latency/<target>.json")
    parser.add_argument("--targets", default="all", help="all, or target names separated by commas")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="device of the test-accuracy measurements")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds: must be >= 1, got {args.seeds}")
    start = time.perf_counter()
    items = load_targets(args.run, args.targets)
    meter, about = TestMeter.of(args.run, args.device)
    print(f"inputs: {items[0].inputs if items else 'none'}; {about}")
    print(f"ours {args.population} x {args.generations}; peers get ours' predictor calls per seed; "
          f"seeds 0..{args.seeds - 1}; figures: mean (min-max) over seeds")
    verdicts = []
    for t in items:
        outcomes = run_target(t, args.seeds, args.population, args.generations, meter)
        verdicts.append(report_target(t, outcomes, meter is not None))
    print()
    for line in verdicts:
        print(line)
    print(f"bench wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
