"""Latency tables: probe bundle round trip (real ONNX Runtime), settings checks, predict/size/memory."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from supernets import cost, get_space
from targets.blocks import block_keys, block_shapes, latency_feature_names
from targets.latency import LatencyModel, load_latency_model, table_path
from targets.measure import measure_file
from targets.probe import export_models, import_results, sample_archs, write_probe_bundle
from targets.profile import parse_profile
from targets.size import exported_size_bytes
from targets.table import LatencyTable, LatencyTableError

SAMPLES = 20  # the smallest fit allowed: fast enough for a unit test
# The module fixture exports 20 ONNX models and runs the bundle (~15 s CPU, ~60 s wall on the loaded box).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space():
    return get_space()


@pytest.fixture(scope="module")
def profile():
    return parse_profile({"name": "ci-onnx", "runtime": "onnxruntime", "precision": "fp32", "threads": 1,
                          "constraints": {"latency_p50_ms": 1.0}})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, space, profile) -> Path:
    out = tmp_path_factory.mktemp("probe") / "bundle"
    write_probe_bundle(profile, space, 10, out, samples=SAMPLES, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def results(bundle: Path, tmp_path_factory) -> Path:
    """Run a copy of the bundle's runner as the device would: same Python, no PYTHONPATH, run from
    elsewhere, with the project's other packages, torch and TensorFlow made unimportable and `exports`
    checked to be the bundle's own copy, so the runner provably needs only numpy + the runtime."""
    device = tmp_path_factory.mktemp("device") / "bundle"
    shutil.copytree(bundle, device)
    code = ("import runpy, sys\n"
            "for m in ('targets', 'supernets', 'factory', 'torch', 'tensorflow'): sys.modules[m] = None\n"
            "sys.argv = ['runner.py', '--rounds', '2', '--repeats', '5', '--warmup', '2']\n"
            "try:\n"
            f"    runpy.run_path({str(device / 'runner.py')!r}, run_name='__main__')\n"
            "except SystemExit as done:\n"
            "    assert done.code == 0, done.code\n"
            f"assert sys.modules['exports.timing'].__file__.startswith({str(device)!r}), 'project exports used'\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], cwd=device.parent, capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    return device / "RESULTS.json"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, profile, space, results) -> Path:
    run = tmp_path_factory.mktemp("run")
    import_results(profile, results, space, 10).save(table_path(run, profile.name))
    return run


def test_bundle_is_self_contained(bundle: Path):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["models"]) == SAMPLES
    project_exports = Path(__file__).parents[1] / "exports"
    carried = sorted(p.name for p in (bundle / "exports").iterdir())
    assert carried == ["__init__.py", "runtime.py", "timing.py"]
    assert all((bundle / "exports" / n).read_text() == (project_exports / n).read_text() for n in carried)
    assert "exports.timing" in (bundle / "runner.py").read_text()
    for m in manifest["models"]:
        path = bundle / m["file"]
        assert path.suffix == ".onnx" and exported_size_bytes(path) == m["size_bytes"]


def test_probe_round_trip_gives_a_usable_table(results: Path, run_dir: Path, profile, space):
    res = json.loads(results.read_text())
    assert res["runtime"] == "onnxruntime" and res["device"]["runtime_version"].startswith("onnxruntime ")
    assert all(m["p95_ms"] >= m["p50_ms"] > 0 for m in res["models"])
    model = load_latency_model(run_dir, profile, space=space, num_classes=10)
    assert model.table.method["source"] == "import" and model.table.method["samples"] == SAMPLES
    # every block of the space has an entry, non-negative (NNLS)
    assert set(model.table.blocks) == set(block_shapes(space))
    assert min(v[0] for v in model.table.blocks.values()) >= 0
    small, large = space.smallest(), space.largest()
    assert 0 < model.predict(small) < model.predict(large)
    assert model.predict_p95(large) > 0


def test_predict_is_the_sum_of_table_entries(run_dir: Path, profile, space):
    model = load_latency_model(run_dir, profile, space=space, num_classes=10)
    table = model.table
    rng = random.Random(7)
    for _ in range(50):
        arch = space.sample(rng)
        by_dict = table.fixed[arch.resolution][0] + sum(table.blocks[k][0] for k in block_keys(space, arch))
        assert model.predict(arch) == pytest.approx(by_dict, rel=1e-9)
        by_dict95 = table.fixed[arch.resolution][1] + sum(table.blocks[k][1] for k in block_keys(space, arch))
        assert model.predict_p95(arch) == pytest.approx(by_dict95, rel=1e-9)
        # inactive slots do not matter
        assert model.predict(space.canonical(arch)) == pytest.approx(model.predict(arch), rel=1e-12)


def test_predict_refuses_invalid_arch(run_dir: Path, profile, space):
    model = load_latency_model(run_dir, profile, space=space, num_classes=10)
    bad = replace(space.smallest(), resolution=31)
    with pytest.raises(ValueError, match="resolution"):
        model.predict(bad)


