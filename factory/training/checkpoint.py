"""Training checkpoints: the exact position, model, teacher, optimizer and scheduler, written atomically.

Every random choice of the trainer (batch order, augmentation, sampled sub-networks, dropout) is derived
from (seed, global step, ...), so the position *is* the RNG state; the torch RNG state is stored too so
that a resumed process continues bit-for-bit where a single-process run would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import UserInputError
from factory.run import atomic_torch_save, load_tagged_torch_file

if TYPE_CHECKING:
    import torch

CHECKPOINT_FORMAT = "ofa-factory-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Position:
    """The next step to run: phase index, epoch within the phase, step within the epoch, and the
    running totals of the current epoch (so the epoch's logged loss survives a resume)."""

    phase: int = 0
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    images: int = 0
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the rank-0 process (fair budget on a shared machine)

    @property
    def at_phase_start(self) -> bool:
        return self.epoch == 0 and self.step == 0

    def moved_to(self, phase: int, epoch: int, elapsed_seconds: float, cpu_seconds: float) -> Position:
        """The start of epoch `epoch` of phase `phase`: the run's totals carried over (steps, seconds; the
        wall and CPU seconds as given), the epoch's running totals back at zero."""
        return Position(phase=phase, epoch=epoch, global_step=self.global_step, train_seconds=self.train_seconds,
                        elapsed_seconds=elapsed_seconds, cpu_seconds=cpu_seconds)


def save_checkpoint(path: Path, position: Position, config_toml: str, model: dict[str, torch.Tensor],
                    teacher: dict[str, torch.Tensor] | None, optimizer: dict[str, Any] | None,
                    scheduler: dict[str, Any] | None, torch_rng: torch.Tensor) -> None:
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "position": asdict(position),
            "config_toml": config_toml,
            "model": model,
            "teacher": teacher,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "torch_rng": torch_rng,
        },
        path,
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint; a truncated or foreign file raises UserInputError naming it."""
    blob = load_tagged_torch_file(path, "checkpoint", "training checkpoint", CHECKPOINT_FORMAT, CHECKPOINT_VERSION)
    missing = [k for k in ("position", "model", "config_toml") if k not in blob]
    if missing:
        raise UserInputError(f"{path}: checkpoint lacks {missing}")
    try:
        blob["position"] = Position(**blob["position"])
    except TypeError as exc:
        raise UserInputError(f"{path}: bad checkpoint position ({exc})") from None
    return blob
