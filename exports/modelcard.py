"""README.md of a package: what the model is, how to load each file in ~10 lines, its measured numbers.

Rendered from the manifest alone, so the card can never disagree with it.
"""

from __future__ import annotations

from typing import Any

from exports.intervals import estimate_text
from exports.official_tools import official_command

_PREPROCESS = '''import json, numpy as np
from PIL import Image
m = json.load(open("manifest.json")); inp = m["input"]; r = inp["resolution"]
img = Image.open("image.png").convert("RGB").resize((r, r), Image.BILINEAR)
x = (np.asarray(img, np.float32) / 255 - inp["mean"]) / inp["std"]   # HWC, RGB'''

def _loader(entry: dict[str, Any]) -> str:
    """The load snippet of one file, creating the session with exactly the settings its latency was
    measured with (the manifest's runtime_settings; a package without them gets the runtime's defaults)."""
    path, st = entry["path"], entry.get("runtime_settings") or {}
    if entry["format"] == "onnx":
        opts = ""
        if st:
            opts = (f"o = ort.SessionOptions(); o.intra_op_num_threads = {st['intra_op_num_threads']}; "
                    f"o.inter_op_num_threads = {st['inter_op_num_threads']}\n"
                    f"o.execution_mode = ort.ExecutionMode.{st['execution_mode']}; "
                    f"o.graph_optimization_level = ort.GraphOptimizationLevel.{st['graph_optimization_level']}\n")
        return (f"import onnxruntime as ort\n{opts}sess = ort.InferenceSession(\"{path}\", "
                f"{'o, ' if st else ''}providers={st.get('providers', ['CPUExecutionProvider'])!r})\n"
                "logits = sess.run(None, {sess.get_inputs()[0].name: "
                "x.transpose(2, 0, 1)[None].astype(np.float32)})[0]")
    if entry["format"] == "tflite":
        args = f'model_path="{path}"'
        if st:
            args += f", num_threads={st['num_threads']}"
            if st.get("experimental_op_resolver_type", "AUTO") != "AUTO":
                args += f", experimental_op_resolver_type=OpResolverType.{st['experimental_op_resolver_type']}"
        return ("from ai_edge_litert.interpreter import Interpreter, OpResolverType\n"
                f"it = Interpreter({args}); it.allocate_tensors()\n"
                'it.set_tensor(it.get_input_details()[0]["index"], x[None].astype(np.float32))   # NHWC\n'
                'it.invoke(); logits = it.get_tensor(it.get_output_details()[0]["index"])')
    config = f", {st['config']!r}" if st.get("config") else ""
    return ("import openvino as ov\n"
            f"model = ov.Core().compile_model(\"{path}\", \"{st.get('device', 'CPU')}\"{config})\n"
            "logits = model(x.transpose(2, 0, 1)[None].astype(np.float32))[0]")


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_model_card(manifest: dict[str, Any]) -> str:
    return "\n".join([*_about(manifest), *_measured(manifest), *_remeasure(manifest), *_load_it(manifest)])


def _about(manifest: dict[str, Any]) -> list[str]:
    """Title, what the model is, its input, cost and lineage."""
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
    return lines


def _measured(manifest: dict[str, Any]) -> list[str]:
    """The table of measured figures, one row per file."""
    metrics = manifest.get("metrics", {})
    lines = [
        "",
        f"## Measured (batch 1, {metrics.get('threads', 1)} thread(s), {metrics.get('validation_images', '?')} "
        "validation images)",
        "",
        f"PyTorch reference accuracy: {metrics.get('reference_accuracy', 0):.2%} (validation split)",
        *_test_lines(metrics.get("test")),
        "",
        "| file | format | precision | layout | size MB | test accuracy [95% CI] | val accuracy | "
        "max abs diff / logit scale | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_file = metrics.get("files", {})
    tested = (metrics.get("test") or {}).get("files", {})
    for f in manifest["files"]:
        m = per_file.get(f["path"], {})
        size = f["size_bytes"] + sum(x["size_bytes"] for x in f.get("extra_files", []))
        acc = m.get("accuracy")
        lines.append(f"| `{f['path']}` | {f['format']} | {f['precision']} | {f['layout']} | {size / 1e6:.2f} | "
                     f"{estimate_text(tested.get(f['path']))} | {'-' if acc is None else f'{acc:.2%}'} | "
                     f"{m.get('relative_diff', float('nan')):.1e} | "
                     f"{_fmt_ms(m.get('latency_p50_ms'))} | {_fmt_ms(m.get('latency_p95_ms'))} |")
    return lines


def _test_lines(test: dict[str, Any] | None) -> list[str]:
    """Which accuracy to believe: the test split's (nothing chose on it) over the validation split's."""
    if not test:
        return ["", "No test split in this run (made before the factory held one out): the accuracies below are "
                "on the validation split the sub-network was chosen on, so they are optimistic."]
    return ["", f"Test split ({test['images']} images that no training, search, pick or gate saw): PyTorch "
            f"{estimate_text(test['pytorch'])}. Quote these; validation accuracy is where the pick was chosen "
            "(optimistic). Two figures whose intervals overlap may be a tie."]


def _remeasure(manifest: dict[str, Any]) -> list[str]:
    """What the latency figures mean, the runtime's own command that re-times each file in its recorded
    settings, and which LiteRT kernels a .tflite file ships with and why."""
    lines = ["", "p50 / p95: median / 95th percentile of all timed runs of the runtime's inference call on a bound "
             "batch-1 input (what the runtimes' own benchmark tools time; your pre- and post-processing come on "
             "top), on the export machine, in the session the snippets below create; the p50 budget was met "
             "with the p50's run-to-run spread. Re-measure on your device with `factory benchmark` or the "
             "runtime's own tool:", ""]
    for f in manifest["files"]:
        if f.get("runtime_settings"):
            cmd = official_command(f["path"], f["runtime_settings"])
            lines += [f"- `{f['path']}`: `{cmd.shell()}`" + (f" ({cmd.note})" if cmd.note else "")]
        choice = f.get("kernel_choice")
        if choice:
            figures = ", ".join(f"{k} {v:.3f} ms" for k, v in choice["compared_p50_ms"].items())
            lines += [f"- `{f['path']}` runs with LiteRT's {choice['chosen']} kernels: measured {figures}; "
                      f"{choice['rule']}"]
    return lines


def _load_it(manifest: dict[str, Any]) -> list[str]:
    """A load snippet per file, the signature check when the package is signed, the stand-alone client."""
    lines = ["", "## Load it"]
    for f in manifest["files"]:
        lines += ["", f"### {f['format']} ({f['precision']}, input {f['layout']} {f['input_shape']})", "",
                  "```python", _PREPROCESS, _loader(f), 'print(m["labels"][int(np.argmax(logits))])', "```"]
    if manifest.get("signature"):
        lines += ["", f"Signed: `{manifest['signature']['file']}` ({manifest['signature']['method']}) covers "
                  f"{manifest['signature']['covers']}. Check it before loading: "
                  "`factory verify PACKAGE_DIR --public-key KEY.pub`, or in an app "
                  "`python classify.py PACKAGE_DIR image.png --public-key KEY.pub`."]
    lines += ["", "Or, with nothing but numpy, PIL and the runtime: `python classify.py PACKAGE_DIR image.png ...` "
              "(examples/classify.py of the factory).", "",
              "Check the package before shipping it: `factory verify PACKAGE_DIR` (checksums, parity, accuracy).", ""]
    return lines