def test_size_prediction_within_5_percent_of_exported_files(run_dir: Path, profile, space):
    model = load_latency_model(run_dir, profile, space=space, num_classes=10)
    for m in model.table.measurements:
        assert model.size_bytes(m.arch) == pytest.approx(m.size_bytes, rel=0.05)
    assert model.size_mb(space.largest()) > 3 * model.size_mb(space.smallest())


def test_peak_memory_estimate_is_activations_plus_weights(run_dir: Path, profile, space):
    model = load_latency_model(run_dir, profile, space=space, num_classes=10)
    arch = space.largest()
    expected = (cost(space, arch, 10).peak_activation_bytes + model.size_bytes(arch)) / 1e6
    assert model.peak_memory_mb(arch) == pytest.approx(expected)


def test_table_measured_under_other_settings_is_refused(run_dir: Path, profile, space):
    with pytest.raises(LatencyTableError, match="threads: table has 1, target 'ci-onnx' wants 2"):
        load_latency_model(run_dir, replace(profile, threads=2), space=space)
    with pytest.raises(LatencyTableError, match=r"precision: table has 'fp32'.*'int8'"):
        load_latency_model(run_dir, replace(profile, precision="int8"), space=space)
    with pytest.raises(LatencyTableError, match="num_classes: table has 10, the run has 7"):
        load_latency_model(run_dir, profile, space=space, num_classes=7)
    with pytest.raises(LatencyTableError, match=r"space.phi: table has 0.0, the run has 1.0"):
        load_latency_model(run_dir, profile, space=get_space(phi=1.0))


def test_table_from_another_cpu_is_refused_for_a_local_target(tmp_path: Path, run_dir: Path, profile, space):
    data = json.loads(table_path(run_dir, profile.name).read_text())
    data["machine"]["cpu_model"] = "Imaginary CPU 9000"
    other = tmp_path / "run"
    table_path(other, profile.name).parent.mkdir(parents=True)
    table_path(other, profile.name).write_text(json.dumps(data))
    with pytest.raises(LatencyTableError, match="cpu_model: table measured on 'Imaginary CPU 9000'"):
        load_latency_model(other, profile, space=space)
    # the same table is fine for a remote-device profile: it describes the device, not this machine
    remote = replace(profile, latency_source="import")
    assert load_latency_model(other, remote, space=space).predict(space.smallest()) > 0


def test_missing_table_says_how_to_make_it(tmp_path: Path, profile):
    with pytest.raises(LatencyTableError, match="factory targets measure ci-onnx"):
        load_latency_model(tmp_path, profile)
    remote = replace(profile, latency_source="import")
    with pytest.raises(LatencyTableError, match="factory targets probe ci-onnx"):
        load_latency_model(tmp_path, remote)


def test_results_of_another_target_are_refused(results: Path, space):
    other = parse_profile({"name": "other", "runtime": "onnxruntime", "precision": "fp32"})
    with pytest.raises(LatencyTableError, match="target is 'ci-onnx' but target 'other' needs 'other'"):
        import_results(other, results, space, 10)


def test_table_json_round_trip(run_dir: Path, profile, space):
    table = LatencyTable.load(table_path(run_dir, profile.name))
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again == table
    assert set(table.fit["coefficients_p50"]) == set(latency_feature_names(space))
    assert {"cpu_model", "runtime_version"} <= set(table.machine)


def test_measure_file_times_a_real_exported_model(bundle: Path):
    path = bundle / json.loads((bundle / "manifest.json").read_text())["models"][0]["file"]
    p50, p95 = measure_file(path, threads=1, repeats=20, rounds=2)
    assert 0 < p50 <= p95 < 1000


def test_sample_archs_are_distinct_and_include_extremes(space):
    archs = sample_archs(space, 30, seed=3)
    assert len(set(archs)) == 30
    assert archs[0] == space.canonical(space.smallest()) and archs[1] == space.canonical(space.largest())
    assert sample_archs(space, 30, seed=3) == archs


def test_latency_model_is_fast(run_dir: Path, profile, space):
    """Not a timing assertion: checks the vectorised layout gives the same answer as a fresh model."""
    model = load_latency_model(run_dir, profile, space=space)
    fresh = LatencyModel(model.table, space, 10, "fp32")
    archs = [space.sample(random.Random(i)) for i in range(20)]
    np.testing.assert_allclose([model.predict(a) for a in archs], [fresh.predict(a) for a in archs])


