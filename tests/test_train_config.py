"""Training config: TOML parsing, validation messages, presets, overrides, resume compatibility."""

from __future__ import annotations

import tomllib

import pytest

from factory.errors import UserInputError
from factory.training.config import (
    Overrides,
    apply_overrides,
    config_from_dict,
    first_incompatible_key,
    load_config_file,
    load_preset,
    preset_names,
)


def test_presets_load_and_demo_is_small():
    assert {"demo", "full"} <= set(preset_names())
    demo, full = load_preset("demo"), load_preset("full")
    assert sum(p.epochs for p in demo.phases.values()) < sum(p.epochs for p in full.phases.values())
    assert list(demo.phases) == ["teacher", "kernel", "depth", "expand"]


def test_toml_round_trip_is_identity(tmp_path):
    cfg = apply_overrides(load_preset("demo"), Overrides(batch_size=32, sampler="sandwich", seed=7))
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config_file(path) == cfg


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"train": {"batchsize": 3}}, "unknown key(s) ['batchsize']"),
        ({"train": {"sampler": "random"}}, "'uniform', 'sandwich'"),
        ({"train": {"batch_size": "64"}}, "train.batch_size: expected int"),
        ({"train": {"batch_size": 0}}, "train.batch_size = 0"),
        ({"phases": {"width": {"epochs": 1}}}, "allowed (in training order)"),
        ({"phases": {"kernel": {"lr": -1.0}}}, "phases.kernel.lr = -1.0"),
        ({"model": {"space": "resnet"}}, "ofa_mbv3"),
        ({"optim": {}}, "unknown section(s) ['optim']"),
        ({"train": {"sampler": "sandwich", "subnets_per_step": 1}}, "sandwich sampler needs >= 2"),
        ({"data": {"val_fraction": 0.9}}, "data.val_fraction = 0.9 is not allowed; must be in [0.02, 0.5]"),
        ({"train": {"eval_every": "step"}}, "train.eval_every = 'step' is not allowed; allowed: ['epoch', 'phase']"),
    ],
)
def test_bad_config_values_name_key_and_allowed_values(data, fragment):
    with pytest.raises(UserInputError) as info:
        config_from_dict(data, origin="my.toml")
    assert fragment in str(info.value) and "my.toml" in str(info.value)


def test_bad_toml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nbatch_size = 3")
    with pytest.raises(UserInputError, match=r"bad\.toml.*not valid TOML"):
        load_config_file(path)
    with pytest.raises(UserInputError, match="no such config"):
        load_config_file(tmp_path / "none.toml")
    with pytest.raises(UserInputError, match=r"allowed: \['demo', 'full'"):
        load_preset("huge")


def test_overrides_apply_and_are_validated():
    cfg = apply_overrides(load_preset("demo"), Overrides(epochs_per_phase=2, steps_per_epoch=5, device="cpu"))
    assert {p.epochs for p in cfg.phases.values()} == {2} and cfg.train.steps_per_epoch == 5
    with pytest.raises(UserInputError, match="at least one epoch"):
        apply_overrides(cfg, Overrides(epochs_per_phase=0))


def test_incompatible_key_ignores_runtime_settings():
    base = load_preset("demo")
    assert first_incompatible_key(base, apply_overrides(base, Overrides(device="cpu", checkpoint_interval_s=5))) is None
    key, was, now = first_incompatible_key(base, apply_overrides(base, Overrides(batch_size=16)))
    assert (key, was, now) == ("train.batch_size", 128, 16)
    toml = tomllib.loads(base.to_toml())
    toml["phases"]["depth"]["lr"] = 0.5
    assert first_incompatible_key(base, config_from_dict(toml))[0] == "phases.depth.lr"
    toml = tomllib.loads(base.to_toml())
    toml["train"]["eval_every"] = "epoch"  # what is evaluated, not what is trained: a resume may change it
    assert first_incompatible_key(base, config_from_dict(toml)) is None
