"""Target profiles: a device + runtime + precision with hard budgets, read from TOML.

A profile is data (one TOML file), validated here in one place. Every error names the file, the
key, the bad value and what is allowed, so `factory targets validate FILE` can print it as is.

    name = "phone-int8"
    description = "..."
    runtime = "tflite"          # onnxruntime | openvino | tflite
    precision = "int8"          # fp32 | fp16 | int8
    threads = 1                 # >= 1
    batch = 1                   # >= 1
    space = "small"             # optional: the space the budgets are sized for (`--targets all` on a run
                                # of another space skips it); omitted = any
    [constraints]               # every budget optional, > 0; min_accuracy in (0, 1]
    latency_p50_ms = 0.5
    latency_p95_ms = 0.8
    size_mb = 2.0               # exported file, 1 MB = 1e6 bytes
    peak_memory_mb = 4.0
    min_accuracy = 0.9
    [latency]
    source = "measure"          # measure (on this machine) | import (table measured on the device)
    table = "rpi4.json"         # optional: a table file, relative to the profile file
    samples = 64                # optional: probe models timed to fit the table (default per runtime)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import exports
from exports.budgets import BUDGET_NAMES, Constraints

Runtime = Literal["onnxruntime", "openvino", "tflite"]  # type hints only: the values come from exports
Precision = Literal["fp32", "fp16", "int8"]
LatencySource = Literal["measure", "import"]

RUNTIMES: tuple[str, ...] = tuple(exports.RUNTIMES)  # derived from exports.FORMATS, as `format` is
PRECISIONS: tuple[str, ...] = exports.PRECISIONS
LATENCY_SOURCES: tuple[str, ...] = ("measure", "import")

_TOP_KEYS = ("name", "description", "runtime", "precision", "threads", "batch", "space", "constraints", "latency")
_REQUIRED = ("name", "runtime", "precision")
_CONSTRAINT_KEYS = BUDGET_NAMES
_LATENCY_KEYS = ("source", "table", "samples")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class ProfileError(ValueError):
    """A malformed profile. The message names the file, the key, the bad value and what is allowed."""


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target. `latency_table` is an absolute path (resolved against the profile file)."""

    name: str
    runtime: Runtime
    precision: Precision
    description: str = ""
    threads: int = 1
    batch: int = 1
    constraints: Constraints = field(default_factory=Constraints)
    latency_source: LatencySource = "measure"
    latency_table: Path | None = None
    latency_samples: int | None = None  # probe models for the table; None = the runtime's default
    source_file: Path | None = None
    space: str | None = None  # the search space its budgets are sized for; None = any

    def suits(self, space_name: str) -> bool:
        return self.space is None or self.space == space_name

    @property
    def format(self) -> str:
        """The export format this target's runtime loads: 'onnx' | 'openvino' | 'tflite'."""
        return exports.runtime_format(self.runtime)

    @property
    def measurable_here(self) -> bool:
        """True when the latency table is measured on this machine (not imported from a device)."""
        return self.latency_source == "measure"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "runtime": self.runtime,
            "format": self.format,
            "precision": self.precision,
            "threads": self.threads,
            "batch": self.batch,
            "space": self.space,
            "constraints": self.constraints.to_dict(),
            "latency": {"source": self.latency_source,
                        **({"table": str(self.latency_table)} if self.latency_table else {}),
                        **({"samples": self.latency_samples} if self.latency_samples else {})},
            "file": str(self.source_file) if self.source_file else None,
        }


def _where(origin: str, key: str) -> str:
    return f"{origin}: {key}"


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], origin: str, prefix: str = "") -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        key = unknown[0]
        section = f" in [{prefix.rstrip('.')}]" if prefix else ""
        raise ProfileError(f"{_where(origin, prefix + key)}: unknown key (value {data[key]!r}); "
                           f"allowed keys{section}: {', '.join(allowed)}")


