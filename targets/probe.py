"""Probe bundles: the sampled sub-networks of a target, exported in its format, plus a runner.

A bundle is what a device needs to measure itself:

    bundle/
      manifest.json   # target settings, space, num_classes, one entry per model: id, file, arch, size_bytes
      runner.py       # calls exports.timing.main: needs only numpy + the runtime
      exports/        # __init__.py, runtime.py, timing.py copied verbatim: the sessions and timing used here
      models/m000/model.onnx | model.tflite | openvino/model.xml+bin
      README.txt

`python runner.py` on the device writes RESULTS.json; `factory targets import NAME RESULTS.json
--run RUN` fits the table from it (`import_results`). `factory targets measure` does the same three
steps on this machine (write a bundle to a temp folder, run it in-process, fit), so local and remote
tables come from the same models, the same timing code and the same fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import exports
from exports.progress import progress_bar
from exports.timing import usable_cores
from supernets.arch import ArchConfig
from supernets.space import SearchSpace
from targets.profile import TargetProfile
from targets.size import exported_size_bytes
from targets.table import (
    LatencyTable,
    LatencyTableError,
    Measurement,
    fit_table,
    recorded_space_value,
    space_settings,
)

MANIFEST_SCHEMA = 1
# Probe models per runtime: enough for the ~15-coefficient fit, few enough for the conversion and timing
# cost (ONNX ~0.3 s, OpenVINO ~0.4 s, TFLite ~1.5 s per model here; ONNX's 2-thread timing is the costly
# part). ONNX Runtime 40 (was 80, then 48): refitted on the first 40 of 80, the other 40 were all within
# 10% (Spearman 0.963; 0.954 from 48), see docs/decisions.md.
DEFAULT_SAMPLES = {"onnxruntime": 40, "openvino": 40, "tflite": 32}
CALIBRATION_IMAGES = 8
ONNX_BASED = ("onnx", "openvino")  # formats whose exporter starts from an fp32 ONNX export
# What a device needs of this project to time a bundle: import-cheap modules (numpy + stdlib at import).
BUNDLE_MODULES = ("__init__.py", "runtime.py", "timing.py")
RUNNER = '''"""Latency probe runner: times the models of this bundle, writes RESULTS.json. Needs numpy + the runtime.

    python runner.py                 # reads manifest.json next to it, writes RESULTS.json
    python runner.py --rounds 9 --repeats 100 --out /tmp/RESULTS.json
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bundle's own exports/ package, whatever else is installed

