"""Target profiles: schema validation (errors name file, key, value, allowed), built-ins, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from factory.cli import cli
from targets.profile import ProfileError, builtin_profiles, get_profile, load_profile, parse_profile

GOOD = {"name": "t", "runtime": "onnxruntime", "precision": "fp32", "threads": 1, "batch": 1,
        "constraints": {"latency_p50_ms": 1.0, "size_mb": 5}, "latency": {"source": "measure"}}


def _with(**changes):
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        section, _, key = dotted.rpartition("__")
        target = data[section] if section else data
        if value is _DELETE:
            target.pop(key)
        else:
            target[key] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "must_name"),
    [
        ({"threads": "2"}, ["threads", "'2'", ">= 1"]),  # wrong type
        ({"threads": 0}, ["threads", "0", ">= 1"]),
        ({"batch": 1.5}, ["batch", "1.5"]),
        ({"runtime": "tensorrt"}, ["runtime", "'tensorrt'", "onnxruntime, openvino, tflite"]),  # unknown runtime
        ({"precision": "int4"}, ["precision", "'int4'", "fp32, fp16, int8"]),
        ({"colour": "red"}, ["colour", "unknown key", "'red'", "runtime"]),  # unknown key, top level
        ({"constraints__latency_p99_ms": 3}, ["constraints.latency_p99_ms", "unknown key", "latency_p95_ms"]),
        ({"constraints__latency_p50_ms": -1.0}, ["constraints.latency_p50_ms", "-1.0", "> 0"]),  # negative
        ({"constraints__size_mb": 0}, ["constraints.size_mb", "> 0"]),
        ({"constraints__size_mb": "5MB"}, ["constraints.size_mb", "'5MB'", "number"]),
        ({"constraints__min_accuracy": 90}, ["constraints.min_accuracy", "90", "(0, 1]"]),
        ({"latency__source": "guess"}, ["source", "'guess'", "measure, import"]),
        ({"runtime": _DELETE}, ["runtime", "missing", "onnxruntime"]),
        ({"name": "My Phone"}, ["name", "'My Phone'"]),
        ({"space": "resnet"}, ["space", "'resnet'", "ofa_mbv3, small"]),
        ({"latency__samples": 5}, ["latency.samples", "5", ">= 20"]),
    ],
)
def test_malformed_profile_is_refused_naming_key_value_and_allowed(changes, must_name):
    with pytest.raises(ProfileError) as info:
        parse_profile(_with(**changes), origin="p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: ")
    for part in must_name:
        assert part in message, (part, message)


def test_valid_profile_parses_all_fields(tmp_path: Path):
    path = tmp_path / "t.toml"
    path.write_text('name = "t"\nruntime = "openvino"\nprecision = "int8"\nthreads = 3\nspace = "ofa_mbv3"\n'
                    '[constraints]\nlatency_p95_ms = 2\nmin_accuracy = 0.9\n'
                    '[latency]\nsource = "import"\ntable = "tables/t.json"\nsamples = 64\n')
    p = load_profile(path)
    assert (p.runtime, p.precision, p.threads, p.batch, p.format) == ("openvino", "int8", 3, 1, "openvino")
    assert p.constraints.latency_p95_ms == 2.0 and p.constraints.min_accuracy == 0.9
    assert p.constraints.size_mb is None
    assert not p.measurable_here and p.latency_table == tmp_path / "tables" / "t.json"
    assert p.space == "ofa_mbv3" and p.latency_samples == 64 and p.suits("ofa_mbv3") and not p.suits("small")


def test_invalid_toml_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ProfileError, match=r"broken\.toml: not valid TOML"):
        load_profile(path)


def test_builtin_profiles_are_valid_and_cover_three_runtimes():
    profiles = builtin_profiles()
    measurable = [p for p in profiles.values() if p.measurable_here]
    assert {p.runtime for p in measurable} == {"onnxruntime", "openvino", "tflite"}
    assert len({p.precision for p in measurable}) >= 2 and len({p.threads for p in measurable}) >= 2
    assert any(not p.measurable_here for p in profiles.values())  # the remote-device example
    for p in profiles.values():
        assert p.constraints.to_dict(), f"{p.name} has no budget"
        assert p.source_file is not None and p.source_file.stem == p.name
    assert get_profile("server-onnx") == profiles["server-onnx"]


def test_targets_all_takes_the_builtins_sized_for_the_runs_space():
    from factory.ship.specialize import resolve_targets

    digits = {p.name for p in resolve_targets("all", "small")}
    imagenet = {p.name for p in resolve_targets("all", "ofa_mbv3")}
    assert digits == {"edge-openvino", "phone-int8", "server-onnx"}
    assert imagenet == {"edge-openvino-224", "phone-tflite-224", "server-onnx-224"}
    for name in imagenet:  # every runtime, budgets in milliseconds: models of several ms at 224 px
        assert builtin_profiles()[name].constraints.latency_p50_ms >= 2.0
    assert {builtin_profiles()[n].runtime for n in imagenet} == {"onnxruntime", "openvino", "tflite"}


def test_unknown_target_name_lists_builtins():
    with pytest.raises(ProfileError, match="phone-int8"):
        get_profile("toaster")


def test_cli_list_and_show_json():
    runner = CliRunner()
    result = runner.invoke(cli, ["targets", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert {"phone-int8", "edge-openvino", "server-onnx", "rpi4-tflite"} <= {p["name"] for p in listed}
    result = runner.invoke(cli, ["targets", "show", "phone-int8", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["runtime"], shown["format"], shown["precision"], shown["threads"]) == ("tflite", "tflite", "int8", 1)
    assert shown["constraints"]["size_mb"] > 0


def test_cli_validate_ok_json(tmp_path: Path):
    path = tmp_path / "ok.toml"
    path.write_text('name = "ok"\nruntime = "tflite"\nprecision = "fp16"\n')
    result = CliRunner().invoke(cli, ["targets", "validate", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["profile"]["precision"] == "fp16"


def test_cli_validate_malformed_exits_2_with_message_and_no_traceback(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nruntime = "onnxruntime"\nprecision = "fp32"\n[constraints]\nsize_mb = -3\n')
    proc = subprocess.run([sys.executable, "-m", "factory", "targets", "validate", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "constraints.size_mb" in proc.stderr and "-3" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
