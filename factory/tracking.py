"""Experiment tracking with MLflow (`--track [URI]`): one MLflow run per factory command.

Default store: local files inside the run folder, no server: RUN/mlflow.db (SQLite: MLflow 3 retired
its plain-file store) and RUN/mlartifacts; `mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`
browses it. `--track URI` for a team's tracking server. MLflow is an optional
extra (`pip install 'ofa-factory[track]'`); without `--track` it is never imported, and every command
works unchanged. Only MLflow's public client (`MlflowClient`) is used: no global active run, so a
command run in-process (tests, notebooks) leaves no state behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from factory.errors import UserInputError

EXPERIMENT = "ofa-factory"
LOCAL = "local"  # --track without a URI


class NullTracker:
    """Tracking off: every call is a no-op."""

    enabled = False
    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def register_package(self, name: str, package: Path) -> str | None: ...


def tracking_uri(track: str, run_dir: Path) -> str:
    """`--track` (no value) -> RUN/mlflow.db (SQLite); anything else is MLflow's own URI."""
    return f"sqlite:///{Path(run_dir).absolute() / 'mlflow.db'}" if track == LOCAL else track


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go next to it (MLflow's default would be ./mlartifacts of the
    current directory); a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params ("train.lr": "0.01"); lists as JSON; values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            out[name] = text[:6000]
    return out


class MlflowTracker:
    """One MLflow run, written through `MlflowClient` (see module docstring)."""

    enabled = True

    def __init__(self, uri: str, run_name: str, tags: Mapping[str, Any]) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserInputError("--track needs MLflow, an optional extra: pip install 'ofa-factory[track]' "
                                 "(make demo / make test install it)") from None
        from mlflow.exceptions import MlflowException

        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
        except MlflowException as exc:  # e.g. a plain folder: MLflow 3 refuses its retired file store
            first = str(exc).split(". ")[0]
            raise UserInputError(f"--track {uri}: MLflow cannot use this tracking store ({first}). Give --track "
                                 f"alone (a SQLite store in the run folder), a database URI such as "
                                 f"sqlite:////path/mlflow.db, or a server such as http://host:5000") from None
        experiment_id = (experiment.experiment_id if experiment else
                         self.client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri)))
        self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                             tags={k: str(v) for k, v in tags.items()}).info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and v == v]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path=folder)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def register_package(self, name: str, package: Path) -> str | None:
        """Log the package folder as an artifact and register it as a new version of model `name`; the
        version number, or None where the store has no model registry (said in a tag)."""
        folder = f"packages/{name}"
        self.log_artifact(package, folder)
        try:
            from mlflow.exceptions import MlflowException

            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(name)
            source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{folder}"
            version = self.client.create_model_version(name, source, run_id=self.run_id)
            return str(version.version)
        except Exception as exc:  # a store without a registry: the package is still logged as an artifact
            self.set_tags({f"registry.{name}": f"not registered: {type(exc).__name__}: {str(exc)[:200]}"})
            return None

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


@contextmanager
def tracked(track: str | None, run_dir: Path, command: str, tags: Mapping[str, Any] | None = None
            ) -> Iterator[NullTracker | MlflowTracker]:
    """A tracker for one command: NullTracker when `track` is None; else an MLflow run named after the
    command, FINISHED on success and FAILED on any exception (which propagates)."""
    if track is None:
        yield NullTracker()
        return
    tracker = MlflowTracker(tracking_uri(track, run_dir), f"{command} {Path(run_dir).name}",
                            {"factory.command": command, "factory.run": str(Path(run_dir).absolute()),
                             **(tags or {})})
    try:
        yield tracker
    except BaseException:
        tracker.finish(failed=True)
        raise
    tracker.finish(failed=False)


Tracker = NullTracker | MlflowTracker


def log_predictor_fit(tracker: Tracker, report: Mapping[str, Any]) -> None:
    """The accuracy predictor's fit: held-out Spearman, MACs baseline, error, samples, as `predictor.*`."""
    tracker.log_metrics({f"predictor.{k}": v for k, v in report.items()})


def log_target(tracker: Tracker, outcome: Any, out_dir: Path) -> None:
    """One target of a specialization: its status, pick and measured figures (`<target>.*`), its Pareto
    plot, and its package registered as a model version named after the target."""
    name = outcome.target
    tracker.log_metrics({f"{name}.{k}": getattr(outcome, k) for k in
                         ("accuracy", "latency_p50_ms", "latency_p95_ms", "predicted_p50_ms", "size_mb", "macs",
                          "seconds")} | {f"{name}.shipped": float(outcome.status == "shipped")}
                        | _test_metrics(name, getattr(outcome, "test_accuracy", None)))
    tracker.set_tags({f"{name}.status": outcome.status, f"{name}.arch": json.dumps(outcome.arch)})
    if outcome.pareto_png:
        tracker.log_artifact(Path(out_dir) / outcome.pareto_png, f"pareto/{name}")
    if outcome.status == "shipped" and outcome.package:
        version = tracker.register_package(name, Path(out_dir) / outcome.package)
        if version is not None:
            tracker.set_tags({f"{name}.model_version": version})


def _test_metrics(name: str, test: dict[str, Any] | None) -> dict[str, float]:
    """Test-split accuracy with its 95% interval bounds (`accuracy` is the validation split's)."""
    if not test:
        return {}
    return {f"{name}.test_accuracy": test["value"], f"{name}.test_accuracy_ci95_low": test["ci95"][0],
            f"{name}.test_accuracy_ci95_high": test["ci95"][1]}


def log_report(tracker: Tracker, out_dir: Path) -> None:
    for name in ("report.md", "report.html", "report.json"):
        tracker.log_artifact(Path(out_dir) / name, "report")
