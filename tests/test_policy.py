"""The measured default policy (``fewstep.policy``): rules by method, k and data kind; explicit settings win;
the resolved values are what a distillation's config records."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from fewstep.config import DISTILL_TRAIN, DataCfg, DMMDCfg, IDLMCfg, MMCfg, NetCfg, UniformCfg
from fewstep.policy import (
    data_kind,
    mm_gap,
    mm_student_lr,
    mm_warm_start_steps,
    resolve_dmmd,
    resolve_idlm,
    resolve_mm,
)

VEC, IMG = DataCfg(name="gmm8d"), DataCfg(name="digits8x8")


def test_data_kinds() -> None:
    assert [data_kind(DataCfg(name=n)) for n in ("gmm8d", "spiral2d", "digits8x8", "mnist", "text-hmm", "grid2d")] \
        == ["vectors", "vectors", "images", "images", "tokens", "tokens"]


@pytest.mark.parametrize("mode", ["alternating", "instant"])
def test_mm_rules(mode: str) -> None:
    assert [mm_gap(mode, k, "images") for k in (1, 2, 4, 8)] == ["uniform", "uniform", "fixed", "fixed"]
    assert {mm_gap(mode, k, "vectors") for k in (1, 2, 4, 8)} == {"uniform"}
    warm_vec = [mm_warm_start_steps(mode, k, "vectors") for k in (1, 2, 4, 8)]
    assert warm_vec == ([500, 500, 0, 0] if mode == "alternating" else [500, 500, 500, 0])
    assert [mm_warm_start_steps(mode, k, "images") for k in (1, 2, 4, 8)] == [500, 500, 500, 0]
    assert mm_student_lr(mode, "vectors", 1e-4) == pytest.approx(3e-5 if mode == "alternating" else 1e-4)
    assert mm_student_lr(mode, "images", 1e-4) == 1e-4


def test_resolve_mm_fills_only_auto_fields() -> None:
    m = resolve_mm(MMCfg(mode="alternating", steps=8), IMG, DISTILL_TRAIN)
    assert (m.gap, m.warm_start_steps, m.lr) == ("fixed", 0, DISTILL_TRAIN.lr)
    m = resolve_mm(MMCfg(mode="alternating", steps=8, gap="uniform", warm_start_steps=7, lr=1e-3), IMG,
                   DISTILL_TRAIN)
    assert (m.gap, m.warm_start_steps, m.lr) == ("uniform", 7, 1e-3)
    assert resolve_mm(m, IMG, DISTILL_TRAIN) == m  # idempotent: a resolved config stays as it is
    m = resolve_mm(MMCfg(mode="alternating", steps=8), VEC, replace(DISTILL_TRAIN, lr=2e-4))
    assert m.lr == pytest.approx(6e-5)  # scales with --train.lr


def test_resolve_idlm_latent_student_for_masked_only() -> None:
    m = resolve_idlm(IDLMCfg(), "masked", 64)
    assert (m.latent_dim, m.latent_init_std, m.latent_lr_mult) == (64, 0.002, 10.0)
    g = resolve_idlm(IDLMCfg(), "masked", 2)  # two-token grid2d: the zero-initialised latent map
    assert (g.latent_dim, g.latent_init_std, g.latent_lr_mult) == (64, 0.0, 1.0)
    u = resolve_idlm(IDLMCfg(), "uniform", 64)
    assert (u.latent_dim, u.latent_init_std, u.latent_lr_mult) == (0, 0.0, 1.0)
    f = resolve_idlm(IDLMCfg(latent_dim=0), "masked", 64)  # an explicit factorised student stays factorised
    assert (f.latent_dim, f.latent_init_std, f.latent_lr_mult) == (0, 0.0, 1.0)
    s = resolve_idlm(IDLMCfg(latent_init_std=0.01), "masked", 64)
    assert (s.latent_dim, s.latent_init_std, s.latent_lr_mult) == (64, 0.01, 10.0)
    assert resolve_idlm(s, "masked", 64) == s


def test_resolve_dmmd_latent_student_off_its_saddle_for_uniform() -> None:
    u = resolve_dmmd(DMMDCfg(), "uniform")
    assert (u.latent_dim, u.latent_init_std, u.latent_lr_mult) == (64, 0.002, 10.0)
    m = resolve_dmmd(DMMDCfg(), "masked")
    assert (m.latent_dim, m.latent_init_std, m.latent_lr_mult) == (64, 0.0, 1.0)
    i = resolve_dmmd(DMMDCfg(), "uniform", has_latent_input=False)  # an imported MDLM / Duo transformer
    assert (i.latent_dim, i.latent_init_std, i.latent_lr_mult) == (0, 0.0, 1.0)
    f = resolve_dmmd(DMMDCfg(latent_dim=0), "uniform")  # an explicit factorised student stays factorised
    assert (f.latent_dim, f.latent_init_std, f.latent_lr_mult) == (0, 0.0, 1.0)
    s = resolve_dmmd(DMMDCfg(latent_lr_mult=3.0), "uniform")
    assert (s.latent_dim, s.latent_init_std, s.latent_lr_mult) == (64, 0.002, 3.0)
    assert resolve_dmmd(s, "uniform") == s


def test_dmmd_config_stored_before_the_policy_keeps_its_student() -> None:
    """A D-MMD config.json written before the policy covered D-MMD stores latent_dim None with init 0 / LR x1:
    loading it must rebuild the factorised uniform student it trained (the old rule), not the new default."""
    from fewstep.build.distill_config import student_latent_dim, with_dmmd_policy
    from fewstep.config import DistillConfig

    old = DistillConfig(teacher="t", data=DataCfg(name="text-hmm"), net=NetCfg(kind="text_dit"), discrete=UniformCfg(),
                        method=DMMDCfg(latent_dim=None, latent_init_std=0.0, latent_lr_mult=1.0))
    assert with_dmmd_policy(old) == old and student_latent_dim(old) == 0
    new = with_dmmd_policy(replace(old, method=DMMDCfg()))
    assert student_latent_dim(new) == 64 and new.method.latent_init_std == 0.002
    # a new distillation that sets the init and LR itself still gets the policy's latent width
    set_both = with_dmmd_policy(old, new_run=True)
    assert student_latent_dim(set_both) == 64 and set_both.method.latent_init_std == 0.0


def test_distill_dry_run_records_the_resolved_policy() -> None:
    """A plain ``fewstep distill`` resolves the auto fields into its config (reproducible from config.json)."""
    out = subprocess.run([sys.executable, "-m", "fewstep.cli", "distill", "--method", "mm-alternating", "--teacher",
                          "oracle", "--steps", "8", "--dry-run"], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)["method"]
    assert (m["gap"], m["warm_start_steps"], m["lr"], m["data_grad"]) == ("uniform", 0, pytest.approx(3e-5), "running")
