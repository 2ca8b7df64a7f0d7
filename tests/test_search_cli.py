"""`factory predictor fit` and `factory search` on a trained tiny run with a real ONNX Runtime latency
table: the verified pick meets the budgets when measured, files are written, an infeasible target
exits 3 quickly naming the closest candidate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROFILE = """
name = "{name}"
description = "test target"
runtime = "onnxruntime"
precision = "fp32"
threads = 1
[constraints]
{constraints}
"""


def _factory(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory", *args], capture_output=True, text=True,
                          timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def _profile(tmp: Path, name: str, constraints: str) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(PROFILE.format(name=name, constraints=constraints))
    return path


@pytest.fixture(scope="module")
def searchable_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of tiny_run with a real latency table (24 timed sub-networks) and a fitted predictor."""
    from factory.run import load_run
    from targets.latency import build_latency_table, table_path
    from targets.profile import load_profile

    tmp = tmp_path_factory.mktemp("search")
    run_dir = tmp / "run"
    shutil.copytree(tiny_run, run_dir)
    prof_path = _profile(tmp, "unit-onnx", "latency_p50_ms = 5.0\nsize_mb = 5.0")
    run = load_run(run_dir)
    build_latency_table(run.space, run.num_classes, load_profile(prof_path),
                        table_path(run_dir, "unit-onnx"), progress=False, samples=24)
    fit = _factory("predictor", "fit", "--run", str(run_dir), "--samples", "30", "--holdout", "8",
                   "--val-images", "100", "--json")
    assert fit.returncode == 0, fit.stderr
    report = json.loads(fit.stdout)
    uniform = 108 - 2  # the uniform grid, less the largest and smallest (always among the random samples)
    assert report["samples"] == 30 + uniform and report["uniform"] == uniform and report["holdout"] == 8
    assert report["train"] == 30 - 8 + uniform  # the uniform grid is fitted on, never held out
    assert -1.0 <= report["holdout_spearman"] <= 1.0
    assert len((run_dir / "predictor_samples.jsonl").read_text().splitlines()) == 30 + uniform
    assert (run_dir / "predictor.pt").is_file()
    return run_dir, prof_path


