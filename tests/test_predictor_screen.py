"""The predictor's screen: training sub-networks measured on the images the exact ones disagree on."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from factory.predictor.samples import SAMPLES_FILE, Sample, read_samples
from factory.predictor.screen import Screen, exact_archs, measurer, pack_correct, unpack_correct
from supernets import get_space

torch.set_num_threads(1)
SPACE = get_space()


def _sample(arch, correct: np.ndarray) -> Sample:
    return Sample(arch, float(correct.mean()), 0.1, len(correct), 0.0, "sha", correct=pack_correct(correct))


def test_screen_is_every_image_one_exact_measurement_got_wrong() -> None:
    rng = np.random.default_rng(0)
    results = [rng.random(37) > 0.2 for _ in range(3)]
    assert all((unpack_correct(pack_correct(c), 37) == c).all() for c in results)
    archs = [SPACE.sample(random.Random(i)) for i in range(3)]
    screen = Screen.from_samples([_sample(a, c) for a, c in zip(archs, results, strict=True)], 37)
    wrong_any = ~(results[0] & results[1] & results[2])
    assert screen.hard == tuple(np.flatnonzero(wrong_any)) and screen.exact == 3
    assert screen.easy == 37 - int(wrong_any.sum())
    # another set of hard images has another key: estimates through it are never mixed with these
    other = Screen.from_samples([_sample(a, c) for a, c in zip(archs[:2], results[:2], strict=True)], 37)
    assert other.hard != screen.hard and other.key != screen.key
    assert Screen.from_dict(json.loads(json.dumps(screen.to_dict()))) == screen


def test_exact_set_is_held_out_and_grid_topped_up_to_the_minimum() -> None:
    archs = [SPACE.canonical(SPACE.sample(random.Random(i))) for i in range(30)]
    held, grid = archs[10:14], [SPACE.canonical(a) for a in SPACE.uniform_grid()[:3]]
    exact = exact_archs(archs, held, grid, minimum=10)
    assert exact[:7] == [*held, *grid] and exact[7:] == archs[:3]
    assert exact_archs(archs, held, grid, minimum=2) == [*held, *grid]


def test_screened_accuracy_counts_the_easy_images_right_and_nothing_else(tiny_run) -> None:
    """On a real (tiny) run: a screened figure = (easy images + right among the hard ones) / all, i.e. the
    exact accuracy plus the easy images this sub-network gets wrong; never below the exact figure."""
    from factory.predictor.shared_prefix import SharedPrefixEvaluator
    from factory.run import load_run

    run = load_run(tiny_run)
    ds = run.dataset()
    archs = list(dict.fromkeys(run.space.canonical(run.space.sample(random.Random(i))) for i in range(8)))
    exact_eval = SharedPrefixEvaluator(run.supernet, ds.calib, ds.val, run.mean, run.std, batch_size=64)
    exact = measurer(exact_eval, None)
    full = {a: exact(a) for a in archs}
    screen = Screen.from_samples([Sample(a, m.accuracy, m.loss, m.images, 0.0, "sha", correct=m.correct)
                                  for a, m in list(full.items())[:4]], len(ds.val))
    assert 0 < len(screen.hard) < len(ds.val)
    hard_eval = SharedPrefixEvaluator(run.supernet, ds.calib, screen.split(ds.val), run.mean, run.std, batch_size=64)
    screened = measurer(hard_eval, screen)
    for a in archs[4:]:
        m = screened(a)
        right = unpack_correct(full[a].correct, len(ds.val))
        easy = np.ones(len(ds.val), dtype=bool)
        easy[list(screen.hard)] = False
        missed = int((easy & ~right).sum())
        assert m.images == len(ds.val) and m.evaluated == len(screen.hard) and m.screen == screen.key
        assert m.accuracy == pytest.approx(full[a].accuracy + missed / len(ds.val), abs=1e-12)
        assert m.accuracy >= full[a].accuracy


def test_fit_screens_training_samples_only_and_a_rerun_measures_nothing(tiny_run, tmp_path, monkeypatch) -> None:
    """Held-out sub-networks are measured on every image, some training ones through the screen; what the
    search takes as measured (read_samples without a screen) is exact only; a second fit reuses every line."""
    from factory.predictor import fit as fit_module
    from factory.predictor.fit import fit_predictor

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns(SAMPLES_FILE, "predictor.pt"))
    monkeypatch.setattr(fit_module, "SCREEN_MIN", 16)
    report = fit_predictor(run_dir, samples=40, holdout=10, val_images=300, progress=False, uniform=False)
    lines = (run_dir / SAMPLES_FILE).read_text().splitlines()
    assert report.screen is not None and report.screen.exact == 16 and report.screened == 24
    assert len(lines) == 40
    from factory.run import load_run

    run = load_run(run_dir)
    exact = read_samples(run_dir / SAMPLES_FILE, run.space, run.checkpoint_sha256, 300)
    screened = read_samples(run_dir / SAMPLES_FILE, run.space, run.checkpoint_sha256, 300, report.screen.key)
    assert len(exact) == 16 and len(screened) == 40
    assert all(s.evaluated == len(report.screen.hard) for s in screened.values() if not s.exact)
    again = fit_predictor(run_dir, samples=40, holdout=10, val_images=300, progress=False, uniform=False)
    assert (run_dir / SAMPLES_FILE).read_text().splitlines() == lines  # nothing measured again
    assert again.holdout_spearman == report.holdout_spearman
    # without the screen every training sub-network is measured on all images (the 24 estimates are redone)
    fit_predictor(run_dir, samples=40, holdout=10, val_images=300, progress=False, uniform=False, screen=False)
    assert len(read_samples(run_dir / SAMPLES_FILE, run.space, run.checkpoint_sha256, 300)) == 40
