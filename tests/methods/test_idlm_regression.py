"""Regression (slow): IDLM on a small text-hmm teacher lowers the bigram TV of the few-step sampler.

A tiny masked teacher is trained on a short HMM source, then distilled with IDLM (the library defaults apart
from length); the K = 2 samples' pooled bigram TV against the exact forward-algorithm marginals must drop.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fewstep.build.datasets import make_hmm_for
from fewstep.build.distill import build_distillation
from fewstep.build.distill_config import distill_config, resolve_distill
from fewstep.build.trainers import build_trainer
from fewstep.metrics.text import ngram_tv
from fewstep.presets import get_preset
from fewstep.samplers.discrete import sample_token_student
from fewstep.samplers.grids import uniform_grid


@pytest.mark.slow
def test_idlm_lowers_bigram_tv_of_the_two_step_sampler(tmp_path):
    base = get_preset("hmm-mdlm")
    cfg = replace(base, data=replace(base.data, length=16), net=replace(base.net, width=64, depth=2),
                  train=replace(base.train, total_nimg=96_000, batch_size=128, warmup_nimg=6_400, device="cpu",
                                ckpt_every_nimg=96_000, log_every_nimg=96_000, ema_halflife_nimg=6_400),
                  run_dir=str(tmp_path / "teacher"))
    trainer = build_trainer(cfg, progress=False)
    trainer.fit()
    dcfg = distill_config(cfg.run_dir, method="idlm", steps=2, run_dir=str(tmp_path / "idlm"))
    dcfg = replace(dcfg, train=replace(dcfg.train, total_nimg=64_000, device="cpu", ema_halflife_nimg=0,
                                       warmup_nimg=1_280, ckpt_every_nimg=64_000, log_every_nimg=64_000),
                   method=replace(dcfg.method, lr=3e-5, latent_dim=0))  # the factorised student (policy: latent)
    dist = build_distillation(resolve_distill(dcfg), progress=False)
    reference = make_hmm_for(cfg.data).ngram_marginals(16, 2)

    def tv(net) -> float:
        x, _ = sample_token_student(net.eval(), (4000, 16), grid=uniform_grid(2),
                                    generator=torch.Generator().manual_seed(0))
        return ngram_tv(x, reference)

    before = tv(dist.method.student)
    dist.fit()
    after = tv(dist.method.student)
    assert after < before - 0.01, (before, after)
