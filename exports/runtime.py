"""Run an exported file in its own runtime with one interface: the one session setup of this project.

`load_session(path, threads)` picks the runtime from the file suffix (.onnx -> ONNX Runtime,
.tflite -> LiteRT, .xml -> OpenVINO) and configures it as the package README tells clients to, so
parity checks, the export gate, the pick, the latency tables and the probe bundle on a device all run
the same sessions. `run` / `run_one` take NCHW float32 input, whatever the file's layout, and return
outputs in PyTorch's layout (files are batch-1 graphs: `run` loops over the rows of a batch);
`raw_runner` is the runtime's inference call alone, on an input of the file's own shape and dtype bound
once: what every latency figure of this project times, and what `benchmark_app` and `litert-benchmark`
time (an app's own pre- and post-processing comes on top).

`session.settings` is the exact configuration of the session as plain data (threads, hints, delegate,
runtime version); a package records it per file, and `load_session(..., settings=...)` opens a file with
exactly that configuration again, so a latency claim, the model card's snippet and `factory benchmark`
all describe the same session.

Import-cheap (numpy + stdlib; runtimes are imported when a session opens): probe bundles carry this file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from exports import FILE_SUFFIX_FORMAT, FORMATS


@contextmanager
def openvino_telemetry_declined() -> Iterator[None]:
    """No usage telemetry from OpenVINO (its import and converter) or NNCF inside the block.

    They send events to Google Analytics (openvino-telemetry) unless the user opted out in
    ~/intel/openvino_telemetry or CI=true, each from a forked copy of the calling process: a network
    call the factory must not make, and ~0.8 s of CPU per converted model here. CI=true is the switch
    that package reads; it is set for these calls only."""
    before = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if before is None:
            del os.environ["CI"]
        else:
            os.environ["CI"] = before


def import_openvino() -> Any:
    """The openvino module, imported without its import-time telemetry event."""
    with openvino_telemetry_declined():
        import openvino

    return openvino


class Session(Protocol):
    fmt: str
    path: Path
    threads: int
    settings: dict[str, Any]

    def run_one(self, x: np.ndarray) -> np.ndarray: ...

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def raw_runner(self, rng: np.random.Generator) -> Callable[[], object]: ...


def _run_rows(session: Session, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"input: expected NCHW (N, C, H, W), got shape {x.shape}")
    return np.concatenate([session.run_one(x[i : i + 1]) for i in range(len(x))], axis=0)


def random_input(shape: Sequence[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Random values of a tensor's shape (dynamic dims -> 1) and dtype: latency does not depend on them."""
    shape = [int(d) if isinstance(d, int | np.integer) and int(d) > 0 else 1 for d in shape]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


