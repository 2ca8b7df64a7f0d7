"""One sub-network of a run made ready to convert: the recipe the search's verified pick and `factory
export` share, so that the file the pick converts and times is the file a package can ship.

Ready means: BN recalibrated on the calib split and extracted as a static network (once), the int8
calibration images (the first CALIBRATION_IMAGES of the calib split), the preprocessing and labels, and
the metadata every converted file embeds (`exports.package.model_metadata`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exports.convert import convert
from exports.package import Preprocessing, model_metadata
from factory.data import to_model_input
from factory.errors import UserInputError
from factory.evaluate import calibrated_subnet

if TYPE_CHECKING:
    from factory.run import Run
    from supernets import ArchConfig
    from supernets.static import StaticNet

CALIBRATION_IMAGES = 200  # int8 calibration: enough for stable min/max, seconds to run


@dataclass(frozen=True)
class PreparedSubnet:
    """A sub-network ready to convert at one precision (see the module docstring)."""

    arch: ArchConfig
    model: StaticNet  # BN-recalibrated, eval mode, CPU
    precision: str
    calibration: np.ndarray | None  # (N, C, r, r) float32 normalised; int8 only
    preprocessing: Preprocessing
    labels: tuple[str, ...]

    @property
    def metadata(self) -> dict[str, Any]:
        return model_metadata(list(self.labels), self.preprocessing, self.arch.to_dict())

    def convert(self, fmt: str, out_dir: Path) -> Path:
        """Write this sub-network in `fmt` under `out_dir` (package layout); returns the main file."""
        return convert(self.model, fmt, self.precision, out_dir, resolution=self.arch.resolution,
                       calibration=self.calibration, metadata=self.metadata)


def prepare_subnet(run: Run, arch: ArchConfig, precision: str) -> PreparedSubnet:
    """The one BN recalibration + extraction of `arch`, with int8 calibration images when `precision` needs
    them (UserInputError when the run's calib split is empty)."""
    calibration = None
    if precision == "int8":
        calib = run.dataset().calib
        if len(calib) == 0:
            raise UserInputError(f"int8 needs calibration data: the calib split of {run.data.source!r} is empty")
        calibration = to_model_input(calib.images[:CALIBRATION_IMAGES], arch.resolution, run.mean, run.std).numpy()
    preprocessing = Preprocessing(arch.resolution, tuple(run.mean), tuple(run.std))  # type: ignore[arg-type]
    return PreparedSubnet(arch=arch, model=calibrated_subnet(run, arch), precision=precision, calibration=calibration,
                          preprocessing=preprocessing, labels=tuple(run.class_names))
