"""TFLite: the native NHWC TensorFlow mirror (exports.tf_mirror) converted by TensorFlow's converter.

fp16 = float16 weights (dequantized at load on CPU); int8 = full-integer ops (TFLITE_BUILTINS_INT8) with
a representative dataset from the calibration images; input and output tensors stay float32 so every
client feeds the same normalised NHWC floats whatever the precision. TensorFlow is imported lazily
(~4 s).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch import nn

from exports import FORMATS
from exports.convert import ExportSpec
from exports.tf_mirror import concrete_function


def export(model: nn.Module, precision: str, out_dir: Path, spec: ExportSpec) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the converter's C++ logs drown the progress lines
    with _native_stderr_captured():  # TF's import logs (oneDNN, CUDA probing) bypass that setting
        import tensorflow as tf

    function = concrete_function(tf, model, spec.resolution, spec.in_channels)
    with _quiet_logger("absl"):  # it asks for a trackable object our constant-only graph does not have
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        assert spec.calibration is not None  # checked by convert()
        nhwc = np.ascontiguousarray(spec.calibration.transpose(0, 2, 3, 1))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(nhwc)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # The int8 calibrator prints to the C-level stderr and warns about float I/O (which we keep on purpose);
    # shown only if it fails.
    with contextlib.redirect_stdout(io.StringIO()), _native_stderr_captured(), warnings.catch_warnings(), \
            _quiet_logger("absl"):
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        data = converter.convert()
    path = out_dir / FORMATS["tflite"].file_name
    path.write_bytes(data)
    return path


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Only errors from the Python logger `name` inside the block."""
    import logging

    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Redirect file descriptor 2 (C++ logs) to a temporary file; replay it if the body raises."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _representative(images_nhwc: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(images_nhwc)):
        yield [images_nhwc[i : i + 1]]
