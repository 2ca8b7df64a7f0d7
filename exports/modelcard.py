"""README.md of a package: what the model is, how to load each file in ~10 lines, its measured numbers.

Rendered from the manifest alone, so the card can never disagree with it.
"""

from __future__ import annotations

from typing import Any

_PREPROCESS = '''import json, numpy as np
from PIL import Image
m = json.load(open("manifest.json")); inp = m["input"]; r = inp["resolution"]
img = Image.open("image.png").convert("RGB").resize((r, r), Image.BILINEAR)
x = (np.asarray(img, np.float32) / 255 - inp["mean"]) / inp["std"]   # HWC, RGB'''

_LOADERS = {
    "onnx": '''import onnxruntime as ort
sess = ort.InferenceSession("{path}", providers=["CPUExecutionProvider"])
logits = sess.run(None, {{sess.get_inputs()[0].name: x.transpose(2, 0, 1)[None].astype(np.float32)}})[0]''',
    "tflite": '''from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path="{path}"); it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))   # NHWC
it.invoke(); logits = it.get_tensor(it.get_output_details()[0]["index"])''',
    "openvino": '''import openvino as ov
model = ov.Core().compile_model("{path}", "CPU")
logits = model(x.transpose(2, 0, 1)[None].astype(np.float32))[0]''',
}


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_model_card(manifest: dict[str, Any]) -> str:
    inp, metrics = manifest["input"], manifest.get("metrics", {})
    lineage, target = manifest.get("lineage") or {}, manifest.get("target")
    labels = manifest["labels"]
    lines = [
        f"# {manifest['name']}",
        "",
        f"An image classifier ({len(labels)} classes: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}), "
        "a sub-network of a once-for-all supernet, exported and verified against its PyTorch reference.",
        "",
        f"- input: {inp['channels']}x{inp['resolution']}x{inp['resolution']} {inp['color_order']}, "
        f"`{inp['formula']}`, mean {inp['mean']}, std {inp['std']}; resize: {inp['resize']}",
        f"- MACs: {metrics.get('macs', '-')}, parameters: {metrics.get('params', '-')}",
        f"- run: {lineage.get('run', '-')} (supernet sha256 {str(lineage.get('checkpoint_sha256', '-'))[:16]}...)",
    ]
    if target:
        lines.append(f"- made for target `{target.get('name')}`: constraints {target.get('constraints')}")
    lines += [
        "",
        f"## Measured (batch 1, {metrics.get('threads', 1)} thread(s), {metrics.get('validation_images', '?')} "
        "validation images)",
        "",
        f"PyTorch reference accuracy: {metrics.get('reference_accuracy', 0):.2%}",
        "",
        "| file | format | precision | layout | size MB | accuracy | max abs diff / logit scale | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    per_file = metrics.get("files", {})
    for f in manifest["files"]:
        m = per_file.get(f["path"], {})
        size = f["size_bytes"] + sum(x["size_bytes"] for x in f.get("extra_files", []))
        acc = m.get("accuracy")
        lines.append(f"| `{f['path']}` | {f['format']} | {f['precision']} | {f['layout']} | {size / 1e6:.2f} | "
                     f"{'-' if acc is None else f'{acc:.2%}'} | {m.get('relative_diff', float('nan')):.1e} | "
                     f"{_fmt_ms(m.get('latency_p50_ms'))} | {_fmt_ms(m.get('latency_p95_ms'))} |")
    lines += ["", "Latencies were measured on the export machine; re-measure on your device "
              "(`factory benchmark` / `factory verify`).", "", "## Load it"]
    for f in manifest["files"]:
        lines += ["", f"### {f['format']} ({f['precision']}, input {f['layout']} {f['input_shape']})", "",
                  "```python", _PREPROCESS, _LOADERS[f["format"]].format(path=f["path"]),
                  'print(m["labels"][int(np.argmax(logits))])', "```"]
    lines += ["", "Or, with nothing but numpy, PIL and the runtime: `python classify.py PACKAGE_DIR image.png ...` "
              "(examples/classify.py of the factory).", "",
              "Check the package before shipping it: `factory verify PACKAGE_DIR` (checksums, parity, accuracy).", ""]
    return "\n".join(lines)