def test_search_cli_verified_pick_meets_budgets(searchable_run: tuple[Path, Path]) -> None:
    run_dir, prof = searchable_run
    res = _factory("search", "--run", str(run_dir), "--target", str(prof), "--population", "24",
                   "--generations", "6", "--verify-top", "2", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    chosen = out["chosen"]
    assert chosen["feasible"] and chosen["measured_passes"]
    assert chosen["measured"]["latency_p50_ms"] <= 5.0 and chosen["measured"]["size_mb"] <= 5.0
    assert 0.0 <= chosen["measured"]["accuracy"] <= 1.0
    assert 1 <= len(out["checked"]) <= 2 * 3
    assert out["pareto"] and all("arch" in c and "predicted" in c for c in out["pareto"])
    files = run_dir / "search" / "unit-onnx"
    saved = json.loads((files / "pareto.json").read_text())
    assert saved["chosen"]["arch"] == chosen["arch"]
    assert json.loads((files / "pick.json").read_text())["arch"] == chosen["arch"]
    assert (files / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_infeasible_target_exits_3_quickly_naming_the_closest(searchable_run: tuple[Path, Path]) -> None:
    run_dir, _ = searchable_run
    tmp = run_dir.parent
    shutil.copy(run_dir / "latency" / "unit-onnx.json", run_dir / "latency" / "unit-tight.json")
    prof = _profile(tmp, "unit-tight", "latency_p50_ms = 0.001\nmin_accuracy = 0.999")
    res = _factory("search", "--run", str(run_dir), "--target", str(prof), timeout=120)  # a hang times out
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    assert "infeasible" in res.stderr and "Closest candidate: r" in res.stderr
    assert "latency_p50_ms" in res.stderr and "min_accuracy" in res.stderr
    saved = json.loads((run_dir / "search" / "unit-tight" / "pareto.json").read_text())
    assert saved["chosen"] is None and not (run_dir / "search" / "unit-tight" / "pick.json").exists()
    miss = saved["closest"]["misses"]["latency_p50_ms"]
    assert miss["excess"] > 0 and miss["excess"] == pytest.approx(miss["value"] - 0.001, abs=1e-5)


def test_verification_ships_a_measured_network_the_predicted_front_ranks_lower(
        searchable_run: tuple[Path, Path], tmp_path: Path) -> None:
    """A sub-network whose accuracy is already measured (here: the largest uniform one, given a measured
    accuracy above anything else) joins the verification and wins when it meets the budgets, without
    being measured again; the front's own candidates are still measured for real."""
    from factory.predictor.model import load_predictor
    from factory.run import load_run
    from factory.search.engine import Candidate, CandidateEvaluator, check_budgets, search
    from factory.search.pick import VerifyConfig, verify_pick
    from targets.latency import load_latency_model
    from targets.profile import load_profile

    run_dir, prof_path = searchable_run
    run = load_run(run_dir)
    profile = load_profile(prof_path)
    latency = load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
    predictor = load_predictor(run.path, run.space, run.checkpoint_sha256)
    result = search(run.space, predictor, latency, profile, population=16, generations=3, seed=0)
    small = run.space.canonical(run.space.uniform(min(run.space.resolutions), 2, 3, 3))
    (pred,) = CandidateEvaluator(predictor, latency)([small])
    known = Candidate(small, pred, check_budgets(result.budgets, pred))
    assert known.feasible
    with verify_pick(run, profile, result, VerifyConfig(top=2, rounds=1, repeats=20), workdir=tmp_path,
                     known=[(known, 1.0)]) as verified:
        assert verified.chosen.arch == small and verified.chosen.measured.accuracy == 1.0
        assert verified.chosen.passes_measured
        # the first batch: the front's `top` most accurate others (fewer when the front, shaped by the timed
        # table, has fewer), measured for real, plus the known one
        others = [c for c in result.feasible if run.space.canonical(c.arch) != small]
        assert others
        assert f"{min(2, len(others))} candidate(s) measured now, 1 known" in verified.result.notes[-1]
        assert (verified.files["onnx"] / "model.onnx").is_file()  # kept for the package writer
    assert list(tmp_path.iterdir()) == []  # closing the pick removes its folder


def test_the_pick_is_bn_recalibrated_once_for_its_accuracy_and_its_file(
        searchable_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No accuracy is known: every candidate is measured here, and the one exported reuses the network its
    accuracy was measured on (recalibrate_bn still runs, counted per sub-network)."""
    from collections import Counter

    import factory.evaluate
    from factory.predictor.model import load_predictor
    from factory.run import load_run
    from factory.search.engine import search
    from factory.search.pick import VerifyConfig, verify_pick
    from targets.latency import load_latency_model
    from targets.profile import load_profile

    run_dir, prof_path = searchable_run
    run, profile = load_run(run_dir), load_profile(prof_path)
    latency = load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
    result = search(run.space, load_predictor(run.path, run.space, run.checkpoint_sha256), latency, profile,
                    population=16, generations=3, seed=0)
    counts: Counter = Counter()
    real = factory.evaluate.recalibrate_bn

    def counting(net, arch, *args, **kwargs):
        counts[arch.to_json()] += 1
        return real(net, arch, *args, **kwargs)

    monkeypatch.setattr(factory.evaluate, "recalibrate_bn", counting)
    with verify_pick(run, profile, result, VerifyConfig(top=2, rounds=1, repeats=20), workdir=tmp_path) as picked:
        assert counts[picked.chosen.arch.to_json()] == 1
        assert len(counts) >= 2 and set(counts.values()) == {1}, counts


def test_search_out_pick_json_is_what_export_arch_takes(searchable_run: tuple[Path, Path], tmp_path: Path) -> None:
    from supernets.arch import ArchConfig

    run_dir, prof = searchable_run
    pick_path = tmp_path / "pick.json"
    res = _factory("search", "--run", str(run_dir), "--target", str(prof), "--population", "16",
                   "--generations", "3", "--verify-top", "1", "--out", str(pick_path))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pick.json", "pick.pareto.json", "pick.pareto.png"]
    pick = json.loads(pick_path.read_text())
    assert pick["target"]["name"] == "unit-onnx" and pick["verified"] is True
    assert pick["measured"]["latency_p50_ms"] <= 5.0 and set(pick["predicted"]) >= {"accuracy", "latency_p50_ms"}
    assert json.loads((tmp_path / "pick.pareto.json").read_text())["chosen"]["arch"] == pick["arch"]
    assert pick["ofa_arch"] == ArchConfig.from_dict(pick["arch"]).to_ofa_dict()
    package = tmp_path / "pkg"
    res = _factory("export", "--run", str(run_dir), "--arch", str(pick_path), "--formats", "onnx",
                   "--repeats", "5", "--out", str(package))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["arch"] == pick["arch"] and manifest["ofa_arch"] == pick["ofa_arch"]


def test_arch_files_plain_pick_and_pareto_are_read_and_others_named(tmp_path: Path) -> None:
    from factory.errors import UserInputError
    from factory.search.files import read_arch_file
    from supernets import get_space

    arch = get_space().smallest()
    for name, data in (("plain", arch.to_dict()), ("pick", {"arch": arch.to_dict(), "target": {"name": "t"}}),
                       ("pareto", {"pareto": [], "chosen": {"arch": arch.to_dict(), "predicted": {}}})):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        assert read_arch_file(tmp_path / f"{name}.json") == arch
    (tmp_path / "other.json").write_text(json.dumps({"resolutions": [28]}))
    with pytest.raises(UserInputError, match=r"other\.json: not an arch file; expected .*'arch'.*'chosen'"):
        read_arch_file(tmp_path / "other.json")
    (tmp_path / "infeasible.json").write_text(json.dumps({"pareto": [], "chosen": None}))
    with pytest.raises(UserInputError, match="without a pick"):
        read_arch_file(tmp_path / "infeasible.json")


def test_search_without_a_predictor_stops_naming_the_fit_command(searchable_run: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    run_dir, prof = searchable_run
    bare = tmp_path / "run"
    shutil.copytree(run_dir, bare, ignore=shutil.ignore_patterns("predictor.pt", "search"))
    res = _factory("search", "--run", str(bare), "--target", str(prof), timeout=120)
    assert res.returncode == 2, res.stderr
    assert f"factory predictor fit --run {bare}" in res.stderr and "Traceback" not in res.stderr


def test_a_candidate_the_int8_gate_would_refuse_is_passed_over(searchable_run: tuple[Path, Path], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 targets: a candidate that meets the budgets but whose file misses the export gate's int8 criteria
    is not picked (the package gate would refuse it); with criteria nothing can meet, no pick at all."""
    from dataclasses import replace

    import exports.verify
    from factory.errors import InfeasibleTargetError
    from factory.predictor.model import load_predictor
    from factory.run import load_run
    from factory.search.engine import search
    from factory.search.pick import VerifyConfig, int8_gate_failures, verify_pick
    from targets.latency import load_latency_model
    from targets.profile import load_profile

    run_dir, prof_path = searchable_run
    run, fp32 = load_run(run_dir), load_profile(prof_path)
    latency = load_latency_model(run.path, fp32, space=run.space, num_classes=run.num_classes)
    int8 = replace(fp32, precision="int8")
    result = search(run.space, load_predictor(run.path, run.space, run.checkpoint_sha256), latency, int8,
                    population=16, generations=3, seed=0)
    config = VerifyConfig(top=2, rounds=1, repeats=20, max_checks=2)
    # the tiny run's int8 files agree with fp32 on ~90% of images: criteria it meets, then ones it cannot
    monkeypatch.setattr(exports.verify, "INT8_MIN_AGREEMENT", 0.5)
    monkeypatch.setattr(exports.verify, "INT8_MAX_ACCURACY_DROP", 0.5)
    with verify_pick(run, int8, result, config, workdir=tmp_path) as picked:
        assert int8_gate_failures(run, picked.check, 1) == []
    monkeypatch.setattr(exports.verify, "INT8_MIN_AGREEMENT", 1.01)
    with pytest.raises(InfeasibleTargetError, match=r"the int8 gate would refuse the file: .*int8 top-1 agreement"):
        verify_pick(run, int8, result, config, workdir=tmp_path)
    assert list(tmp_path.iterdir()) == []
