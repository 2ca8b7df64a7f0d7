"""Accuracy predictor: encoding, fit on a known relation, stratified sampling, resumable measurements."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from search_proxies import SyntheticAccuracy

from factory.errors import UserInputError
from factory.predictor.features import onehot_features, resolution_block_features, resolution_stage_features
from factory.predictor.fit import FitConfig, boost, spearman, split_holdout
from factory.predictor.fit import fit_trees as _fit
from factory.predictor.model import PREDICTOR_FILE, AccuracyPredictor, load_predictor, tree_sum
from factory.predictor.samples import SAMPLES_FILE, Measured, measure_samples, read_samples, stratified_archs
from supernets import ArchConfig, cost, get_space

torch.set_num_threads(1)
SPACE = get_space()
SMALL_FIT = FitConfig(trees=200)


def test_onehot_zeroes_inactive_slots_and_equal_nets_encode_equally() -> None:
    rng = random.Random(0)
    archs = [SPACE.sample(rng) for _ in range(50)]
    x = onehot_features(SPACE, archs)
    xc = onehot_features(SPACE, [SPACE.canonical(a) for a in archs])
    assert np.array_equal(x, xc)
    active_blocks = np.array([len(SPACE.active_blocks(a)) for a in archs])
    # one hot per resolution + per stage depth + (kernel, expand) per active block
    assert np.array_equal(x.sum(1), 1 + len(SPACE.stages) + 2 * active_blocks)


def test_resolution_stage_features_fill_only_the_arch_resolution_block() -> None:
    n_stages = len(SPACE.stages)
    width = 3 * n_stages
    for res in SPACE.resolutions:
        arch = SPACE.uniform(res, 3, 5, 6)
        x = resolution_stage_features(SPACE, [arch, SPACE.canonical(arch)])
        assert np.array_equal(x[0], x[1])
        block = SPACE.resolutions.index(res)
        inside = x[0, block * width:(block + 1) * width]
        assert np.allclose(inside, [5 / 7] * n_stages + [1.0] * n_stages + [3 / 4] * n_stages)
        assert np.count_nonzero(x[0]) == width  # every other resolution's block stays zero


def test_fit_recovers_a_monotone_relation_on_held_out_archs() -> None:
    archs = stratified_archs(SPACE, 160, random.Random(0))
    truth = SyntheticAccuracy(SPACE)(archs)
    model = _fit(SPACE, archs[:110], truth[:110], seed=0, config=SMALL_FIT)
    rho = spearman(model(archs[110:]), truth[110:])
    assert rho > 0.85


def test_fit_is_reproducible_from_its_seed() -> None:
    archs = stratified_archs(SPACE, 30, random.Random(1))
    truth = SyntheticAccuracy(SPACE)(archs)
    cfg = FitConfig(trees=30)
    a = _fit(SPACE, archs, truth, seed=3, config=cfg)(archs)
    b = _fit(SPACE, archs, truth, seed=3, config=cfg)(archs)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _fit(SPACE, archs, truth, seed=4, config=cfg)(archs))  # the seed draws the subsamples


def test_stratified_sampling_covers_every_resolution_and_size_range() -> None:
    archs = stratified_archs(SPACE, 48, random.Random(0))
    assert len(set(archs)) == 48
    assert all(a == SPACE.canonical(a) for a in archs)
    per_res = {r: [a for a in archs if a.resolution == r] for r in SPACE.resolutions}
    assert all(len(v) >= 10 for v in per_res.values())
    macs = [cost(SPACE, a).macs for a in archs]
    random_macs = [cost(SPACE, SPACE.sample(random.Random(i))).macs for i in range(48)]
    assert np.std(np.log(macs)) > 0.8 * np.std(np.log(random_macs))


def test_holdout_split_is_even_and_disjoint() -> None:
    train, held = split_holdout(200, 50)
    assert len(held) == 50 and len(train) == 150 and not set(train) & set(held)
    with pytest.raises(UserInputError, match="holdout"):
        split_holdout(40, 50)


def test_measurements_resume_and_skip_a_torn_line(tmp_path: Path) -> None:
    archs = stratified_archs(SPACE, 12, random.Random(0))
    calls: list = []

    def measure(arch):  # a deterministic stand-in for evaluate_arch: accuracy from MACs
        calls.append(arch)
        return Measured(1.0 - 1.0 / cost(SPACE, arch).macs ** 0.1, 0.5, 100)

    path = tmp_path / SAMPLES_FILE
    first = measure_samples(archs[:7], measure, path, SPACE, "sha-a", progress=False)
    with path.open("a") as fh:
        fh.write('{"arch": {"resolution": 2')  # interrupted write
    second = measure_samples(archs, measure, path, SPACE, "sha-a", progress=False)
    assert len(calls) == 12  # 7 then only the 5 new ones
    assert [s.accuracy for s in second[:7]] == [s.accuracy for s in first]
    assert len(read_samples(path, SPACE, "sha-a")) == 12
    assert read_samples(path, SPACE, "another-checkpoint") == {}


def test_saved_predictor_loads_with_same_predictions_and_refuses_other_space(tmp_path: Path) -> None:
    archs = stratified_archs(SPACE, 20, random.Random(2))
    truth = SyntheticAccuracy(SPACE)(archs)
    model = _fit(SPACE, archs, truth, seed=0, config=FitConfig(trees=30))
    from dataclasses import replace

    replace(model, meta={"checkpoint_sha256": "abc"}).save(tmp_path / "predictor.pt")
    loaded = load_predictor(tmp_path, SPACE, "abc")
    assert loaded is not None
    assert np.allclose(loaded(archs), model(archs), atol=1e-6)
    with pytest.raises(UserInputError, match="space"):
        load_predictor(tmp_path, get_space(phi=1.0))
    with pytest.raises(UserInputError, match="checkpoint"):
        load_predictor(tmp_path, SPACE, "other")
    assert load_predictor(tmp_path / "none", SPACE) is None


def test_a_saved_predictor_of_an_older_version_is_refused_with_how_to_refit(tmp_path: Path) -> None:
    archs = stratified_archs(SPACE, 12, random.Random(3))
    model = _fit(SPACE, archs, SyntheticAccuracy(SPACE)(archs), config=FitConfig(trees=5))
    model.save(tmp_path / PREDICTOR_FILE)
    blob = torch.load(tmp_path / PREDICTOR_FILE, weights_only=True)
    torch.save({**blob, "version": 3}, tmp_path / PREDICTOR_FILE)
    with pytest.raises(UserInputError, match=r"version 3.*factory predictor fit"):
        load_predictor(tmp_path, SPACE)


def test_resolution_block_features_copy_the_block_genes_into_the_arch_resolution_only() -> None:
    archs = [SPACE.uniform(res, 2, 7, 3) for res in SPACE.resolutions]
    onehot = onehot_features(SPACE, archs)
    blocks = onehot[:, len(SPACE.resolutions):]
    x = resolution_block_features(SPACE, archs).reshape(len(archs), len(SPACE.resolutions), -1)
    for i in range(len(archs)):
        assert np.array_equal(x[i, i], blocks[i])
        assert not np.delete(x[i], i, axis=0).any()


def test_one_boosted_stump_finds_the_threshold_and_the_two_means() -> None:
    # y jumps from 0 to 1 where feature 1 passes 0.5; feature 0 is noise. One tree of depth 1, learning rate 1,
    # no subsampling: the split must be on feature 1 between 0.4 and 0.6 with leaves 0 and 1.
    rng = np.random.default_rng(0)
    x = np.stack([rng.random(40), np.repeat([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9], 5)], axis=1)
    y = (x[:, 1] > 0.5).astype(float)
    feature, threshold, leaf = boost(x, y, FitConfig(trees=1, learning_rate=1.0, depth=1, subsample=1.0,
                                                     min_leaf=1), rng)
    assert feature.tolist() == [[1]] and 0.4 < threshold[0, 0] < 0.6
    assert np.allclose(leaf, [[0.0, 1.0]])
    assert np.allclose(tree_sum(feature, threshold, leaf, x), y)


def test_min_leaf_refuses_splits_that_leave_too_few_samples() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.r_[np.zeros(9), 10.0]  # the best split isolates the last sample
    cfg = FitConfig(trees=1, learning_rate=1.0, depth=1, subsample=1.0, min_leaf=3)
    _, threshold, leaf = boost(x, y, cfg, np.random.default_rng(0))
    assert 6 < threshold[0, 0] < 7  # the best split with >= 3 samples on each side
    assert np.allclose(leaf, [[0.0, 10.0 / 3]])


def test_trees_predict_through_a_node_that_does_not_split() -> None:
    # depth 2: the root splits, its left child does not (threshold +inf): everything there reaches leaf 0.
    feature = np.array([[0, 0, 0]], dtype=np.int32)
    threshold = np.array([[0.5, np.inf, 0.8]], dtype=np.float32)
    leaf = np.array([[1.0, 99.0, 2.0, 3.0]], dtype=np.float32)
    x = np.array([[0.2], [0.7], [0.9]], dtype=np.float32)
    assert tree_sum(feature, threshold, leaf, x).tolist() == [1.0, 2.0, 3.0]
    model = AccuracyPredictor(SPACE, feature, threshold, leaf, target_mean=0.5, target_std=0.1)
    assert np.allclose(model.predict_features(x), [0.6, 0.7, 0.8])


def test_shared_prefix_measurement_gives_evaluate_on_figures_while_sharing_the_first_blocks(tiny_run) -> None:
    """Sub-networks measured in prefix order reuse the stem and first-block work of the previous one: the
    accuracy and loss are those of evaluate_on for every arch, the shared units really are skipped, and
    the supernet's buffers are unchanged afterwards."""
    from dataclasses import replace

    from factory.evaluate import evaluate_on
    from factory.predictor.shared_prefix import SharedPrefixEvaluator
    from factory.run import load_run

    run = load_run(tiny_run)
    ds = run.dataset()
    space = run.space
    rng = random.Random(3)
    base = [space.sample(rng) for _ in range(4)]
    # pairs that share resolution and first block but differ later, and one that shares only the resolution
    archs = base + [replace(a, depths=(*a.depths[:-1], 2 if a.depths[-1] != 2 else 3)) for a in base]
    archs += [replace(base[0], kernel_sizes=(5 if base[0].kernel_sizes[0] != 5 else 3, *base[0].kernel_sizes[1:]))]
    archs = list(dict.fromkeys(space.canonical(a) for a in archs))
    before = {k: v.clone() for k, v in run.supernet.state_dict().items()}
    shared = SharedPrefixEvaluator(run.supernet, ds.calib, ds.val, run.mean, run.std, batch_size=64)
    order = shared.order(archs)
    got = {a: shared(a) for a in order}
    assert shared.units_computed < 2 * len(archs)  # some stem / first-block work was reused
    after = run.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for a in archs:
        ref = evaluate_on(run.supernet, a, ds.calib, ds.val, run.mean, run.std, batch_size=64)
        assert got[a].accuracy == ref.accuracy and got[a].loss == pytest.approx(ref.loss, rel=1e-6, abs=1e-9)
    # splits too big to hold at once (224-px folders) are streamed by evaluate_on itself, same figures
    streaming = SharedPrefixEvaluator(run.supernet, ds.calib, ds.val, run.mean, run.std, batch_size=64, kept_bytes=0)
    assert streaming(order[0]).accuracy == got[order[0]].accuracy and streaming.units_computed == 0


