"""`factory demo`: train (or reuse) the demo supernet, fit the predictor, specialize every built-in target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from factory.ship.report import TargetOutcome


def ensure_trained(run_dir: Path, say: Callable[[str], None]) -> None:
    """Train the demo preset on mnist5k; reuse a finished run, resume an interrupted one.

    Training runs in its own `factory train` process, as a user would run it (and so an interrupted
    demo resumes from the checkpoint). The demo's once-slow server-onnx timings were not caused by
    this process's history: a fresh process timed the same file 2x slow in the same seconds (host
    contention of the 2 vCPUs); see targets.device_runner for how timing sets such rounds aside."""
    import subprocess
    import sys

    from factory.errors import FactoryError

    if (run_dir / "supernet.pt").is_file():
        say(f"reusing the trained supernet in {run_dir} (pass --retrain to train again)")
        return
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    say(("resuming" if resume else "training") + f" the demo supernet on mnist5k into {run_dir}")
    args = ["--out", str(run_dir), "--resume"] if resume else [
        "--data", "mnist5k", "--preset", "demo", "--out", str(run_dir)]
    proc = subprocess.run([sys.executable, "-m", "factory", "train", *args], check=False)
    if proc.returncode != 0:
        raise FactoryError(f"training the demo supernet failed (exit code {proc.returncode}); rerun `factory demo` "
                           f"to resume from the last checkpoint in {run_dir}")


def ensure_predictor(run_dir: Path, samples: int, say: Callable[[str], None]) -> None:
    from factory.predictor.model import fit_predictor, load_predictor
    from factory.run import load_run

    run = load_run(run_dir)
    if load_predictor(run.path, run.space, run.checkpoint_sha256) is not None:
        say(f"reusing the accuracy predictor in {run_dir}")
        return
    holdout = min(50, max(10, samples // 4))
    say(f"fitting the accuracy predictor on {samples} measured sub-networks ({holdout} held out) "
        f"and the uniformly scaled ones")
    report = fit_predictor(run_dir, samples=samples, holdout=holdout)
    say(f"predictor: held-out Spearman {report.holdout_spearman:.3f} on {report.holdout} random sub-networks "
        f"(MACs alone {report.macs_spearman:.3f}); {report.samples} measured in {report.measure_seconds:.0f} s")


def run_demo(run_dir: Path, out: Path, samples: int = 450, population: int = 100, generations: int = 100,
             seed: int = 0, say: Callable[[str], None] = print) -> list[TargetOutcome]:
    from factory.ship.specialize import SpecializeOptions, specialize

    ensure_trained(run_dir, say)
    ensure_predictor(run_dir, samples, say)
    options = SpecializeOptions(population=population, generations=generations, seed=seed)
    outcomes = specialize(run_dir, "all", out, options, say=say)
    say(f"packages: {out}/<target>/<package>/ ; report: {out / 'report.md'} and {out / 'report.html'}")
    return outcomes
