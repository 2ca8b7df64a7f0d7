"""Training configuration: dataclasses, TOML in/out, presets, CLI overrides and validation.

A run folder stores its config as config.toml; `--resume` compares the requested config with the
stored one and names the first key that differs (runtime keys such as the device may change).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from factory.errors import UserInputError, parse_text_file

PHASES = ("teacher", "kernel", "depth", "expand")
SAMPLERS = ("uniform", "sandwich")
DEVICES = ("auto", "cpu", "cuda")
PRESET_DIR = Path(__file__).parents[1] / "presets"
# Keys that may differ between the stored config and a `--resume` request (they do not change the math).
RUNTIME_KEYS = frozenset({"runtime.device", "runtime.checkpoint_interval_s", "runtime.progress", "train.eval_every"})
EVAL_EVERY = ("epoch", "phase")


@dataclass(frozen=True)
class DataConfig:
    source: str = "mnist5k"
    on_bad_image: str = "fail"
    split_seed: int = 0
    val_fraction: float = 0.16  # share of each class held out for validation (and predictor measurements)
    test_fraction: float = 0.14  # share held out for reporting only (nothing trains, fits or picks on it)


@dataclass(frozen=True)
class ModelConfig:
    space: str = "small"
    phi: float = 0.0
    sampling: str = "independent"
    dropout: float = 0.1


@dataclass(frozen=True)
class PhaseConfig:
    """One progressive-shrinking phase: its epochs and its own peak learning rate (cosine to ~0)."""

    epochs: int
    lr: float


@dataclass(frozen=True)
class OptimConfig:
    seed: int = 0
    batch_size: int = 64
    steps_per_epoch: int = 0  # 0 = one pass over the train split
    subnets_per_step: int = 2
    sampler: str = "uniform"
    smallest_every: int = 1  # sandwich: the smallest sub-network every k-th step; a random one in its slot between
    label_smoothing: float = 0.1
    kd_ratio: float = 1.0
    kd_temperature: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 3e-5
    warmup_steps: int = 0
    zero_init_residual: bool = True  # last BN gamma of residual blocks starts at 0 (BigNAS): faster start
    augment_shift: int = 2  # random translation (pixels at the stored size); 0 = off
    eval_batch_size: int = 250
    eval_images: int = 0  # val (and calib) images for the per-epoch metrics; 0 = the whole splits
    eval_every: str = "epoch"  # "phase": evaluate the largest/smallest only after each phase's last epoch


@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"
    checkpoint_interval_s: float = 300.0
    progress: bool = True


def _default_phases() -> dict[str, PhaseConfig]:
    return {"teacher": PhaseConfig(4, 0.1), "kernel": PhaseConfig(3, 0.03),
            "depth": PhaseConfig(3, 0.03), "expand": PhaseConfig(3, 0.03)}


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    phases: dict[str, PhaseConfig] = field(default_factory=_default_phases)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """{"train.batch_size": 64, "phases.kernel.lr": 0.03, ...} for comparisons and messages."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out

    def to_toml(self) -> str:
        lines = ["# written by `factory train`; edit a copy and pass it with --config"]
        d = self.to_dict()
        for section in ("data", "model", "train", "runtime"):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
        for name, phase in d["phases"].items():
            lines.append(f"\n[phases.{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in phase.items()]
        return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf") if not math.isnan(v) else "nan"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


# ----- parsing and validation ---------------------------------------------------------------------
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": OptimConfig, "runtime": RuntimeConfig}


def config_from_dict(data: dict[str, Any], origin: str = "config") -> TrainConfig:
    """Build and validate a TrainConfig from parsed TOML; unknown keys and bad values name the key."""
    unknown = sorted(set(data) - {*_SECTIONS, "phases"})
    if unknown:
        raise UserInputError(f"{origin}: unknown section(s) {unknown}; allowed: {sorted([*_SECTIONS, 'phases'])}")
    base = TrainConfig()
    parts: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        raw = data.get(section, {})
        if not isinstance(raw, dict):
            raise UserInputError(f"{origin}: [{section}] must be a table")
        parts[section] = _build(cls, getattr(base, section), raw, f"{origin}: {section}")
    raw_phases = data.get("phases", {})
    if not isinstance(raw_phases, dict):
        raise UserInputError(f"{origin}: [phases] must be a table of {list(PHASES)}")
    bad = sorted(set(raw_phases) - set(PHASES))
    if bad:
        raise UserInputError(f"{origin}: unknown phase(s) {bad}; allowed (in training order): {list(PHASES)}")
    phases = {}
    for name in PHASES:
        raw = raw_phases.get(name, {})
        if not isinstance(raw, dict):
            raise UserInputError(f"{origin}: [phases.{name}] must be a table with epochs and lr")
        phases[name] = _build(PhaseConfig, base.phases[name], raw, f"{origin}: phases.{name}")
    cfg = TrainConfig(phases=phases, **parts)
    validate_config(cfg, origin)
    return cfg


def _build(cls: type, default: Any, raw: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise UserInputError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    values = {}
    for key, value in raw.items():
        expected = type(getattr(default, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise UserInputError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    return replace(default, **values)


def validate_config(cfg: TrainConfig, origin: str = "config") -> None:
    """Range checks that name the key, the bad value and what is allowed."""
    from supernets.space import SPACES

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            raise UserInputError(f"{origin}: {key} = {value!r} is not allowed; {allowed}")

    t, m, r, d = cfg.train, cfg.model, cfg.runtime, cfg.data
    need(d.on_bad_image in ("skip", "fail"), "data.on_bad_image", d.on_bad_image, "allowed: 'skip', 'fail'")
    need(0.02 <= d.val_fraction <= 0.5, "data.val_fraction", d.val_fraction, "must be in [0.02, 0.5]")
    need(0.0 <= d.test_fraction <= 0.4, "data.test_fraction", d.test_fraction,
         "must be in [0, 0.4] (0 = no test split: nothing reports held-out accuracy)")
    need(d.val_fraction + d.test_fraction <= 0.7, "data.test_fraction", d.test_fraction,
         f"val_fraction + test_fraction must leave >= 30% of the images to train (val_fraction = {d.val_fraction})")
    need(m.space in SPACES, "model.space", m.space, f"allowed: {sorted(SPACES)}")
    need(m.sampling in ("independent", "compound"), "model.sampling", m.sampling,
         "allowed: 'independent', 'compound'")
    need(m.phi >= 0, "model.phi", m.phi, "must be >= 0")
    need(0 <= m.dropout < 1, "model.dropout", m.dropout, "must be in [0, 1)")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
    need(t.steps_per_epoch >= 0, "train.steps_per_epoch", t.steps_per_epoch, "must be >= 0 (0 = whole split)")
    need(t.subnets_per_step >= 1, "train.subnets_per_step", t.subnets_per_step, "must be >= 1")
    need(t.sampler in SAMPLERS, "train.sampler", t.sampler, f"allowed: {list(SAMPLERS)}")
    need(t.sampler != "sandwich" or t.subnets_per_step >= 2, "train.subnets_per_step", t.subnets_per_step,
         "the sandwich sampler needs >= 2 (largest + smallest [+ random])")
    need(t.smallest_every >= 1, "train.smallest_every", t.smallest_every, "must be >= 1 (1 = every step)")
    need(0 <= t.label_smoothing < 1, "train.label_smoothing", t.label_smoothing, "must be in [0, 1)")
    need(t.kd_ratio >= 0, "train.kd_ratio", t.kd_ratio, "must be >= 0")
    need(t.kd_temperature > 0, "train.kd_temperature", t.kd_temperature, "must be > 0")
    need(0 <= t.momentum < 1, "train.momentum", t.momentum, "must be in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    need(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
    need(0 <= t.augment_shift <= 8, "train.augment_shift", t.augment_shift, "must be in 0..8 pixels")
    need(t.eval_batch_size >= 1, "train.eval_batch_size", t.eval_batch_size, "must be >= 1")
    need(t.eval_images >= 0, "train.eval_images", t.eval_images, "must be >= 0 (0 = whole validation split)")
    need(t.eval_every in EVAL_EVERY, "train.eval_every", t.eval_every, f"allowed: {list(EVAL_EVERY)}")
    need(r.device in DEVICES, "runtime.device", r.device, f"allowed: {list(DEVICES)}")
    need(r.checkpoint_interval_s > 0, "runtime.checkpoint_interval_s", r.checkpoint_interval_s, "must be > 0")
    for name, p in cfg.phases.items():
        need(p.epochs >= 0, f"phases.{name}.epochs", p.epochs, "must be >= 0")
        need(p.lr > 0 and math.isfinite(p.lr), f"phases.{name}.lr", p.lr, "must be a finite number > 0")
    need(sum(p.epochs for p in cfg.phases.values()) >= 1, "phases.*.epochs", 0, "at least one epoch in total")


def load_config_file(path: str | Path) -> TrainConfig:
    data = parse_text_file(Path(path), tomllib.loads, "TOML", "no such config file")
    return config_from_dict(data, origin=str(path))


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_preset(name: str) -> TrainConfig:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise UserInputError(f"preset: unknown name {name!r}; allowed: {preset_names()}")
    return load_config_file(path)


@dataclass(frozen=True)
class Overrides:
    """CLI options that override the config (None = keep the config's value)."""

    data: str | None = None
    epochs_per_phase: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str | None = None
    sampler: str | None = None
    on_bad_image: str | None = None
    checkpoint_interval_s: float | None = None


def apply_overrides(cfg: TrainConfig, ov: Overrides) -> TrainConfig:
    data, train, runtime, phases = cfg.data, cfg.train, cfg.runtime, dict(cfg.phases)
    if ov.data is not None:
        data = replace(data, source=ov.data)
    if ov.on_bad_image is not None:
        data = replace(data, on_bad_image=ov.on_bad_image)
    if ov.epochs_per_phase is not None:
        phases = {k: replace(p, epochs=ov.epochs_per_phase) for k, p in phases.items()}
    for key in ("steps_per_epoch", "batch_size", "seed", "sampler"):
        value = getattr(ov, key)
        if value is not None:
            train = replace(train, **{key: value})
    if ov.device is not None:
        runtime = replace(runtime, device=ov.device)
    if ov.checkpoint_interval_s is not None:
        runtime = replace(runtime, checkpoint_interval_s=ov.checkpoint_interval_s)
    out = replace(cfg, data=data, train=train, runtime=runtime, phases=phases)
    validate_config(out, "command line")
    return out


def first_incompatible_key(stored: TrainConfig, requested: TrainConfig) -> tuple[str, Any, Any] | None:
    """(key, stored value, requested value) of the first non-runtime difference, or None."""
    a, b = stored.flat(), requested.flat()
    for key in sorted(set(a) | set(b)):
        if key in RUNTIME_KEYS:
            continue
        if a.get(key) != b.get(key):
            return key, a.get(key), b.get(key)
    return None
