import json
import subprocess
import sys

from click.testing import CliRunner

from factory.cli import cli


def test_space_show_json_reports_size_and_costs():
    result = CliRunner().invoke(cli, ["space", "show", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["num_subnetworks"] >= 10**19
    assert info["largest"]["macs"] > 5 * info["smallest"]["macs"]
    assert len(info["stages"]) == 5


def test_space_show_text_and_phi():
    result = CliRunner().invoke(cli, ["space", "show", "--phi", "1"])
    assert result.exit_code == 0
    assert "phi=1" in result.output and "sub-networks" in result.output


def test_space_show_refuses_unknown_space_with_allowed_values():
    result = CliRunner().invoke(cli, ["space", "show", "--space", "resnet"])
    assert result.exit_code == 2
    assert "ofa_mbv3" in result.output and "small" in result.output


def test_factory_help_imports_no_heavy_library():
    # the <2 s goal depends on the host's speed; what keeps it is that no heavy library is imported
    proc = subprocess.run([sys.executable, "-m", "factory", "--help"], capture_output=True, text=True, check=True,
                          timeout=120)
    assert "specialize" in proc.stdout or "space" in proc.stdout
    code = "import sys, factory.cli; print(sorted(m for m in ('torch','tensorflow','openvino') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_space_show_width_multiplier_of_ofa_supernets():
    base = json.loads(CliRunner().invoke(cli, ["space", "show", "--space", "ofa_mbv3", "--json"]).output)
    wide = json.loads(CliRunner().invoke(cli, ["space", "show", "--space", "ofa_mbv3", "--width", "1.2",
                                                "--json"]).output)
    assert (base["width"], wide["width"]) == (1.0, 1.2)
    assert [s["out_channels"] for s in wide["stages"]] == [32, 48, 96, 136, 192]
    assert wide["largest"]["params"] > 1.3 * base["largest"]["params"]
