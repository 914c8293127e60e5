"""Reloading runs: config.json must agree with the config stored in the weights (build/runs.py)."""

from __future__ import annotations

import json

import pytest
import torch

import fewstep
from fewstep.build.runs import load_model


def _tiny(tmp_path):
    return fewstep.train("tiny", run_dir=tmp_path / "run", progress=False, total_nimg=512, batch_size=256,
                         ckpt_every_nimg=512)


def test_an_edited_schedule_in_config_json_is_refused_naming_the_field(tmp_path):
    """Editing config.json (cosine -> flow) would sample the weights with the wrong process; the reload names
    the field, both values and the weights file in one line."""
    _tiny(tmp_path)
    path = tmp_path / "run" / "config.json"
    cfg = json.loads(path.read_text())
    assert cfg["process"]["schedule"] == "cosine"
    cfg["process"]["schedule"] = "flow"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r'process.schedule = "flow" but the weights .*model.ema.safetensors '
                                         r'were trained with process.schedule = "cosine"') as e:
        load_model(tmp_path / "run")
    assert "\n" not in str(e.value)


def test_paths_and_training_settings_may_change_without_refusal(tmp_path):
    """Moving a run (run_dir) or a longer schedule (train.*) is not a change of the model."""
    model = _tiny(tmp_path)
    path = tmp_path / "run" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["run_dir"], cfg["train"]["total_nimg"] = "elsewhere", 10**6
    path.write_text(json.dumps(cfg))
    again = load_model(tmp_path / "run")
    a = model.sample(64, steps=4, generator=torch.Generator().manual_seed(0))
    b = again.sample(64, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
