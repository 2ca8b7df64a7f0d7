"""Where a command's time went: wall seconds per stage, printed as a table and kept as timings.json.

A user who waits minutes for `factory demo` should see which stage took them (and a second run should show
that reused work cost nothing); bench/demo_profile.py reads the same file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TIMINGS_FILE = "timings.json"


@dataclass
class StageTimes:
    """Stages in the order they ran: (name, wall seconds, note)."""

    rows: list[tuple[str, float, str]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, note: str = "") -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start, note)

    def add(self, name: str, seconds: float, note: str = "") -> None:
        self.rows.append((name, seconds, note))

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds, _ in self.rows)

    def table(self) -> str:
        width = max([len(name) for name, _, _ in self.rows] + [5])
        lines = [f"{'stage':<{width}}  {'seconds':>8}"]
        for name, seconds, note in self.rows:
            lines.append(f"{name:<{width}}  {seconds:8.1f}" + (f"  {note}" if note else ""))
        lines.append(f"{'total':<{width}}  {self.total:8.1f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"stages": [{"stage": n, "seconds": round(s, 2), "note": note} for n, s, note in self.rows],
                "total_seconds": round(self.total, 2)}

    def save(self, folder: Path) -> Path:
        path = Path(folder) / TIMINGS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path