from exports.timing import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_bundle=HERE))
'''


def sample_archs(space: SearchSpace, count: int, seed: int = 0) -> list[ArchConfig]:
    """`count` distinct canonical sub-networks: the smallest, the largest, then uniform random ones.

    The extremes anchor the fit at both ends of the latency range; random samples cover the rest.
    """
    if count < 2:
        raise ValueError(f"samples: {count} is too few; need >= 2")
    rng = random.Random(seed)
    archs = [space.canonical(space.smallest()), space.canonical(space.largest())]
    seen = set(archs)
    while len(archs) < count:
        arch = space.canonical(space.sample(rng))
        if arch not in seen:
            seen.add(arch)
            archs.append(arch)
    return archs


@contextmanager
def _seeded_torch(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside the block only (Supernet init draws from it)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_batch(profile: TargetProfile) -> None:
    if profile.batch != 1:
        raise ValueError(f"{profile.name}: batch = {profile.batch} cannot be measured yet; exported models take "
                         f"batch 1 (set batch = 1)")


@dataclass(frozen=True)
class ProbeJob:
    """What converting probe models needs: the random-init supernet is rebuilt from (space, num_classes,
    seed), so a worker process receives architectures and calibration images, not pickled networks (the
    48 ONNX probe models of a table were ~350 MB to save and load)."""

    format: str
    precision: str
    space: SearchSpace
    num_classes: int
    seed: int
    items: list[tuple[ArchConfig, Path, np.ndarray | None]]  # (arch, output folder, int8 calibration)
    onnx_cache: Path | None = None  # see fp32_onnx_path

    def fp32_onnx_path(self, arch: ArchConfig) -> Path | None:
        """Where `onnx_cache` keeps the fp32 ONNX export of `arch` (None: no cache, or a format that does
        not start from ONNX). Two tables of one run whose targets both start from ONNX (OpenVINO, ONNX
        Runtime) sample the same sub-networks of the same random-init supernet: the second reuses the
        first's exports (the key is the space, classes, seed and arch: the same key, the same network)."""
        if self.onnx_cache is None or self.format not in ONNX_BASED:
            return None
        what = json.dumps([repr(self.space), self.num_classes, self.seed, arch.to_dict()], sort_keys=True)
        return self.onnx_cache / f"{hashlib.sha256(what.encode()).hexdigest()[:32]}.onnx"

    @property
    def all_cached(self) -> bool:
        return all((path := self.fp32_onnx_path(arch)) is not None and path.is_file() for arch, _, _ in self.items)


def export_models(profile: TargetProfile, space: SearchSpace, num_classes: int, archs: list[ArchConfig],
                  out_dir: Path, *, seed: int = 0, progress: bool = True, desc: str = "export",
                  jobs: int | None = None, onnx_cache: Path | None = None) -> list[Path]:
    """Export each sub-network of a randomly initialised supernet in the target's format/precision.

    Latency and file size depend on the architecture, not on trained weights; int8 calibration
    uses random normal images (fine for timing: the quantized graph is the same). Conversions run in
    `jobs` processes (default: one per core, at most 2, for 8+ models; this one and workers): a TFLite int8
    conversion is ~1.5 s of mostly single-threaded converter work, so two at once nearly halve a table's
    export time on a 2-core machine. Nothing is timed while they run. `onnx_cache`: a folder where fp32
    ONNX exports are kept for the next ONNX-based table (ProbeJob.fp32_onnx_path); when every one is
    there already, the rest of the conversion is light and runs here.
    """
    _check_batch(profile)
    rng = np.random.default_rng(seed)
    items = []
    for i, arch in enumerate(archs):
        calib = None
        if profile.precision == "int8":
            calib = rng.standard_normal((CALIBRATION_IMAGES, space.spec.in_channels, arch.resolution,
                                         arch.resolution)).astype(np.float32)
        items.append((arch, out_dir / f"m{i:03d}", calib))
    job = ProbeJob(profile.format, profile.precision, space, num_classes, seed, items, onnx_cache)
    if jobs is None:
        jobs = 1 if job.all_cached else _export_jobs(len(items))
    jobs = max(1, jobs)
    bar = progress_bar(total=len(items), desc=f"{desc} {profile.name} ({profile.format} {profile.precision})",
                       enabled=progress, unit="model")
    with bar:
        if jobs == 1:
            return convert_probes(job, lambda _path: bar.update(1))
        return _convert_in_workers(job, jobs, bar.update)


def convert_probes(job: ProbeJob, done: Callable[[Path], None] | None = None) -> list[Path]:
    """Convert `job`'s models here, on one torch thread (restored after), calling `done` with each file."""
    import torch

    from exports.convert import ExportSpec, convert, input_channels
    from exports.onnx import export_fp32
    from supernets.supernet import Supernet

    with _seeded_torch(job.seed):
        net = Supernet(job.space, job.num_classes).eval()
    torch_threads = torch.get_num_threads()
    paths = []
    try:
        torch.set_num_threads(1)
        for arch, out, calib in job.items:
            model = net.extract(arch).eval()
            fp32 = job.fp32_onnx_path(arch)
            if fp32 is not None and not fp32.is_file():
                partial = fp32.with_name(f".{fp32.name}.{os.getpid()}.part")
                export_fp32(model, partial, ExportSpec(resolution=arch.resolution, in_channels=input_channels(model)))
                partial.replace(fp32)  # whole or absent, whichever worker reads it
            paths.append(convert(model, job.format, job.precision, out, resolution=arch.resolution,
                                 calibration=calib, onnx_fp32=fp32))
            if done is not None:
                done(paths[-1])
    finally:
        torch.set_num_threads(torch_threads)
    return paths


def _export_jobs(n_models: int) -> int:
    return max(1, min(2, usable_cores())) if n_models >= 8 else 1


def _convert_in_workers(job: ProbeJob, jobs: int, done: Any) -> list[Path]:
    """Convert `job` in `jobs` round-robin shares: the first here, the others meanwhile in fresh `python -m
    targets.export_worker` processes. Here, because this process needs the converter anyway (the pick
    converts its candidates next), so the share saves a worker's imports (torch + TensorFlow: ~5-7 s).

    Subprocesses rather than multiprocessing: spawn re-imports the caller's main module, which breaks
    any script without a `__main__` guard; fork would copy torch's thread pools. Each worker prints one
    line per finished model (the progress bar) and exits non-zero with its error on stderr."""
    import subprocess
    import sys
    import tempfile
    import threading

    import torch

    shares = [list(range(j, len(job.items), jobs)) for j in range(jobs)]
    paths: list[Path | None] = [None] * len(job.items)
    with tempfile.TemporaryDirectory(prefix="factory-export-jobs-") as tmp:
        procs = []
        for j, idx in enumerate(shares[1:], 1):
            job_file = Path(tmp) / f"job{j}.pt"
            torch.save(replace(job, items=[job.items[i] for i in idx]), job_file)
            proc = subprocess.Popen([sys.executable, "-m", "targets.export_worker", str(job_file)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append((idx, proc))
        errors: dict[int, str] = {}

        def follow(j: int, idx: list[int], proc: subprocess.Popen) -> None:
            assert proc.stdout is not None and proc.stderr is not None
            for k, line in enumerate(proc.stdout):
                paths[idx[k]] = Path(line.rstrip("\n"))
                done(1)
            err = proc.stderr.read()
            if proc.wait() != 0:
                errors[j] = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"

        threads = [threading.Thread(target=follow, args=(j, idx, p)) for j, (idx, p) in enumerate(procs)]
        for t in threads:
            t.start()
        try:
            here = convert_probes(replace(job, items=[job.items[i] for i in shares[0]]), lambda _path: done(1))
            for i, path in zip(shares[0], here, strict=True):
                paths[i] = path
        except BaseException:
            for _, proc in procs:  # no worker outlives a failure here
                proc.kill()
            raise
        finally:
            for t in threads:
                t.join()
    if errors or any(p is None for p in paths):
        raise RuntimeError(f"export worker failed: {'; '.join(errors.values()) or 'missing outputs'}")
    return [p for p in paths if p is not None]


def write_probe_bundle(profile: TargetProfile, space: SearchSpace, num_classes: int, out_dir: Path, *,
                       samples: int | None = None, seed: int = 0, progress: bool = True,
                       onnx_cache: Path | None = None) -> Path:
    """Write a self-contained probe bundle for `profile` into `out_dir`; returns the manifest path.
    `onnx_cache`: see export_models."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"--out: {out_dir} exists and is not empty; give a new folder")
    archs = sample_archs(space, samples or profile.latency_samples or DEFAULT_SAMPLES[profile.runtime], seed)
    paths = export_models(profile, space, num_classes, archs, out_dir / "models", seed=seed, progress=progress,
                          onnx_cache=onnx_cache)
    models = [{"id": i, "file": str(p.relative_to(out_dir)), "arch": a.to_dict(), "size_bytes": exported_size_bytes(p)}
              for i, (a, p) in enumerate(zip(archs, paths, strict=True))]
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "target": profile.name,
        "runtime": profile.runtime,
        "format": profile.format,
        "precision": profile.precision,
        "threads": profile.threads,
        "batch": profile.batch,
        "space": {**space_settings(space), "sampling": space.sampling},
        "num_classes": num_classes,
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": models,
    }
    _write_runner(out_dir)
    (out_dir / "README.txt").write_text(
        f"Latency probe for target {profile.name!r} ({profile.runtime}, {profile.precision}, "
        f"{profile.threads} thread(s)).\n\nOn the device, with Python 3, numpy and {profile.runtime} installed:\n"
        f"    python runner.py            # writes RESULTS.json next to it (a few minutes)\n"
        f"Then, back on the machine with the run:\n"
        f"    factory targets import {profile.name} RESULTS.json --run RUN\n"
        f"Keep the device otherwise idle while it runs.\n")
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def _write_runner(out_dir: Path) -> None:
    """runner.py + a verbatim copy of the exports modules it runs: the timing code used on this machine."""
    (out_dir / "exports").mkdir()
    for name in BUNDLE_MODULES:
        shutil.copyfile(Path(exports.__file__).with_name(name), out_dir / "exports" / name)
    (out_dir / "runner.py").write_text(RUNNER)


def _check_results(profile: TargetProfile, results: dict[str, Any], origin: str) -> None:
    for key in ("target", "runtime", "precision", "threads"):
        want = profile.name if key == "target" else getattr(profile, key)
        if results.get(key) != want:
            raise LatencyTableError(f"{origin}: {key} is {results.get(key)!r} but target {profile.name!r} "
                                    f"needs {want!r}; run the bundle made by `factory targets probe {profile.name}`")


def import_results(profile: TargetProfile, results_path: Path, space: SearchSpace, num_classes: int) -> LatencyTable:
    """Fit a latency table from a device's RESULTS.json (written by the bundle's runner)."""
    results_path = Path(results_path)
    try:
        results = json.loads(results_path.read_text())
        manifest = results["manifest"]
        timings = {int(m["id"]): (float(m["p50_ms"]), float(m["p95_ms"])) for m in results["models"]}
    except FileNotFoundError:
        raise LatencyTableError(f"{results_path}: no such results file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LatencyTableError(f"{results_path}: not a runner RESULTS.json ({type(exc).__name__}: {exc})") from None
    _check_results(profile, results, str(results_path))
    run_space = space_settings(space)
    bundle_space = {k: recorded_space_value(manifest["space"], k) for k in run_space}
    if bundle_space != run_space or int(manifest["num_classes"]) != num_classes:
        raise LatencyTableError(f"{results_path}: measured for space {bundle_space} with {manifest['num_classes']} "
                                f"classes, but the run has space {run_space} with {num_classes} classes")
    measurements = [Measurement(ArchConfig.from_dict(m["arch"]), *timings[int(m["id"])], int(m["size_bytes"]))
                    for m in manifest["models"]]
    device = results["device"]
    machine = {"cpu_model": device["cpu_model"], "runtime_version": device["runtime_version"],
               "python": device.get("python"), "machine": device.get("machine")}
    method = {"kind": "end-to-end fit", "source": "import", "results_file": str(results_path),
              "samples": len(measurements), "timing": results.get("timing", {}),
              "description": "sampled sub-networks timed end to end on the device; per-block entries from a "
                             "non-negative relative-error least-squares fit over per-block features"}
    return fit_table(space, num_classes, profile, measurements, machine=machine, date=results["date"], method=method)