def test_two_process_measurement_gives_the_one_process_figures_and_loses_nothing(tiny_run, tmp_path,
                                                                                  monkeypatch) -> None:
    """The helper process measures the costlier-ordered second half on one thread: every sub-network gets
    the figures one process gives it (exact and screened ones: 12 sub-networks on every image, 28 on the hard
    images), the helper's lines end up in the samples file, and the lines a killed helper had finished (one
    torn) are adopted by the next measurement instead of redone."""
    import json
    import shutil

    from factory.predictor import fit as fit_module
    from factory.predictor import two_process
    from factory.predictor.fit import fit_predictor
    from factory.predictor.samples import SAMPLES_FILE

    runs = {}
    monkeypatch.setattr(fit_module, "SCREEN_MIN", 12)
    for mode in ("one", "two"):
        runs[mode] = tmp_path / mode
        shutil.copytree(tiny_run, runs[mode], ignore=shutil.ignore_patterns(SAMPLES_FILE, "predictor.pt"))
        monkeypatch.setattr(two_process, "MIN_SPLIT", 10**9 if mode == "one" else 8)
        monkeypatch.setattr(two_process, "usable_cores", lambda: 2)
        fit_predictor(runs[mode], samples=40, holdout=10, val_images=300, progress=False, uniform=False)

    def figures(run_dir: Path) -> dict[str, tuple[float, float]]:
        lines = (run_dir / SAMPLES_FILE).read_text().splitlines()
        return {json.dumps(d["arch"], sort_keys=True): (d["accuracy"], d["loss"]) for d in map(json.loads, lines)}

    one, two = figures(runs["one"]), figures(runs["two"])
    assert len(one) == len(two) == 40 and one.keys() == two.keys()
    screened = [json.loads(line) for line in (runs["two"] / SAMPLES_FILE).read_text().splitlines()]
    assert sum("screen" in d for d in screened) == 28
    assert all(two[k][0] == one[k][0] and two[k][1] == pytest.approx(one[k][1], rel=1e-6) for k in one)
    assert not (runs["two"] / two_process.HELPER_FILE).exists()
    # a helper killed mid-write: its finished lines are adopted, the torn one dropped
    lines = (runs["two"] / SAMPLES_FILE).read_text().splitlines()
    (runs["two"] / SAMPLES_FILE).write_text("\n".join(lines[:30]) + "\n")
    (runs["two"] / two_process.HELPER_FILE).write_text("\n".join(lines[30:]) + "\n" + lines[0][:20])
    two_process.adopt_helper_samples(runs["two"])
    assert figures(runs["two"]) == two and not (runs["two"] / two_process.HELPER_FILE).exists()


