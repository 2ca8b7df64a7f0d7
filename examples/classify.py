#!/usr/bin/env python3
"""Classify image files with a package written by `factory export` — no import of the factory.

Needs only numpy, Pillow and the ONE runtime of the chosen file (onnxruntime, openvino or ai-edge-litert).
Everything it does comes from the package's manifest.json: resolution, mean/std, colour order, layout,
and the exact session settings each file's latency was measured with (files[].runtime_settings:
threads, hints, LiteRT kernels), so this client runs as fast as the package claims.

    python classify.py dist/phone/pkg  cat.png dog.jpg            # first file of the package
    python classify.py dist/phone/pkg  cat.png --format tflite    # pick a file by format
    python classify.py dist/phone/pkg  cat.png --public-key key.pub  # refuse a package not signed by key.pem

A signed package (`factory export/specialize --sign-key key.pem`) carries model.sig, an OpenSSF
model-signing signature over every file; `--public-key` checks it (needs `pip install model-signing`)
before anything is loaded, so a changed model file is refused even when its manifest sum was rewritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def preprocess(path: Path, inp: dict) -> np.ndarray:
    """RGB, bilinear resize in float (no uint8 rounding) to resolution x resolution, /255, (x - mean) / std.

    Returns HWC float32. Resizing each channel as a float image keeps the client equal to the
    factory's own preprocessing (torch bilinear, antialiased) to ~1e-6.
    """
    if inp.get("color_order", "RGB") != "RGB":
        raise SystemExit(f"manifest: colour order {inp['color_order']!r} not supported by this client")
    img = Image.open(path).convert("RGB")
    r = int(inp["resolution"])
    channels = []
    for band in img.split():
        plane = band.convert("F")
        if plane.size != (r, r):
            plane = plane.resize((r, r), Image.Resampling.BILINEAR)
        channels.append(np.asarray(plane, dtype=np.float32))
    x = np.stack(channels, axis=-1) / 255.0
    return ((x - np.asarray(inp["mean"], np.float32)) / np.asarray(inp["std"], np.float32)).astype(np.float32)


class Model:
    """One model file of the package in its own runtime, opened with its recorded runtime_settings;
    `logits(x_hwc)` -> (K,)."""

    def __init__(self, package: Path, entry: dict) -> None:
        self.layout = entry["layout"]
        path = str(package / entry["path"])
        fmt, st = entry["format"], entry.get("runtime_settings") or {}
        if fmt == "onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if st:
                opts.intra_op_num_threads = st["intra_op_num_threads"]
                opts.inter_op_num_threads = st["inter_op_num_threads"]
                opts.execution_mode = getattr(ort.ExecutionMode, st["execution_mode"])
                opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, st["graph_optimization_level"])
            sess = ort.InferenceSession(path, opts, providers=st.get("providers", ["CPUExecutionProvider"]))
            name = sess.get_inputs()[0].name
            self._run = lambda x: sess.run(None, {name: x})[0]
        elif fmt == "openvino":
            import openvino as ov

            config = st.get("config") or {"INFERENCE_PRECISION_HINT": "f32"}
            compiled = ov.Core().compile_model(path, st.get("device", "CPU"), config)
            self._run = lambda x: compiled(x)[0]
        elif fmt == "tflite":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            kwargs = {}
            if st:
                kwargs = {"num_threads": st["num_threads"], "experimental_op_resolver_type":
                          getattr(OpResolverType, st.get("experimental_op_resolver_type", "AUTO"))}
            interp = Interpreter(model_path=path, **kwargs)
            interp.allocate_tensors()
            i, o = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

            def run(x: np.ndarray) -> np.ndarray:
                interp.set_tensor(i, x)
                interp.invoke()
                return interp.get_tensor(o)

            self._run = run
        else:
            raise SystemExit(f"manifest: unknown format {fmt!r}")

    def logits(self, x_hwc: np.ndarray) -> np.ndarray:
        x = x_hwc[None] if self.layout == "NHWC" else x_hwc.transpose(2, 0, 1)[None]
        return np.asarray(self._run(np.ascontiguousarray(x, np.float32)))[0]


def check_signature(package: Path, public_key: Path) -> None:
    """Refuse the package unless model.sig verifies with `public_key` over the package's present content."""
    import model_signing

    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public_key)
    config.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"]))
    try:
        config.verify(package, package / "model.sig")
    except Exception as exc:  # a changed file, another key, no signature
        raise SystemExit(f"{package}: signature check failed: {exc}") from None


def pick_file(manifest: dict, fmt: str | None) -> dict:
    files = manifest["files"]
    if fmt is None:
        return files[0]
    for entry in files:
        if entry["format"] == fmt:
            return entry
    raise SystemExit(f"--format {fmt}: not in this package; it has {[f['format'] for f in files]}")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Classify images with an exported package.")
    parser.add_argument("package", type=Path, help="package folder (holds manifest.json)")
    parser.add_argument("images", type=Path, nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument("--format", choices=["onnx", "tflite", "openvino"], default=None,
                        help="which file of the package to use (default: the first one)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--public-key", type=Path, default=None,
                        help="refuse the package unless its model.sig verifies with this public key (PEM)")
    args = parser.parse_args(argv)
    if args.public_key is not None:
        check_signature(args.package, args.public_key)
    manifest = json.loads((args.package / "manifest.json").read_text())
    model = Model(args.package, pick_file(manifest, args.format))
    labels = manifest["labels"]
    for path in args.images:
        probs = softmax(model.logits(preprocess(path, manifest["input"])).astype(np.float64))
        k = int(np.argmax(probs))
        if args.json:
            print(json.dumps({"image": str(path), "label": labels[k], "index": k, "score": float(probs[k])}))
        else:
            print(f"{path}: {labels[k]} ({probs[k]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
