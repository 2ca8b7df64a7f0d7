"""`factory specialize` end to end on a tiny run: one feasible and one infeasible target. The feasible
one ships a verified package, the infeasible one is reported with its closest candidate, the report is
written, and the exit code says something failed. Then `factory benchmark` on the shipped package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROFILE = """
name = "{name}"
description = "test target {name}"
runtime = "onnxruntime"
precision = "fp32"
threads = 1
[constraints]
{constraints}
"""


def _factory(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def unfitted_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A copy of tiny_run without an accuracy predictor, with latency tables for a feasible ONNX target and
    an impossible one."""
    from factory.run import load_run
    from targets.latency import build_latency_table, table_path
    from targets.profile import load_profile

    tmp = tmp_path_factory.mktemp("specialize_once")
    run_dir = tmp / "run"
    shutil.copytree(tiny_run, run_dir)
    data = json.loads((run_dir / "data.json").read_text())
    (run_dir / "data.json").write_text(json.dumps({**data, "val_fraction": 0.04}))  # 200 val images: a cheap fit
    run = load_run(run_dir)
    assert len(run.dataset().val) <= 250
    paths = []
    for name, constraints in {"roomy": "latency_p50_ms = 50.0\nsize_mb = 20.0",
                              "impossible": "latency_p50_ms = 0.0001"}.items():
        path = tmp / f"{name}.toml"
        path.write_text(PROFILE.format(name=name, constraints=constraints))
        build_latency_table(run.space, run.num_classes, load_profile(path), table_path(run_dir, name),
                            progress=False, samples=24)
        paths.append(path)
    assert not (run_dir / "predictor.pt").exists()
    return run_dir, paths


def test_one_thread_tables_time_fewer_rounds_than_multi_thread_ones(unfitted_run) -> None:
    """A one-thread table is timed in SINGLE_THREAD_TABLE_ROUNDS rounds (bench/table_rounds.py), what its method
    records; a multi-thread one keeps the full DEFAULT_ROUNDS."""
    from exports.timing import DEFAULT_ROUNDS
    from targets.measure import SINGLE_THREAD_TABLE_ROUNDS, table_rounds

    run_dir, _ = unfitted_run
    timing = json.loads((run_dir / "latency" / "roomy.json").read_text())["method"]["timing"]
    assert timing["rounds"] == SINGLE_THREAD_TABLE_ROUNDS < DEFAULT_ROUNDS
    assert timing["rounds_timed"] >= SINGLE_THREAD_TABLE_ROUNDS
    assert table_rounds(2) == DEFAULT_ROUNDS


def test_tables_time_fewer_runs_per_round_than_a_pick(unfitted_run) -> None:
    """A table's probes get TABLE_REPEATS timed runs a round (bench/table_repeats.py), what its method records;
    the pick and the export gate keep their own plan."""
    from exports.timing import DEFAULT_REPEATS
    from factory.search.pick import VerifyConfig
    from targets.measure import TABLE_REPEATS

    run_dir, _ = unfitted_run
    timing = json.loads((run_dir / "latency" / "roomy.json").read_text())["method"]["timing"]
    assert timing["repeats"] == TABLE_REPEATS < DEFAULT_REPEATS <= VerifyConfig().repeats


@dataclass
class Specialized:
    exit_code: int
    output: str
    dist: Path
    run_dir: Path
    conversions: Counter
    recalibrations: Counter
    scratch: Path
    keys: Path  # key.pem (signed the packages), key.pub, other.pub (another key pair's public half)


