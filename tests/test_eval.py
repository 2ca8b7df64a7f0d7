"""BN recalibration, evaluation and the `factory eval` command on the shared tiny run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from factory.cli import cli
from factory.data import to_model_input
from factory.evaluate import calibrated_subnet, evaluate_arch, recalibrate_bn
from factory.run import load_run


@pytest.fixture(scope="module")
def run(tiny_run):
    return load_run(tiny_run)


def test_evaluation_leaves_supernet_buffers_unchanged_and_repeats_exactly(run):
    before = {k: v.clone() for k, v in run.supernet.state_dict().items()}
    small = evaluate_arch(run, run.space.smallest())
    evaluate_arch(run, run.space.largest())
    again = evaluate_arch(run, run.space.smallest())
    assert again.accuracy == small.accuracy and again.loss == pytest.approx(small.loss, rel=1e-6)
    after = run.supernet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_kept_model_inputs_give_the_figures_of_freshly_prepared_ones_and_stay_within_their_budget(run, monkeypatch):
    """Measuring many sub-networks prepares each split once per resolution (the inputs are kept between
    them): same accuracy and loss as preparing them every time, no second preparation, and a cache over
    its byte budget keeps nothing."""
    import factory.evaluate as ev

    ds = run.dataset()
    arch = run.space.largest()
    calls = []
    real = ev.to_model_input

    def counting(images, *args, **kwargs):
        calls.append(len(images))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(ev, "to_model_input", counting)
    monkeypatch.setattr(ev, "_INPUTS", ev.InputCache())
    kept = ev.evaluate_on(run.supernet, arch, ds.calib, ds.val, run.mean, run.std)
    prepared = len(calls)
    assert prepared > 0 and sum(calls) == len(ds.calib) + len(ds.val)
    again = ev.evaluate_on(run.supernet, arch, ds.calib, ds.val, run.mean, run.std)
    assert len(calls) == prepared  # nothing prepared again
    monkeypatch.setattr(ev, "_INPUTS", ev.InputCache(max_bytes=0))  # keeps nothing: prepares every time
    fresh = ev.evaluate_on(run.supernet, arch, ds.calib, ds.val, run.mean, run.std)
    ev.evaluate_on(run.supernet, arch, ds.calib, ds.val, run.mean, run.std)
    assert len(calls) == 3 * prepared
    assert kept.accuracy == again.accuracy == fresh.accuracy
    assert kept.loss == again.loss == fresh.loss


def test_recalibrate_bn_sets_statistics_of_the_calibration_data(run):
    net = run.supernet
    arch = run.space.smallest()
    ds = run.dataset()
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        recalibrate_bn(net, arch, ds.calib.images, run.mean, run.std, batch_size=len(ds.calib))
        # one batch: the stem BN's running mean must equal the mean of its input over the calibration set
        x = to_model_input(ds.calib.images, arch.resolution, run.mean, run.std)
        with torch.no_grad():
            conv_out = net.stem.conv(x)
        expected = conv_out.mean(dim=(0, 2, 3))
        assert torch.allclose(net.stem.bn.running_mean, expected, atol=1e-4)
        assert not net.training
    finally:
        net.load_state_dict(saved)


def test_calibrated_subnet_matches_supernet_evaluation(run):
    arch = run.space.smallest()
    static = calibrated_subnet(run, arch)
    ds = run.dataset()
    x = to_model_input(ds.val.images, arch.resolution, run.mean, run.std)
    with torch.no_grad():
        acc = float((static(x).argmax(1) == ds.val.labels).float().mean())
    assert acc == pytest.approx(evaluate_arch(run, arch).accuracy, abs=1e-6)


def test_eval_cli_json_reports_accuracy_loss_arch(tiny_run, run, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--run", str(tiny_run), "--arch", "min", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["arch"] == run.space.smallest().to_dict()
    assert 0.0 <= data["accuracy"] <= 1.0 and data["loss"] > 0
    assert data["accuracy"] == evaluate_arch(run, run.space.smallest()).accuracy
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps({"arch": run.space.uniform(24, 3, 5, 4).to_dict()}))
    result = CliRunner().invoke(cli, ["eval", "--run", str(tiny_run), "--arch", str(arch_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["arch"]["resolution"] == 24


def test_eval_cli_test_split_counts_test_images_and_brackets_them(tiny_run, run):
    """--split test scores the held-out split (a count checked by hand), with a Wilson interval around it."""
    ds = run.dataset()
    result = CliRunner().invoke(cli, ["eval", "--run", str(tiny_run), "--arch", "max", "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    static = calibrated_subnet(run, run.space.largest())
    x = to_model_input(ds.test.images, run.space.largest().resolution, run.mean, run.std)
    with torch.no_grad():
        correct = int((static(x).argmax(1) == ds.test.labels).sum())
    assert data["split"] == "test" and data["images"] == len(ds.test) > 0
    assert data["accuracy"] == pytest.approx(correct / len(ds.test), abs=1e-9)
    low, high = data["ci95"]
    assert low < data["accuracy"] < high and high - low > 0.02


def test_eval_cli_errors_are_messages_with_exit_2(tiny_run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resolution": 33, "depths": [2] * 5, "kernel_sizes": [3] * 20,
                               "expand_ratios": [3] * 20}))
    for args, fragment in (
        (["--run", str(tiny_run), "--arch", str(bad)], "resolution: 33"),
        (["--run", str(tmp_path / "none")], "no such folder"),
    ):
        proc = subprocess.run([sys.executable, "-m", "factory", "eval", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert fragment in proc.stderr and "Traceback" not in proc.stderr
