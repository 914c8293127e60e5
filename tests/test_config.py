"""Configs (``fewstep.config``): JSON round trips, defaults of older files, clear errors."""

from __future__ import annotations

import json

import pytest

from fewstep.config import (
    DistillConfig,
    IDLMCfg,
    IMMCfg,
    MDLMCfg,
    RunConfig,
    defaults_like,
    from_dict,
    load_any_config,
    load_config,
    to_dict,
)


@pytest.mark.parametrize("cfg", [RunConfig(), RunConfig(method=IMMCfg(group_size=8)),
                                 DistillConfig(), DistillConfig(method=IDLMCfg(steps=2), discrete=MDLMCfg())])
def test_round_trip_through_json(cfg, tmp_path):
    d = json.loads(json.dumps(to_dict(cfg)))
    back = from_dict(type(cfg), d)
    assert back == cfg
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert load_any_config(tmp_path) == cfg


def test_unknown_keys_and_methods_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'lrr' for TrainCfg"):
        from_dict(RunConfig, {"train": {"lrr": 1}})
    with pytest.raises(ValueError, match="unknown training method 'gan'"):
        from_dict(RunConfig, {"method": {"name": "gan"}})
    (tmp_path / "config.json").write_text(json.dumps(to_dict(DistillConfig())))
    with pytest.raises(ValueError, match="belongs to a distillation run"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config at"):
        load_config(tmp_path / "nothing")


def test_a_missing_field_reads_as_its_default():
    d = to_dict(RunConfig())
    del d["method"]["weighting"]
    assert from_dict(RunConfig, d) == RunConfig()
    defaults = defaults_like(RunConfig(method=IMMCfg()))
    assert defaults["method"]["group_size"] == IMMCfg().group_size and "name" in defaults["method"]


def test_imm_digits_presets_have_a_teacher_of_their_width():
    """The IMM digits target compares with a teacher of the same width: each IMM preset has its teacher preset."""
    from fewstep.presets import get_preset

    for imm, teacher in (("imm-digits", "digits-wide"), ("imm-digits-small", "digits")):
        i, t = get_preset(imm), get_preset(teacher)
        assert (i.net.width, i.net.depth, i.data) == (t.net.width, t.net.depth, t.data), (imm, teacher)
    assert get_preset("imm-digits").net.width > get_preset("imm-digits-small").net.width
