"""A target whose inputs did not change is not specialized again.

A second `factory demo` (or `factory specialize` into the same --out) should cost seconds, not the minutes
of a search, a verified pick and a gated export that would produce the same package. Each shipped target
leaves `<out>/<target>/specialized.json`: the fingerprint of everything its package depends on (supernet,
predictor and latency-table bytes, the profile, the search options, the factory's own source) and the
report row. The next run reuses the row when the fingerprint is equal and the package's files still
match their manifest checksums; anything else (a retrained supernet, an edited profile, a changed seed, a
touched package file, new code) specializes the target again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exports.files import atomic_write_text, sha256_file
from factory.ship.report import TargetOutcome

if TYPE_CHECKING:
    from factory.run import Run
    from factory.ship.specialize import SpecializeOptions
    from targets.profile import TargetProfile

RECORD_FILE = "specialized.json"
_SOURCE_PACKAGES = ("factory", "supernets", "targets", "exports")


def code_fingerprint() -> str:
    """sha256 over the factory's own Python sources: an edited module invalidates every reuse."""
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def specialization_inputs(run: Run, profile: TargetProfile, options: SpecializeOptions,
                          latency_table: Path) -> dict[str, Any]:
    """Everything a target's package depends on, as comparable JSON."""
    from factory.predictor.model import PREDICTOR_FILE

    search = asdict(options)
    sign_key = search.pop("sign_key")
    profile_record = profile.to_dict()
    profile_record.pop("file", None)  # where the profile lives does not change what it asks for
    return {
        "supernet_sha256": run.checkpoint_sha256,
        "predictor_sha256": sha256_file(run.path / PREDICTOR_FILE),
        "latency_table_sha256": sha256_file(latency_table),
        "profile": profile_record,
        "options": search,
        "sign_key_sha256": None if sign_key is None else sha256_file(Path(sign_key)),
        "code_sha256": code_fingerprint(),
    }


def reusable_outcome(out_dir: Path, profile: TargetProfile, inputs: dict[str, Any]) -> TargetOutcome | None:
    """The stored report row of `profile` when its inputs are unchanged and its package is intact."""
    from exports.verify import checksum_problems

    record_path = out_dir / profile.name / RECORD_FILE
    try:
        record = json.loads(record_path.read_text())
        if record.get("inputs") != inputs:
            return None
        outcome = TargetOutcome(**record["outcome"])
    except (OSError, json.JSONDecodeError, TypeError, KeyError):
        return None
    if outcome.status != "shipped" or outcome.package is None:
        return None
    package = out_dir / outcome.package
    try:
        manifest = json.loads((package / "manifest.json").read_text())
        records = [manifest["verification"]]
        for entry in manifest["files"]:
            records += [entry, *entry.get("extra_files", [])]
        if any(checksum_problems(package, r) for r in records):
            return None
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return outcome


def remember(out_dir: Path, profile: TargetProfile, inputs: dict[str, Any], outcome: TargetOutcome) -> None:
    """Record a shipped target's inputs and report row (nothing is kept for a failed one)."""
    if outcome.status != "shipped":
        (out_dir / profile.name / RECORD_FILE).unlink(missing_ok=True)
        return
    atomic_write_text(out_dir / profile.name / RECORD_FILE,
                      json.dumps({"inputs": inputs, "outcome": outcome.to_dict()}, indent=1) + "\n")
