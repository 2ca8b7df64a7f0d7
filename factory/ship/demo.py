"""`factory demo`: train (or reuse) the demo supernet, then specialize every built-in target (which fits the
accuracy predictor first when the run has none)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from factory.ship.report import TargetOutcome


def ensure_trained(run_dir: Path, say: Callable[[str], None], track_uri: str | None = None,
                   meanwhile: Callable[[], None] | None = None) -> str:
    """Train the demo preset on mnist5k; reuse a finished run, resume an interrupted one.

    Training runs in its own `factory train` process, as a user would run it (and so an interrupted
    demo resumes from the checkpoint). `meanwhile` runs here while it starts. Returns what happened:
    "reused", "resumed" or "trained"."""
    import subprocess
    import sys

    from factory.errors import FactoryError

    if (run_dir / "supernet.pt").is_file():
        say(f"reusing the trained supernet in {run_dir} (pass --retrain to train again)")
        return "reused"
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    say(("resuming" if resume else "training") + f" the demo supernet on mnist5k into {run_dir}")
    args = ["--out", str(run_dir), "--resume"] if resume else [
        "--data", "mnist5k", "--preset", "demo", "--out", str(run_dir)]
    if track_uri is not None:
        args += ["--track", track_uri]
    proc = subprocess.Popen([sys.executable, "-m", "factory", "train", *args])
    try:
        if meanwhile is not None:
            meanwhile()
        code = proc.wait()
    except BaseException:  # an interrupt reaches both processes; never leave the training behind
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise FactoryError(f"training the demo supernet failed (exit code {code}); rerun `factory demo` "
                           f"to resume from the last checkpoint in {run_dir}")
    return "resumed" if resume else "trained"


def _import_specialization(tracking: bool) -> None:
    """What the stages after training import (~5 s of one core: torch, scipy, MLflow's SQL store). A
    starting training process spends its first seconds on one core (its own imports, the data), so this
    runs then, on the other one."""
    import factory.predictor.fit
    import factory.run  # noqa: F401

    if tracking:
        with contextlib.suppress(ImportError):  # no MLflow: the tracker says so, later, as usual
            import mlflow.store.tracking.sqlalchemy_store
            import mlflow.tracking  # noqa: F401


def run_demo(run_dir: Path, out: Path, samples: int = 450, population: int = 100, generations: int = 100,
             seed: int = 0, say: Callable[[str], None] = print, track: str | None = None,
             sign_key: Path | None = None) -> list[TargetOutcome]:
    """Train (or reuse), then specialize every built-in target. `track`: MLflow tracking (factory.tracking):
    the training and the specialization each get a run in the same store."""
    from factory.ship.specialize import SpecializeOptions, specialize
    from factory.ship.stages import StageTimes
    from factory.tracking import tracked, tracking_uri

    times = StageTimes()
    start = time.perf_counter()
    how = ensure_trained(run_dir, say, None if track is None else tracking_uri(track, run_dir),
                         meanwhile=lambda: _import_specialization(track is not None))
    times.add("training", time.perf_counter() - start, how)
    options = SpecializeOptions(population=population, generations=generations, seed=seed, predictor_samples=samples,
                                sign_key=sign_key)
    with tracked(track, run_dir, "demo") as tracker:
        outcomes = specialize(run_dir, "all", out, options, say=say, tracker=tracker, times=times)
    say("where the time went (wall seconds):\n" + times.table())
    times.save(out)
    say(f"packages: {out}/<target>/<package>/ ; report: {out / 'report.md'} and {out / 'report.html'}; "
        f"stage times: {out / 'timings.json'}")
    return outcomes
