"""Distillation configs (``fewstep.build.distill_config``): defaults from the teacher, one-time resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fewstep.build.distill_config import ORACLE, distill_config, resolve_distill, teacher_config
from fewstep.build.trainers import build_trainer
from fewstep.config import DataCfg, DiffusionCfg, MDLMCfg, NetCfg, RunConfig, TrainCfg


def _teacher(tmp_path, method=None, data=None, net=None):
    cfg = RunConfig(data=data or DataCfg(name="gmm8d"), net=net or NetCfg(kind="mlp", width=16, depth=1),
                    method=method or DiffusionCfg(weighting="sigmoid"),
                    train=TrainCfg(total_nimg=256, batch_size=128, device="cpu", ckpt_every_nimg=256),
                    run_dir=str(tmp_path / "teacher"))
    build_trainer(cfg, progress=False).fit()
    return cfg.run_dir


def test_oracle_default_and_errors(tmp_path):
    cfg = distill_config(ORACLE, steps=2)
    assert cfg.data.name == "gmm8d" and cfg.method.steps == 2 and cfg.method.weighting is None
    with pytest.raises(ValueError, match="unknown distillation method"):
        distill_config(ORACLE, method="consistency")
    with pytest.raises(ValueError, match="distills a trained discrete teacher"):
        distill_config(ORACLE, method="idlm")
    with pytest.raises(ValueError, match="--steps must be a positive integer"):
        resolve_distill(replace(cfg, method=replace(cfg.method, steps=0)))
    with pytest.raises(FileNotFoundError, match="no teacher run at"):
        teacher_config(str(tmp_path / "missing"))


def test_resolution_fills_the_teacher_and_policy_fields_once(tmp_path):
    run = _teacher(tmp_path)
    cfg = distill_config(run, method="mm-alternating", steps=8)
    assert cfg.method.gap == "auto" and cfg.method.lr is None
    resolved = resolve_distill(cfg)
    m = resolved.method
    assert m.weighting == "sigmoid"  # from the teacher's config.json
    assert (m.gap, m.warm_start_steps) == ("uniform", 0) and m.lr == pytest.approx(0.3 * cfg.train.lr)
    assert resolve_distill(resolved) == resolved  # idempotent: resolving twice changes nothing
    with pytest.raises(ValueError, match="net differs from the teacher's"):
        resolve_distill(replace(cfg, net=NetCfg(kind="mlp", width=32, depth=1)))


def test_a_discrete_teacher_takes_idlm_or_dmmd(tmp_path):
    run = _teacher(tmp_path, method=MDLMCfg(), data=DataCfg(name="grid2d"),
                   net=NetCfg(kind="text_dit", width=16, depth=1, heads=2))
    with pytest.raises(ValueError, match="discrete .*teacher: distill it with --method idlm or dmmd"):
        resolve_distill(replace(distill_config(ORACLE, steps=4), teacher=run, data=DataCfg(name="grid2d")))
    cfg = resolve_distill(distill_config(run, method="idlm", steps=2))
    assert cfg.discrete == MDLMCfg() and cfg.method.latent_dim == 64  # the policy's masked latent student


def test_builders_take_only_resolved_configs(tmp_path):
    from fewstep.build.distill import build_distillation, oracle_net
    from fewstep.build.distill_config import is_resolved

    cfg = distill_config(ORACLE, steps=4, run_dir=str(tmp_path / "s"))
    assert not is_resolved(cfg) and is_resolved(resolve_distill(cfg))
    for build in (build_distillation, oracle_net):
        with pytest.raises(ValueError, match=r"not resolved: pass resolve_distill\(cfg\)"):
            build(cfg)