def _string(data: dict[str, Any], key: str, origin: str, allowed: tuple[str, ...] | None = None,
            default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise ProfileError(f"{_where(origin, key)}: missing (required)"
                           + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if not isinstance(value, str):
        raise ProfileError(f"{_where(origin, key)}: {value!r} is a {type(value).__name__}, expected a string"
                           + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if allowed is not None and value not in allowed:
        raise ProfileError(f"{_where(origin, key)}: {value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _positive_int(data: dict[str, Any], key: str, origin: str, prefix: str = "", minimum: int = 1) -> int:
    value = data.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProfileError(f"{_where(origin, prefix + key)}: {value!r} is not allowed; expected an integer "
                           f">= {minimum}")
    return value


def _budget(data: dict[str, Any], key: str, origin: str) -> float | None:
    value = data.get(key)
    full = f"constraints.{key}"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{_where(origin, full)}: {value!r} is a {type(value).__name__}, expected a number > 0")
    if key == "min_accuracy":
        if not 0 < value <= 1:
            raise ProfileError(f"{_where(origin, full)}: {value!r} is not allowed; expected a fraction in (0, 1] "
                               f"(e.g. 0.9 for 90%)")
    elif not value > 0:
        raise ProfileError(f"{_where(origin, full)}: {value!r} is not allowed; expected a number > 0")
    return float(value)


def _table(data: dict[str, Any], key: str, origin: str, base: Path | None) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{_where(origin, 'latency.' + key)}: {value!r} is not allowed; expected a file path string")
    path = Path(value)
    return path if path.is_absolute() or base is None else (base / path)


def parse_profile(data: dict[str, Any], origin: str = "<profile>", base_dir: Path | None = None) -> TargetProfile:
    """Validate parsed TOML `data`; `origin` (usually the file) prefixes every error message."""
    if not isinstance(data, dict):
        raise ProfileError(f"{origin}: expected a TOML table, got {type(data).__name__}")
    _check_keys(data, _TOP_KEYS, origin)
    name = _string(data, "name", origin)
    if not name or not set(name) <= _NAME_CHARS:
        raise ProfileError(f"{_where(origin, 'name')}: {name!r} is not allowed; use lower-case letters, digits, "
                           f"'-', '_' and '.' (it names files and folders)")
    description = _string(data, "description", origin, default="")
    runtime = _string(data, "runtime", origin, RUNTIMES)
    precision = _string(data, "precision", origin, PRECISIONS)
    threads = _positive_int(data, "threads", origin)
    batch = _positive_int(data, "batch", origin)
    space = _string(data, "space", origin, _space_names(), default=None) if "space" in data else None
    for section in ("constraints", "latency"):
        if section in data and not isinstance(data[section], dict):
            raise ProfileError(f"{_where(origin, section)}: {data[section]!r} is not allowed; expected a table "
                               f"[{section}]")
    cons = data.get("constraints", {})
    _check_keys(cons, _CONSTRAINT_KEYS, origin, "constraints.")
    constraints = Constraints(**{k: _budget(cons, k, origin) for k in _CONSTRAINT_KEYS})
    lat = data.get("latency", {})
    _check_keys(lat, _LATENCY_KEYS, origin, "latency.")
    source = _string(lat, "source", origin, LATENCY_SOURCES, default="measure")
    table = _table(lat, "table", origin, base_dir)
    samples = _positive_int(lat, "samples", origin, prefix="latency.", minimum=20) if "samples" in lat else None
    return TargetProfile(name=name, description=description, runtime=runtime, precision=precision,  # type: ignore[arg-type]
                         threads=threads, batch=batch, constraints=constraints,
                         latency_source=source, latency_table=table, latency_samples=samples,
                         space=space)  # type: ignore[arg-type]


def _space_names() -> tuple[str, ...]:
    from supernets.space import SPACES

    return tuple(sorted(SPACES))


def load_profile(path: str | Path) -> TargetProfile:
    """Read and validate one profile file. ProfileError names the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile file") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML ({exc})") from None
    return replace(parse_profile(data, str(path), path.parent), source_file=path)


def builtin_profiles() -> dict[str, TargetProfile]:
    """The profiles shipped as package data (targets/profiles/*.toml), by name."""
    folder = resources.files("targets") / "profiles"
    profiles: dict[str, TargetProfile] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            profile = load_profile(Path(str(entry)))
            profiles[profile.name] = profile
    return profiles


def get_profile(name_or_path: str | Path) -> TargetProfile:
    """A built-in profile by name, or a profile file by path (anything ending in .toml or existing)."""
    text = str(name_or_path)
    if text.endswith(".toml") or Path(text).is_file():
        return load_profile(text)
    profiles = builtin_profiles()
    if text not in profiles:
        raise ProfileError(f"target: {text!r} is neither a built-in profile nor a .toml file; "
                           f"built-in: {', '.join(profiles)}")
    return profiles[text]