def _write_key_pair(folder: Path, stem: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (folder / f"{stem}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    (folder / f"{stem}.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


@pytest.fixture(scope="module")
def specialized(unfitted_run: tuple[Path, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Specialized:
    """`factory specialize` through the real CLI, in-process so that conversions and BN recalibrations can be
    counted (the real functions run): the run has no predictor, so it fits one first; a roomy target and an
    impossible one."""
    from click.testing import CliRunner

    from factory.cli import cli

    run_dir, profiles = unfitted_run
    tmp = tmp_path_factory.mktemp("specialized")
    scratch, dist, keys = tmp / "tmp", tmp / "dist", tmp / "keys"
    scratch.mkdir()
    keys.mkdir()
    _write_key_pair(keys, "key")
    _write_key_pair(keys, "other")
    with pytest.MonkeyPatch.context() as mp:
        conversions, recalibrations = _count_conversions(mp)
        mp.setattr(tempfile, "tempdir", str(scratch))  # where the verification's folders go
        res = CliRunner().invoke(cli, ["specialize", "--run", str(run_dir), "--targets", ",".join(map(str, profiles)),
                                       "--population", "16", "--generations", "4", "--verify-top", "1",
                                       "--predictor-samples", "30", "--out", str(dist), "--track",
                                       "--sign-key", str(keys / "key.pem")])
    return Specialized(res.exit_code, res.output, dist, run_dir, conversions, recalibrations, scratch, keys)


def test_feasible_target_ships_while_infeasible_one_is_reported(specialized: Specialized):
    res, dist = specialized, specialized.dist
    assert res.exit_code == 3, res.output  # only an infeasible target failed
    outcomes = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    assert outcomes["roomy"]["status"] == "shipped"
    assert outcomes["impossible"]["status"] == "infeasible"
    assert "closest" in outcomes["impossible"]["message"].lower()
    package = dist / outcomes["roomy"]["package"]
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["files"][0]["format"] == "onnx"
    assert manifest["target"]["name"] == "roomy"
    assert outcomes["roomy"]["latency_p50_ms"] <= 50.0
    report = (dist / "report.md").read_text()
    assert "| roomy |" in report and "| impossible |" in report and "infeasible" in report
    html = (dist / "report.html").read_text()
    assert "<table>" in html and "impossible" in html
    assert "IMPOSSIBLE" in res.output.upper() and "shipped" in res.output


def test_package_carries_test_split_accuracy_with_its_interval(specialized: Specialized):
    """The shipped file's accuracy on the test split (which nothing selected on), re-measured here with
    onnxruntime alone; the interval brackets it; the report quotes it next to the validation figure."""
    import numpy as np
    import onnxruntime as ort

    from factory.data import to_model_input
    from factory.run import load_run

    dist = specialized.dist
    outcome = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}["roomy"]
    manifest = json.loads((dist / outcome["package"] / "manifest.json").read_text())
    test = manifest["metrics"]["test"]
    run = load_run(specialized.run_dir)
    ds = run.dataset()
    assert test["split"] == "test" and test["images"] == len(ds.test) > 0
    x = to_model_input(ds.test.images, manifest["input"]["resolution"], run.mean, run.std).numpy()
    session = ort.InferenceSession(str(dist / outcome["package"] / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    correct = int((logits.argmax(1) == ds.test.labels.numpy()).sum())
    record = test["files"]["model.onnx"]
    assert record["correct"] == correct and record["images"] == len(ds.test)
    low, high = record["ci95"]
    assert low < record["value"] < high or record["value"] in (0.0, 1.0)
    assert high - low > 0.01  # a few hundred images cannot pin accuracy to a point
    assert outcome["test_accuracy"] == record
    assert f"{100 * record['value']:.2f}% [{100 * low:.1f}, {100 * high:.1f}]" in (dist / "report.md").read_text()
    assert "Test split" in (dist / outcome["package"] / "README.md").read_text()


def test_shipped_package_lets_verify_re_derive_preprocessing_and_cost(specialized: Specialized):
    """A package written by specialize stores the raw verification images and the space's scaling, so
    `factory verify` re-derives mean/std and MACs/params instead of skipping them."""
    from exports.verify import verify_package

    dist = specialized.dist
    outcome = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}["roomy"]
    report = verify_package(dist / outcome["package"], latency_repeats=0)
    checked = report["manifest_checks"]["checked"]
    assert any(c.startswith("input.mean/std/scale") for c in checked), checked
    assert "metrics.macs/params/peak_activation_bytes" in checked, checked


def test_benchmark_reports_every_file_with_its_verdict(specialized: Specialized):
    dist = specialized.dist
    outcomes = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    package = dist / outcomes["roomy"]["package"]
    res = _factory("benchmark", str(package), "--repeats", "20", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["passed"] is True
    (row,) = report["files"]
    assert row["failures"] == [] and 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    assert row["runtime_settings"]["runtime"] in ("onnxruntime", "openvino", "tflite")
    text = _factory("benchmark", str(package), "--repeats", "20")
    assert "PASS" in text.stdout and "p50 ms" in text.stdout
    assert "the same session in " in text.stdout  # the runtime's own tool, same settings


def _count_conversions(monkeypatch: pytest.MonkeyPatch) -> tuple[Counter, Counter]:
    """Wrap the real `exports.convert.convert` and `factory.evaluate.recalibrate_bn` (both still run) in
    every module that holds them, and `specialize_target` to know which target a call is for. Returns
    (conversions per (target, format), BN recalibrations per (target, arch))."""
    import exports.convert
    import exports.package
    import factory.evaluate
    import factory.prepared
    import factory.ship.specialize as spec

    real, real_target, real_recal = exports.convert.convert, spec.specialize_target, factory.evaluate.recalibrate_bn
    calls: Counter = Counter()
    recalibrations: Counter = Counter()
    current = ["(no target)"]

    def counting(model, fmt, *args, **kwargs):
        calls[(current[0], fmt)] += 1
        return real(model, fmt, *args, **kwargs)

    def counting_recal(net, arch, *args, **kwargs):
        recalibrations[(current[0], arch.to_json())] += 1
        return real_recal(net, arch, *args, **kwargs)

    def tracking(run, profile, *args, **kwargs):
        current[0] = profile.name
        return real_target(run, profile, *args, **kwargs)

    for module in (exports.convert, exports.package, factory.prepared, *sys.modules.values()):
        if vars(module).get("convert") is real:
            monkeypatch.setattr(module, "convert", counting)
    monkeypatch.setattr(spec, "specialize_target", tracking)
    monkeypatch.setattr(factory.evaluate, "recalibrate_bn", counting_recal)
    return calls, recalibrations


def test_specialize_fits_a_predictor_then_converts_each_target_once_per_format(specialized: Specialized):
    """The verified pick travels: the file the search converted and timed is the file that ships, so each
    shipped target costs exactly one conversion per format (none for a target infeasible by prediction),
    and no sub-network is BN-recalibrated twice for a target."""
    res = specialized
    assert "no accuracy predictor" in res.output and "fitting one" in res.output
    assert (res.run_dir / "predictor.pt").is_file()
    outcomes = json.loads((res.dist / "report.json").read_text())
    status = {o["target"]: (o["status"], o["exit_code"]) for o in outcomes}
    assert status == {"roomy": ("shipped", 0), "impossible": ("infeasible", 3)}
    assert dict(res.conversions) == {("roomy", "onnx"): 1}
    per_target = {k: n for k, n in res.recalibrations.items() if k[0] in status}
    assert per_target and set(per_target.values()) == {1}, per_target  # no sub-network recalibrated twice
    for o in outcomes[:1]:
        manifest = json.loads((res.dist / o["package"] / "manifest.json").read_text())
        figures = manifest["metrics"]["files"]["model.onnx"]
        assert figures["latency_p50_ms"] == o["latency_p50_ms"] and figures["latency_timed_by"].startswith("search")
        # how the rounds went travels with the claim (a 1-thread target: none contended, none counted)
        assert (figures["latency_contended_rounds"], figures["latency_contended_counted"]) == (0, False)
        assert manifest["metrics"]["predicted"]["latency_p50_ms"] == pytest.approx(o["predicted_p50_ms"], rel=1e-5)
    assert not [p for p in res.scratch.iterdir() if p.name.startswith("factory-verify-")]  # picks' folders removed


def test_a_second_specialize_reuses_an_unchanged_target_and_redoes_a_touched_one(specialized: Specialized,
                                                                                  tmp_path: Path):
    """Nothing changed (same supernet, predictor, table, profile, options, code): the shipped target's package is
    reused without a conversion or a BN recalibration, and its report row is the same. A package file that no
    longer matches its manifest is never reused: that target is specialized again."""
    from click.testing import CliRunner

    from factory.cli import cli

    dist = tmp_path / "dist"
    shutil.copytree(specialized.dist, dist)
    before = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    profiles = sorted(specialized.run_dir.parent.glob("*.toml"), key=lambda p: p.name != "roomy.toml")
    args = ["specialize", "--run", str(specialized.run_dir), "--targets", ",".join(map(str, profiles)),
            "--population", "16", "--generations", "4", "--verify-top", "1", "--predictor-samples", "30",
            "--out", str(dist), "--sign-key", str(specialized.keys / "key.pem")]

    def rerun() -> tuple[str, Counter, Counter]:
        with pytest.MonkeyPatch.context() as mp:
            conversions, recalibrations = _count_conversions(mp)
            res = CliRunner().invoke(cli, args)
        return res.output, conversions, recalibrations

    output, conversions, recalibrations = rerun()
    assert "roomy: nothing changed since" in output, output
    assert conversions[("roomy", "onnx")] == 0
    assert not [k for k in recalibrations if k[0] == "roomy"]
    after = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    assert after["roomy"]["status"] == "shipped" and after["roomy"]["package"] == before["roomy"]["package"]
    assert after["roomy"]["test_accuracy"] == before["roomy"]["test_accuracy"]
    assert after["impossible"]["status"] == "infeasible"  # failed targets are never reused: searched again
    from factory.run import load_run
    from factory.ship.specialize import ensure_predictor

    assert ensure_predictor(load_run(specialized.run_dir), 30, lambda _m: None)[1] is True  # "reused" stage note

    model = dist / before["roomy"]["package"] / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    output, conversions, _ = rerun()
    assert "roomy: nothing changed" not in output
    assert conversions[("roomy", "onnx")] == 1
    assert json.loads((dist / "report.json").read_text())[0]["status"] == "shipped"


@pytest.mark.parametrize(("codes", "expected"), [((0, 0), 0), ((0, 3, 3), 3), ((4, 0), 4), ((3, 4), 1),
                                                 ((2,), 2), ((1, 4), 1)])
def test_exit_code_of_several_failures_is_their_common_kind_else_1(codes, expected):
    from factory.errors import combined_exit_code

    assert combined_exit_code(codes) == expected


def test_a_gate_refusal_exits_4_from_specialize(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import factory.ship.specialize as spec
    from factory.cli import cli
    from factory.ship.report import TargetOutcome

    refused = TargetOutcome(target="t", status="failed", message="not published: parity", exit_code=4)
    monkeypatch.setattr(spec, "specialize", lambda *_a, **_k: [refused])
    result = CliRunner().invoke(cli, ["specialize", "--run", str(tmp_path), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 4, result.output
    assert "1 of 1 target(s) not shipped: t (failed)" in result.output


def test_unknown_target_is_a_usage_error(tiny_run: Path, tmp_path: Path):
    res = _factory("specialize", "--run", str(tiny_run), "--targets", "no-such-target", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "no-such-target" in res.stderr and "Traceback" not in res.stderr


def _shipped_package(specialized: Specialized) -> Path:
    outcomes = {o["target"]: o for o in json.loads((specialized.dist / "report.json").read_text())}
    return specialized.dist / outcomes["roomy"]["package"]


def test_tracked_specialization_reads_back_through_mlflow(specialized: Specialized):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{(specialized.run_dir / 'mlflow.db').absolute()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("ofa-factory")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`factory.command` = 'specialize'")
    assert run.info.status == "FINISHED"
    m, p = run.data.metrics, run.data.params
    from factory.predictor.model import load_predictor
    from factory.run import load_run

    fitted = load_run(specialized.run_dir)
    predictor = load_predictor(fitted.path, fitted.space, fitted.checkpoint_sha256)
    assert m["predictor.holdout_spearman"] == pytest.approx(predictor.spearman, abs=1e-4)
    assert m["roomy.shipped"] == 1.0 and m["impossible.shipped"] == 0.0
    report = {o["target"]: o for o in json.loads((specialized.dist / "report.json").read_text())}
    assert m["roomy.latency_p50_ms"] == pytest.approx(report["roomy"]["latency_p50_ms"])
    assert m["roomy.accuracy"] == pytest.approx(report["roomy"]["accuracy"])
    test = report["roomy"]["test_accuracy"]
    assert m["roomy.test_accuracy"] == pytest.approx(test["value"])
    assert (m["roomy.test_accuracy_ci95_low"], m["roomy.test_accuracy_ci95_high"]) == pytest.approx(test["ci95"])
    assert p["search.population"] == "16" and p["supernet_sha256"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/report.json"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "pareto/roomy")
    versions = client.search_model_versions("name = 'roomy'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    shipped = {a.path for a in client.list_artifacts(run.info.run_id, "packages/roomy")}
    assert "packages/roomy/manifest.json" in shipped and "packages/roomy/model.sig" in shipped


def test_signed_package_verifies_and_a_rewritten_manifest_cannot_hide_a_changed_model(specialized, tmp_path):
    from exports.verify import file_record

    package = tmp_path / "pkg"
    shutil.copytree(_shipped_package(specialized), package)
    keys = specialized.keys
    ok = _factory("verify", str(package), "--public-key", str(keys / "key.pub"), "--repeats", "0")
    assert ok.returncode == 0, ok.stderr
    other = _factory("verify", str(package), "--public-key", str(keys / "other.pub"), "--repeats", "0")
    assert other.returncode == 4 and "model.sig" in other.stderr
    blob = bytearray((package / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one byte of the model changed ...
    (package / "model.onnx").write_bytes(bytes(blob))
    manifest = json.loads((package / "manifest.json").read_text())  # ... and its manifest sum rewritten to match
    manifest["files"][0].update(file_record(package, "model.onnx"))
    (package / "manifest.json").write_text(json.dumps(manifest))
    # the manifest's checksums now agree with the changed file: only the signature can tell
    signed = _factory("verify", str(package), "--public-key", str(keys / "key.pub"), "--repeats", "0")
    assert signed.returncode == 4
    assert "model.onnx" in signed.stderr and "changed after signing" in signed.stderr


def test_report_renders_in_a_real_browser(specialized: Specialized, tmp_path):
    """dist/report.html in headless Chromium: the table is there, every image loads, no link is broken."""
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.skip("chromium-driver is not installed (.ci/run installs Debian's chromium + chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        driver.get((specialized.dist / "report.html").absolute().as_uri())
        rows = driver.execute_script("return [...document.querySelectorAll('table tr')].map(r => r.innerText)")
        assert any("roomy" in r and "shipped" in r for r in rows) and any("impossible" in r for r in rows)
        images = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert images, "the report shows no Pareto plot"
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert broken == [], f"images that did not load: {broken}"
        links = driver.execute_script("return [...document.links].map(a => a.href)")
        missing = [h for h in links if h.startswith("file:") and not Path(h[len("file://"):].split("#")[0]).exists()]
        assert missing == [], f"broken links: {missing}"
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()
