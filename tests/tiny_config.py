"""Tiny training configs for tests: a few steps per phase on mnist5k, on the CPU, without progress bars."""

from __future__ import annotations

PHASE_LR = {"teacher": 0.1, "kernel": 0.03, "depth": 0.03, "expand": 0.03}


def tiny_config(*, batch_size: int, steps_per_epoch: int, eval_images: int, epochs: dict[str, int] | None = None,
                checkpoint_interval_s: float | None = None) -> str:
    """TOML text of a config; `epochs` per phase default to 1 (0 skips a phase)."""
    per_phase = {**dict.fromkeys(PHASE_LR, 1), **(epochs or {})}
    lines = ["[train]", f"batch_size = {batch_size}", f"steps_per_epoch = {steps_per_epoch}",
             f"eval_images = {eval_images}"]
    for name, lr in PHASE_LR.items():
        lines += ["", f"[phases.{name}]", f"epochs = {per_phase[name]}", f"lr = {lr}"]
    lines += ["", "[runtime]", 'device = "cpu"', "progress = false"]
    if checkpoint_interval_s is not None:
        lines.append(f"checkpoint_interval_s = {checkpoint_interval_s}")
    return "\n".join(lines) + "\n"
