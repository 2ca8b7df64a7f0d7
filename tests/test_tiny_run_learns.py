"""The tiny run every pipeline test shares has learnt something: its largest sub-network beats chance on
the run's validation split by a margin its 95% interval cannot explain away."""

from __future__ import annotations

import numpy as np

from exports.intervals import wilson_interval
from factory.evaluate import evaluate_arch
from factory.run import load_run

MARGIN = 0.03  # seeds 0-3 of the tiny config reach 17.6-19.8 % (lower bounds 15.1-17.1 %) on 800 images


def test_tiny_run_largest_subnet_is_above_chance_by_a_margin(tiny_run):
    run = load_run(tiny_run)
    labels = run.dataset().val.labels.numpy()
    chance = max(1 / run.num_classes, float(np.bincount(labels).max() / len(labels)))  # or always the top class
    res = evaluate_arch(run, run.space.largest())
    assert res.images == len(labels) >= 500
    low, high = wilson_interval(round(res.accuracy * res.images), res.images)
    assert low > chance + MARGIN, f"accuracy {res.accuracy:.2%} [{low:.2%}, {high:.2%}], chance {chance:.2%}"
