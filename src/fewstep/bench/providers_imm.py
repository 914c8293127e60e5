"""Bench provider of Inductive Moment Matching: ``imm`` (trained from scratch, no teacher).

For each dataset the IMM preset ``imm-<name>`` (``IMM_PRESETS``; ``--teacher-preset``-style overrides are not
needed: IMM has no teacher) is trained (or resumed / reused) under ``ctx.runs_dir`` with ``train_scale`` applied,
then sampled at every k in ``--steps`` with the pushforward and restart samplers (``nfe = k``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from fewstep.bench.runner import BenchContext, ModelEntry, register
from fewstep.build import build_trainer, data_shape
from fewstep.config import RunConfig
from fewstep.presets import get_preset, quick

IMM_PRESETS = {"gmm8d": "imm-gmm8d", "checkerboard2d": "imm-checkerboard", "spiral2d": "imm-spiral"}
"""The IMM preset ``fewstep bench`` trains for each dataset."""


def imm_config(ctx: BenchContext) -> RunConfig:
    """The resolved IMM RunConfig of the dataset (preset, train_scale, --quick, run folder, device)."""
    if ctx.dataset not in IMM_PRESETS:
        raise ValueError(f"no IMM preset for {ctx.dataset!r} (have {sorted(IMM_PRESETS)})")
    opts, preset = ctx.options, IMM_PRESETS[ctx.dataset]
    cfg = get_preset(preset)
    if opts.train_scale != 1.0:
        t = cfg.train
        total = max(t.batch_size, int(t.total_nimg * opts.train_scale))
        cfg = replace(cfg, train=replace(t, total_nimg=total, ckpt_every_nimg=max(1, int(t.ckpt_every_nimg *
                                                                                         opts.train_scale))))
    if opts.quick:
        cfg = quick(cfg)
    name = preset + ("-quick" if opts.quick else "") + (f"-x{opts.train_scale:g}" if opts.train_scale != 1.0 else "")
    return replace(cfg, run_dir=str(ctx.runs_dir / name), train=replace(cfg.train, device=str(ctx.device)))


@register("imm")
def imm_provider(ctx: BenchContext) -> Iterator[ModelEntry]:
    """IMM at every k in --steps, pushforward and restart (datasets without an IMM preset yield nothing)."""
    if ctx.dataset not in IMM_PRESETS:
        return
    trainer = build_trainer(imm_config(ctx), progress=False)
    summary = trainer.fit()
    method, nets = trainer.method, {k: v.eval().requires_grad_(False) for k, v in trainer.ema.items()}
    shape = data_shape(ctx.dataset)
    for sampler in ("pushforward", "restart"):
        for k in ctx.options.steps:
            def generate(n, g, k=k, sampler=sampler):
                return method.generate(n, steps=k, nets=nets, generator=g, shape=shape, device=ctx.device,
                                       sampler=sampler)

            yield ModelEntry(method="imm", sampler=sampler, steps=k, nfe=k, generate=generate,
                             train_seconds=float(summary["train_seconds"]))