class OnnxSession:
    """ONNX Runtime, CPU provider, `intra_op_num_threads=threads`, sequential execution."""

    fmt = "onnx"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        self.path, self.threads = path, threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input = self._sess.get_inputs()[0].name
        self.settings = {"runtime": "onnxruntime", "version": ort.__version__, "providers": ["CPUExecutionProvider"],
                         "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                         "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": "ORT_ENABLE_ALL"}

    def run_one(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._input: x})[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        return _run_rows(self, x)

    def raw_runner(self, rng: np.random.Generator) -> Callable[[], object]:
        """One inference on a fixed random input of the file's own input type (float32, else int8)."""
        inp = self._sess.get_inputs()[0]
        feed = {inp.name: random_input(inp.shape, np.dtype(np.float32 if "float" in inp.type else np.int8), rng)}
        return lambda: self._sess.run(None, feed)


OPENVINO_HINTS = ("auto", "f32", "default")


class OpenVinoSession:
    """OpenVINO CPU plugin, `INFERENCE_NUM_THREADS=threads`, latency hint, one stream.

    `precision_hint`: "f32" pins the inference precision (OpenVINO would otherwise run fp32/fp16 IRs in
    bf16 on CPUs with bf16 support, which breaks fp32 parity); "default" leaves OpenVINO's choice; "auto"
    (default) = "f32" for float IRs, "default" for quantized (FakeQuantize) IRs, whose int8 parity the
    gate checks with the int8 criteria anyway."""

    fmt = "openvino"

    def __init__(self, path: Path, threads: int, precision_hint: str = "auto") -> None:
        ov = import_openvino()

        if precision_hint not in OPENVINO_HINTS:
            raise ValueError(f"precision_hint: unknown {precision_hint!r}; allowed: {list(OPENVINO_HINTS)}")
        self.path, self.threads = path, threads
        core = ov.Core()
        model = core.read_model(str(path))
        if precision_hint == "auto":
            quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
            precision_hint = "default" if quantized else "f32"
        self.precision_hint = precision_hint
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if precision_hint == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self.settings = {"runtime": "openvino", "version": ov.get_version(), "device": "CPU", "config": config}

    def run_one(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        return self._request.get_output_tensor(0).data.copy()

    def run(self, x: np.ndarray) -> np.ndarray:
        return _run_rows(self, x)

    def raw_runner(self, rng: np.random.Generator) -> Callable[[], object]:
        """`infer()` of an infer request of its own whose input tensor (random float32, the IR's input
        shape) is set once: what `benchmark_app -api sync` times."""
        ov = import_openvino()

        shape = list(self._compiled.input(0).get_partial_shape().to_shape())
        request = self._compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(random_input(shape, np.dtype(np.float32), rng)))
        return request.infer


TFLITE_KERNELS = ("xnnpack", "builtin")
TFLITE_RESOLVERS = {"xnnpack": "AUTO", "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}


class TfliteSession:
    """LiteRT interpreter, `num_threads=threads`. Input NHWC inside; NCHW outside.

    `kernels`: "xnnpack" (default) = LiteRT's default delegate, what `Interpreter(model_path=...)` and
    `litert-benchmark` run; "builtin" = LiteRT's own kernels without the default delegate. Which is faster
    depends on the graph and the CPU (an int8 graph whose ops XNNPACK lacks is cut into many delegate
    partitions), so packages choose by measuring both (`exports.timing.choose_tflite_kernels`)."""

    fmt = "tflite"

    def __init__(self, path: Path, threads: int, kernels: str = "xnnpack") -> None:
        Interpreter, OpResolverType = _litert()
        if kernels not in TFLITE_KERNELS:
            raise ValueError(f"kernels: unknown {kernels!r}; allowed: {list(TFLITE_KERNELS)}")
        self.path, self.threads, self.kernels = path, threads, kernels
        resolver = getattr(OpResolverType, TFLITE_RESOLVERS[kernels])
        self._interp = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        self.settings = {"runtime": "tflite", "version": _litert_version(), "num_threads": threads,
                         "kernels": kernels, "experimental_op_resolver_type": TFLITE_RESOLVERS[kernels]}
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]

    def run_one(self, x: np.ndarray) -> np.ndarray:
        nhwc = x.transpose(0, 2, 3, 1)
        self._interp.set_tensor(self._in["index"], _quantize_io(nhwc, self._in))
        self._interp.invoke()
        y = _dequantize_io(self._interp.get_tensor(self._out["index"]), self._out)
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def run(self, x: np.ndarray) -> np.ndarray:
        return _run_rows(self, x)

    def raw_runner(self, rng: np.random.Generator) -> Callable[[], object]:
        """`invoke` on a fixed random input set once, in the input tensor's own NHWC shape and dtype (int8
        for fully-quantized graphs): no transpose or (de)quantization in the timed call."""
        self._interp.set_tensor(self._in["index"], random_input(self._in["shape"], np.dtype(self._in["dtype"]), rng))
        return self._interp.invoke


def _litert() -> tuple[Any, Any]:
    """(Interpreter, OpResolverType) from ai-edge-litert, else from tflite_runtime (some devices only
    have that wheel; its interpreter has the same interface)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore[import-not-found,no-redef]
    return Interpreter, OpResolverType


def _litert_version() -> str:
    try:
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    except Exception:  # tflite_runtime on a device, or no metadata
        return "unknown"


def _quantize_io(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float -> the tensor's dtype (identity for float tensors; int8-I/O files are quantized here)."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(x, np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize_io(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


_SESSIONS: dict[str, type] = {"onnx": OnnxSession, "openvino": OpenVinoSession, "tflite": TfliteSession}


def format_of(path: Path) -> str:
    """The format of a model file, from its suffix."""
    fmt = FILE_SUFFIX_FORMAT.get(Path(path).suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown model file suffix {Path(path).suffix!r}; allowed: "
                         f"{sorted(FILE_SUFFIX_FORMAT)}")
    return fmt


def runtime_of(path: Path) -> str:
    """The runtime that loads a model file ("onnxruntime" | "openvino" | "tflite"), from its suffix."""
    return FORMATS[format_of(path)].runtime


def load_session(path: Path, threads: int = 1, *, tflite_kernels: str = "xnnpack",
                 openvino_hint: str = "auto", settings: dict[str, Any] | None = None) -> Session:
    """Open `path` in its runtime. NCHW float32 in, PyTorch-layout outputs out.

    `tflite_kernels` only matters for .tflite files (see TfliteSession), `openvino_hint` for OpenVINO IRs
    (see OpenVinoSession). `settings` (a session's `.settings`, e.g. from a package manifest) overrides
    both, so the file opens exactly as it was measured; `threads` still applies."""
    path = Path(path)
    if settings:
        tflite_kernels = settings.get("kernels", tflite_kernels)
        hint = (settings.get("config") or {}).get("INFERENCE_PRECISION_HINT")
        openvino_hint = "f32" if hint == "f32" else ("default" if "config" in settings else openvino_hint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    if threads < 1:
        raise ValueError(f"threads: must be >= 1, got {threads}")
    fmt = format_of(path)
    if fmt == "tflite":
        return TfliteSession(path, threads, kernels=tflite_kernels)
    if fmt == "openvino":
        return OpenVinoSession(path, threads, precision_hint=openvino_hint)
    return _SESSIONS[fmt](path, threads)
