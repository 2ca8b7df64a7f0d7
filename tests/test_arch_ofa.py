"""MIT Once-for-All's arch format ({"ks", "e", "d", "r"}): conversion both ways, `--arch` files in that
format, clean errors for malformed ones, and "ofa_arch" recorded next to "arch" in what search writes."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from search_proxies import CostLatencyModel, SyntheticAccuracy

from factory.cli import cli
from factory.errors import UserInputError
from factory.search.engine import search
from factory.search.files import SearchFiles, read_arch_file, write_search_files
from supernets import ArchConfig, get_space
from targets.profile import Constraints, TargetProfile

SPACE = get_space()
# A sub-network whose four fields all differ from each other's values, so a swapped field shows.
ARCH = ArchConfig(resolution=28, depths=(2, 3, 4, 2, 3), kernel_sizes=tuple([3, 5, 7, 5] * 5),
                  expand_ratios=tuple([4, 6, 3, 6] * 5))


def test_ofa_dict_maps_field_by_field_and_round_trips_both_ways() -> None:
    SPACE.validate(ARCH)
    ofa = ARCH.to_ofa_dict()
    assert ofa == {"ks": [3, 5, 7, 5] * 5, "e": [4, 6, 3, 6] * 5, "d": [2, 3, 4, 2, 3], "r": [28]}
    assert json.loads(json.dumps(ofa)) == ofa
    assert ArchConfig.from_ofa_dict(ofa) == ARCH
    assert ArchConfig.from_ofa_dict({**ofa, "r": 28}) == ARCH  # a bare int for r
    rng = random.Random(0)
    for _ in range(50):
        arch = SPACE.sample(rng)
        assert ArchConfig.from_ofa_dict(arch.to_ofa_dict()) == arch
        assert ArchConfig.from_ofa_dict(arch.to_ofa_dict()).to_ofa_dict() == arch.to_ofa_dict()
        assert ArchConfig.parse(arch.to_ofa_dict()) == ArchConfig.parse(arch.to_dict()) == arch


_OFA = ARCH.to_ofa_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({k: v for k, v in _OFA.items() if k != "ks"}, r"missing key\(s\) \['ks'\]"),
        ({**_OFA, "ks": "3573"}, r"ks: expected a list of integers, got '3573'"),
        ({**_OFA, "e": [4.0] * 20}, r"e: expected a list of integers"),
        ({**_OFA, "d": [True] * 5}, r"d: expected a list of integers"),
        ({**_OFA, "r": []}, r"r: expected the resolution as \[R\] or R \(an integer\), got \[\]"),
        ({**_OFA, "r": [28, 32]}, r"r: expected .*got \[28, 32\]"),
        ({**_OFA, "r": "28"}, r"r: expected .*got '28'"),
        ({**_OFA, "w": [1.0]}, r"unknown key\(s\) \['w'\]; allowed: \['ks', 'e', 'd', 'r'\]"),
        ({**_OFA, "resolution": 28}, r"mixes OFA keys .* with ours \['resolution'\]"),
    ],
)
def test_malformed_ofa_dict_is_refused_naming_the_key(data: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        ArchConfig.parse(data)
    path = tmp_path / "ofa.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=rf"ofa\.json: .*{message}"):
        read_arch_file(path)
    with pytest.raises(ValueError, match=rf"ofa\.json: .*{message}"):
        ArchConfig.load(path)


def test_arch_files_in_ofa_format_plain_wrapped_pick_and_pareto_are_read(tmp_path: Path) -> None:
    both = {"arch": ARCH.to_dict(), "ofa_arch": ARCH.to_ofa_dict()}
    for name, data in (("plain", ARCH.to_ofa_dict()), ("bare_r", {**ARCH.to_ofa_dict(), "r": 28}),
                       ("wrapped", {"ofa_arch": ARCH.to_ofa_dict(), "note": "from OFA's finder"}),
                       ("wrapped_arch", {"arch": ARCH.to_ofa_dict()}),
                       ("pick", {**both, "target": {"name": "t"}}),
                       ("pareto", {"pareto": [], "chosen": {**both, "predicted": {}}})):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
        assert read_arch_file(tmp_path / f"{name}.json") == ARCH, name
        if name != "pareto":  # ArchConfig.load takes an arch, bare or under "arch"/"ofa_arch"
            assert ArchConfig.load(tmp_path / f"{name}.json") == ARCH, name


def test_search_files_record_ofa_arch_next_to_arch_and_still_read_back(tmp_path: Path) -> None:
    profile = TargetProfile("unit", "onnxruntime", "fp32", constraints=Constraints(latency_p50_ms=0.4))
    result = search(SPACE, SyntheticAccuracy(SPACE), CostLatencyModel(SPACE), profile, population=12,
                    generations=2, seed=0)
    assert result.chosen is not None
    files = SearchFiles.at(tmp_path, tmp_path, "unit")
    write_search_files(result, files, "unit", {"target": {"name": "unit"}})
    pick = json.loads(files.pick_json.read_text())
    assert pick["ofa_arch"] == result.chosen.arch.to_ofa_dict()
    assert ArchConfig.from_ofa_dict(pick["ofa_arch"]) == ArchConfig.from_dict(pick["arch"])
    pareto = json.loads(files.pareto_json.read_text())
    entries = [*pareto["pareto"], pareto["chosen"]]
    assert len(entries) >= 2
    for entry in entries:
        assert ArchConfig.from_ofa_dict(entry["ofa_arch"]) == ArchConfig.from_dict(entry["arch"])
    assert read_arch_file(files.pick_json) == read_arch_file(files.pareto_json) == result.chosen.arch


def test_eval_cli_takes_an_ofa_arch_file_like_the_same_arch_in_our_format(tiny_run: Path, tmp_path: Path) -> None:
    ours, ofa = tmp_path / "ours.json", tmp_path / "ofa.json"
    ours.write_text(json.dumps(ARCH.to_dict()))
    ofa.write_text(json.dumps(ARCH.to_ofa_dict()))
    results = []
    for path in (ours, ofa):
        res = CliRunner().invoke(cli, ["eval", "--run", str(tiny_run), "--arch", str(path), "--json"])
        assert res.exit_code == 0, res.output
        results.append(json.loads(res.output))
    assert results[0]["arch"] == ARCH.to_dict()
    assert results[1] == results[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({k: v for k, v in _OFA.items() if k != "ks"}, r"missing key\(s\) \['ks'\]"),
        ({**_OFA, "ks": 3}, r"ks: expected a list of integers, got 3"),
        ({**_OFA, "r": []}, r"r: expected the resolution as \[R\] or R"),
        ({**_OFA, "ks": [4, *_OFA["ks"][1:]]}, r"kernel_sizes\[0\]: 4 not allowed.*\(OFA key 'ks'\)"),
        ({**_OFA, "r": [33]}, r"resolution: 33 is not allowed.*\(OFA key 'r'\)"),
    ],
)
def test_eval_cli_refuses_a_malformed_ofa_file_with_exit_2(tiny_run: Path, tmp_path: Path, data: dict,
                                                            message: str) -> None:
    path = tmp_path / "ofa.json"
    path.write_text(json.dumps(data))
    res = CliRunner().invoke(cli, ["eval", "--run", str(tiny_run), "--arch", str(path)])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    assert re.search(rf"error: .*{re.escape(str(path))}: .*{message}", res.output), res.output