def test_measurements_recalibrate_on_the_asked_calibration_images_and_say_so(tiny_run, tmp_path, monkeypatch):
    """Every measurement (this process's and the helper's) recalibrates BN on the fixed class-stratified subset
    of `calib_images` and records that count; a fit asking for another count measures again, and the whole
    split is recorded as no count (as older samples are)."""
    import json
    import shutil

    from factory.evaluate import evaluate_on
    from factory.predictor import two_process
    from factory.predictor.fit import Calibration, _subset, fit_predictor
    from factory.run import load_run

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(SAMPLES_FILE, "predictor.pt"))
    monkeypatch.setattr(two_process, "MIN_SPLIT", 8)
    monkeypatch.setattr(two_process, "usable_cores", lambda: 2)
    report = fit_predictor(run_dir, samples=30, holdout=10, val_images=300, progress=False, uniform=False,
                           screen=False, calib_images=60)
    lines = [json.loads(line) for line in (run_dir / SAMPLES_FILE).read_text().splitlines()]
    assert report.calib_images == 60 and len(lines) == 30 and all(d["calib"] == 60 for d in lines)
    run = load_run(run_dir)
    ds = run.dataset()
    val, calib = _subset(ds.val, 300, 0), Calibration.of(ds.calib, 60, 0).split
    share = torch.bincount(ds.calib.labels, minlength=10) * 60 / len(ds.calib)  # classes kept in proportion
    assert len(calib) == 60 and ((torch.bincount(calib.labels, minlength=10) - share).abs() < 1).all()
    for d in (lines[0], lines[-1]):  # one of each process
        arch = run.space.canonical(ArchConfig.from_dict(d["arch"]))
        on_subset = evaluate_on(run.supernet, arch, calib, val, run.mean, run.std).loss
        whole_split = evaluate_on(run.supernet, arch, ds.calib, val, run.mean, run.std).loss
        assert d["loss"] == pytest.approx(on_subset, rel=1e-5)
        # the tiny run is near chance, so the two calibrations move its loss by as little as 1e-5 of it: the
        # record must sit far closer to the subset's loss than to the whole split's, whatever that gap is
        assert abs(d["loss"] - on_subset) * 10 < abs(d["loss"] - whole_split)
    whole = fit_predictor(run_dir, samples=30, holdout=10, val_images=300, progress=False, uniform=False,
                          screen=False, calib_images=None)
    assert whole.calib_images == len(ds.calib)
    lines = (run_dir / SAMPLES_FILE).read_text().splitlines()
    assert len(lines) == 60 and all("calib" not in json.loads(line) for line in lines[30:])
    assert len(read_samples(run_dir / SAMPLES_FILE, run.space, run.checkpoint_sha256, 300, calib=60)) == 30
    assert len(read_samples(run_dir / SAMPLES_FILE, run.space, run.checkpoint_sha256, 300, calib=None)) == 30