def test_cli_import_writes_the_run_table(tmp_path: Path, results: Path, tiny_run: Path):
    """`factory targets import FILE.toml RESULTS.json --run RUN` (the profile given as a file)."""
    import shutil

    from click.testing import CliRunner

    from factory.cli import cli

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    toml = tmp_path / "ci-onnx.toml"
    toml.write_text('name = "ci-onnx"\nruntime = "onnxruntime"\nprecision = "fp32"\n'
                    '[constraints]\nlatency_p50_ms = 1.0\n')
    result = CliRunner().invoke(cli, ["targets", "import", str(toml), str(results), "--run", str(run), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert Path(summary["table"]) == table_path(run, "ci-onnx") and table_path(run, "ci-onnx").exists()
    assert summary["method"]["samples"] == SAMPLES and 0 <= summary["fit"]["p50_cv5"]["within_10pct"] <= 1


@pytest.mark.parametrize(("counted", "says"), [(False, "and were set aside"), (True, "and are counted")])
def test_cli_import_says_whether_contended_rounds_are_in_the_table(tmp_path: Path, results: Path, tiny_run: Path,
                                                                    counted: bool, says: str):
    """A device's results file whose 2-thread rounds were contended: set aside while a short wait found clean
    ones, counted when the slowdown outlasted it; the import says which."""
    import shutil

    from click.testing import CliRunner

    from factory.cli import cli

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    doc = json.loads(results.read_text())
    doc["timing"].update(rounds_timed=6, contended_rounds=4, contended_counted=counted)
    doc["threads"] = doc["manifest"]["threads"] = 2  # as if timed on 2 threads
    device_results = tmp_path / "RESULTS.json"
    device_results.write_text(json.dumps(doc))
    toml = tmp_path / "ci-onnx.toml"
    toml.write_text('name = "ci-onnx"\nruntime = "onnxruntime"\nprecision = "fp32"\nthreads = 2\n'
                    '[constraints]\nlatency_p50_ms = 1.0\n')
    result = CliRunner().invoke(cli, ["targets", "import", str(toml), str(device_results), "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert f"4 of 6 timing rounds were contended (the 2-thread runs much slower than 1 thread) {says}" \
        in " ".join(result.output.split())


def test_worker_processes_export_the_same_files_as_one_process(tmp_path: Path, space, profile):
    archs = sample_archs(space, 4, seed=3)
    one = export_models(profile, space, 10, archs, tmp_path / "one", progress=False, jobs=1)
    two = export_models(profile, space, 10, archs, tmp_path / "two", progress=False, jobs=2)
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two, strict=True))


def test_openvino_probes_are_opened_two_at_a_time_each_runner_with_its_file(tmp_path: Path, space, profile,
                                                                            monkeypatch: pytest.MonkeyPatch):
    """Compiling OpenVINO IRs dominates opening a table's probes: two compile at once (a barrier that only two
    loads in flight together can pass), and the i-th runner is still the i-th file's. ONNX Runtime files
    open one after another, on the calling thread."""
    import threading

    from exports import timing
    from targets.measure import load_runners, measure_files_rounds

    openvino = parse_profile({"name": "ci-ov", "runtime": "openvino", "precision": "fp16", "threads": 1,
                              "constraints": {"latency_p50_ms": 1.0}})
    archs = sample_archs(space, 3, seed=5)
    ov_files = export_models(openvino, space, 10, archs, tmp_path / "ov", progress=False, jobs=1)
    real, both_in_flight = timing.load_runner, threading.Barrier(2, timeout=30)
    opened: list[tuple[Path, int]] = []

    def tagged(path: Path, threads: int, rng: np.random.Generator) -> timing.Runner:
        if len(opened) < 2:
            opened.append((path, threading.get_ident()))
            both_in_flight.wait()
        runner = real(path, threads, rng)
        return lambda: (path, runner())

    monkeypatch.setattr(timing, "load_runner", tagged)
    measure_files_rounds(ov_files, 1, rounds=1, repeats=2, warmup=1)  # as a table times its probes
    assert len({thread for _, thread in opened}) == 2
    assert [run()[0] for run in load_runners(ov_files, 1, seed=0)] == ov_files

    onnx_files = export_models(profile, space, 10, archs, tmp_path / "onnx", progress=False, jobs=1)
    opened.clear()

    def recorded(path: Path, threads: int, rng: np.random.Generator) -> timing.Runner:
        opened.append((path, threading.get_ident()))
        return real(path, threads, rng)

    monkeypatch.setattr(timing, "load_runner", recorded)
    measure_files_rounds(onnx_files, 1, rounds=1, repeats=2, warmup=1)
    assert [p for p, _ in opened] == onnx_files and {t for _, t in opened} == {threading.get_ident()}


def test_onnx_based_tables_share_their_fp32_exports(tmp_path: Path, space, profile):
    """An OpenVINO table's probes leave their fp32 ONNX exports in the cache; the ONNX Runtime table of the
    same sub-networks uses them (its files equal an export without the cache, the kept files are not made
    again); another seed is another network, so it gets its own."""
    openvino = parse_profile({"name": "ci-ov", "runtime": "openvino", "precision": "fp16", "threads": 1,
                              "constraints": {"latency_p50_ms": 1.0}})
    archs = sample_archs(space, 3, seed=5)
    cache = tmp_path / "cache"
    cache.mkdir()
    export_models(openvino, space, 10, archs, tmp_path / "ov", progress=False, jobs=1, onnx_cache=cache)
    kept = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert len(kept) == len(archs)
    shared = export_models(profile, space, 10, archs, tmp_path / "shared", progress=False, onnx_cache=cache)
    plain = export_models(profile, space, 10, archs, tmp_path / "plain", progress=False, jobs=1)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(shared, plain, strict=True))
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == kept
    export_models(profile, space, 10, archs, tmp_path / "seed1", seed=1, progress=False, jobs=1, onnx_cache=cache)
    assert len(list(cache.iterdir())) == 2 * len(archs)
