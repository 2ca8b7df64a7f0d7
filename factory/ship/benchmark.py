"""`factory benchmark PKG`: accuracy and p50/p95 latency of every file in a package, with the
verification gate's verdict per file (like `yolo benchmark`, plus parity), timed in the session settings
the manifest records, and the runtime's own benchmark command that times that same session."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def benchmark_package(package: str | Path, repeats: int = 200, threads: int | None = None) -> dict[str, Any]:
    """The gate's full report, whether or not it passes (a failing file is a row, not an exception)."""
    from exports.verify import VerificationFailed, verify_package
    from factory.errors import UserInputError

    root = Path(package)
    if not (root / "manifest.json").is_file():
        raise UserInputError(f"{root}: not a package (no manifest.json)")
    try:
        return verify_package(root, threads=threads, latency_repeats=repeats)
    except VerificationFailed as exc:
        return exc.report
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def render_table(report: dict[str, Any]) -> str:
    budgets = {k: v for k, v in (report.get("budgets") or {}).items() if v is not None}
    lines = [f"package {report['package']}  ({report.get('images', '?')} validation images, "
             f"{report.get('threads')} thread(s); budgets {budgets or 'none'})",
             f"{'file':<28} {'format':<9} {'prec':<5} {'size MB':>8} {'accuracy':>9} {'agree':>7} "
             f"{'|diff|/scale':>12} {'p50 ms':>8} {'p95 ms':>8}  verdict"]
    for f in report.get("files", []):
        verdict = "PASS" if not f.get("failures") else "FAIL: " + "; ".join(f["failures"])
        lines.append(
            f"{f['path']:<28} {f.get('format', ''):<9} {f.get('precision', ''):<5} "
            f"{f.get('size_bytes', 0) / 1e6:>8.3f} {100 * f.get('accuracy', 0):>8.2f}% "
            f"{100 * f.get('top1_agreement', 0):>6.1f}% {f.get('relative_diff', float('nan')):>12.1e} "
            f"{f.get('latency_p50_ms', float('nan')):>8.3f} {f.get('latency_p95_ms', float('nan')):>8.3f}  {verdict}")
    for f in report.get("files", []):
        if f.get("runtime_settings"):
            from exports.official_tools import official_command

            cmd = official_command(Path(report["package"]) / f["path"], f["runtime_settings"])
            lines.append(f"{f['path']}: the same session in {cmd.tool}: {cmd.shell()}")
            if cmd.note:
                lines.append(f"  ({cmd.note})")
    for f in report.get("files", []):
        if f.get("latency_contended_rounds"):
            what = ("are counted (the slowdown outlasted the wait for clean rounds)"
                    if f.get("latency_contended_counted") else "were set aside")
            lines.append(f"note: {f['path']}: {f['latency_contended_rounds']} of {f['latency_rounds']} timing rounds "
                         f"were contended (the {report.get('threads')}-thread runs much slower than 1 thread) and "
                         f"{what}")
    for failure in report.get("failures", []):
        if not any(failure.startswith(f["path"]) for f in report.get("files", [])):
            lines.append(f"FAIL: {failure}")
    return "\n".join(lines)