def test_both_ends_feed_a_helper_process_until_they_meet(tmp_path: Path) -> None:
    """The to-do list is shared from both ends with a real helper process speaking the helper's protocol
    (an index a line in, a line out per finished one): every index is taken exactly once, the helper's from
    the back in order, this process's from the front, and the helper's input is closed when the ends meet
    so it exits by itself."""
    import subprocess
    import sys
    import threading
    import time

    from factory.predictor.two_process import BothEnds, _feed_and_follow

    done_file = tmp_path / "helper_took.txt"
    helper = ("import sys, time\n"
              f"out = open({str(done_file)!r}, 'w')\n"
              "for line in sys.stdin:\n"
              "    time.sleep(0.01)\n"
              "    out.write(line); out.flush()\n"
              "    print('measured', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ends, reported, errors = BothEnds(60), [], []
    follower = threading.Thread(target=_feed_and_follow, args=(proc, ends, reported.append, errors))
    follower.start()
    mine = []
    while (i := ends.take_front()) is not None:
        time.sleep(0.02)
        mine.append(i)
    follower.join(timeout=30)
    assert not follower.is_alive() and proc.wait(timeout=30) == 0 and not errors
    theirs = [int(line) for line in done_file.read_text().split()]
    assert mine == list(range(len(mine)))
    assert theirs == list(range(59, len(mine) - 1, -1))
    assert len(reported) == len(theirs) and len(theirs) >= 10
