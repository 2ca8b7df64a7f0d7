"""The specialization report: one row per target, as Markdown and as a self-contained HTML page.

Pure formatting: takes `TargetOutcome`s, writes files. Knows nothing about how they were produced.
"""

from __future__ import annotations

import base64
import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exports.intervals import estimate_text


@dataclass
class TargetOutcome:
    """What happened to one target in `factory specialize`."""

    target: str
    status: str  # "shipped" | "infeasible" | "failed"
    runtime: str = ""
    precision: str = ""
    message: str = ""
    arch: dict[str, Any] | None = None
    accuracy: float | None = None  # validation split (where the pick was chosen)
    test_accuracy: dict[str, Any] | None = None  # exports.intervals.AccuracyEstimate.to_dict() on the test split
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    predicted_p50_ms: float | None = None
    size_mb: float | None = None
    macs: int | None = None
    budgets: dict[str, float] = field(default_factory=dict)
    formats_passed: list[str] = field(default_factory=list)
    formats_failed: list[str] = field(default_factory=list)
    package: str | None = None
    pareto_png: str | None = None
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)  # latency table / search + verified pick / package
    exit_code: int = 0  # of the failure (factory.errors: 3 infeasible, 4 gate refused, ...); 0 when shipped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vs(value: float | None, budget: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if budget is None:
        return f"{value:.{digits}f}"
    mark = "✓" if value <= budget else "✗"
    return f"{value:.{digits}f} / {budget:g} {mark}"


def arch_summary(arch: dict[str, Any] | None) -> str:
    """Compact human form: resolution, depth per stage, mean kernel and expand ratio of the blocks that
    run (the full arch is in the package manifest)."""
    if not arch:
        return "–"
    depths = arch["depths"]
    per_stage = len(arch["kernel_sizes"]) // max(1, len(depths))
    active = [i * per_stage + pos for i, d in enumerate(depths) for pos in range(d)]
    k = sum(arch["kernel_sizes"][i] for i in active) / max(1, len(active))
    e = sum(arch["expand_ratios"][i] for i in active) / max(1, len(active))
    return f"r{arch['resolution']} d{''.join(str(d) for d in depths)} k{k:.1f} e{e:.1f}"


def _rows(outcomes: list[TargetOutcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        b = o.budgets
        rows.append([
            o.target,
            f"{o.runtime} {o.precision}".strip(),
            o.status,
            arch_summary(o.arch),
            estimate_text(o.test_accuracy, missing="–"),
            "–" if o.accuracy is None else f"{100 * o.accuracy:.2f}%",
            _vs(o.latency_p50_ms, b.get("latency_p50_ms")),
            _vs(o.latency_p95_ms, b.get("latency_p95_ms")),
            _vs(o.size_mb, b.get("size_mb")),
            ", ".join(o.formats_passed) or "–",
            ", ".join(o.formats_failed) or "–",
        ])
    return rows


HEADER = ["target", "runtime", "status", "pick", "test accuracy [95% CI]", "val accuracy", "p50 ms / budget",
          "p95 ms / budget", "size MB / budget", "formats passed", "formats failed"]


def render_markdown(outcomes: list[TargetOutcome], title: str, notes: list[str] | None = None) -> str:
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "---|" * len(HEADER))
    for row in _rows(outcomes):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for o in outcomes:
        if o.status != "shipped" or o.message:
            lines.append(f"- **{o.target}** ({o.status}): {o.message}")
    lines.append("")
    for o in outcomes:
        if o.package:
            lines.append(f"- {o.target}: package `{o.package}`")
        if o.pareto_png:
            lines.append(f"  ![{o.target} Pareto front]({o.pareto_png})")
    for note in notes or []:
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def render_html(outcomes: list[TargetOutcome], title: str, base: Path, notes: list[str] | None = None) -> str:
    """Self-contained page: the Pareto plots are embedded as data URIs."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".shipped{background:#e8f6e8}.infeasible{background:#fff4e0}.failed{background:#fde8e8}"
        "img{max-width:520px;margin:1em 1em 0 0}</style></head><body>",
        f"<h1>{esc(title)}</h1><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADER) + "</tr>",
    ]
    for o, row in zip(outcomes, _rows(outcomes), strict=True):
        parts.append(f"<tr class='{esc(o.status)}'>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    parts.append("</table><ul>")
    for o in outcomes:
        if o.message:
            parts.append(f"<li><b>{esc(o.target)}</b> ({esc(o.status)}): {esc(o.message)}</li>")
    for note in notes or []:
        parts.append(f"<li>{esc(note)}</li>")
    parts.append("</ul>")
    for o in outcomes:
        if o.pareto_png and (base / o.pareto_png).is_file():
            data = base64.b64encode((base / o.pareto_png).read_bytes()).decode()
            parts.append(f"<figure style='display:inline-block'><img alt='{esc(o.target)} Pareto front' "
                         f"src='data:image/png;base64,{data}'><figcaption>{esc(o.target)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(outcomes: list[TargetOutcome], out_dir: Path, title: str = "Specialization report",
                 notes: list[str] | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    md.write_text(render_markdown(outcomes, title, notes))
    page.write_text(render_html(outcomes, title, out_dir, notes))
    return md, page
