"""Bench providers of Inductive Moment Matching: ``imm`` (trained from scratch, no teacher) and its baseline
``teacher-budget`` (a Gaussian teacher trained for the same wall-clock time).

For each dataset the IMM preset ``imm-<name>`` (``IMM_PRESETS``) is trained (or resumed / reused) under
``ctx.runs_dir`` with ``train_scale`` applied, then sampled at every k in ``--steps`` with the pushforward and
restart samplers (``nfe = k``).

``teacher-budget``: the dataset's teacher preset (``--teacher-preset`` applies) with its length set so that its
training takes as long as the IMM run did on this device: a short probe run (32 batches, after 8 warm-up batches)
measures the teacher's seconds per sample, and total_nimg = IMM seconds / that, rounded to whole batches (the
preset's LR schedule is kept, stretched to the new length). The chosen length is stored in the run folder, so a
re-run reuses the model; the rows' ``train_seconds`` report the time it really took.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fewstep.bench.context import (
    USER_IMM_PRESETS,
    BenchContext,
    ModelEntry,
    config_overrides,
    fit_and_load,
    register,
    user_data,
    user_data_tag,
)
from fewstep.build.datasets import data_kind
from fewstep.build.trainers import build_trainer
from fewstep.config import IMMCfg, RunConfig
from fewstep.presets import get_preset, quick

IMM_PRESETS = {"gmm8d": "imm-gmm8d", "checkerboard2d": "imm-checkerboard", "spiral2d": "imm-spiral",
               "digits8x8": "imm-digits", "mnist14": "imm-mnist14"}
"""The IMM preset ``fewstep bench`` trains for each dataset."""


def imm_config(ctx: BenchContext) -> RunConfig:
    """The resolved IMM RunConfig of the dataset (preset, train_scale, --quick, run folder, device)."""
    data = user_data(ctx)
    if data is None and ctx.dataset not in IMM_PRESETS:
        raise ValueError(f"no IMM preset for {ctx.dataset!r} (have {sorted(IMM_PRESETS)})")
    opts = ctx.options
    preset = IMM_PRESETS[ctx.dataset] if data is None else USER_IMM_PRESETS[data_kind(data)]
    cfg = get_preset(preset) if data is None else replace(get_preset(preset), data=data)
    scale = opts.train_scale if opts.imm_scale is None else opts.imm_scale
    if scale != 1.0:
        t = cfg.train
        total = max(t.batch_size, int(t.total_nimg * scale))
        cfg = replace(cfg, train=replace(t, total_nimg=total, ckpt_every_nimg=max(1, int(t.ckpt_every_nimg * scale))))
    if opts.quick:
        cfg = quick(cfg)
    name = preset + (f"-{user_data_tag(data)}" if data is not None else "") + ("-quick" if opts.quick else "") + (
        f"-x{scale:g}" if scale != 1.0 else "")
    if opts.imm_set:
        sets = imm_overrides(opts)
        cfg = replace(cfg, method=replace(cfg.method, **sets))
        name += "-" + "-".join(f"{k}={v}" for k, v in sets.items())
    return replace(cfg, run_dir=str(ctx.runs_dir / name), train=replace(cfg.train, device=str(ctx.device)))


def imm_overrides(opts) -> dict:
    """``--imm-set`` as IMMCfg overrides."""
    return config_overrides(opts.imm_set, IMMCfg, flag="--imm-set")


def trained_imm(ctx: BenchContext):
    """Train (or resume / reuse) the dataset's IMM preset; cached as ``ctx.cache["imm"]``.

    Returns:
        (TrainedModel, train_seconds): the EMA map, loaded back from the run folder.
    """
    if "imm" not in ctx.cache:
        ctx.cache["imm"] = fit_and_load(build_trainer(imm_config(ctx), progress=False))
    return ctx.cache["imm"]


def _seconds_per_sample(cfg: RunConfig, run_dir: Path, *, warmup: int = 8, batches: int = 32) -> float:
    """Training seconds per sample of ``cfg`` on its device, from a probe of ``batches`` batches after
    ``warmup`` untimed ones (the probe's folder is removed)."""
    import shutil

    b = cfg.train.batch_size
    times = []
    for n in (warmup, warmup + batches):
        probe = replace(cfg, run_dir=str(run_dir), train=replace(cfg.train, total_nimg=n * b, ckpt_every_nimg=10**12,
                                                                  log_every_nimg=10**12))
        shutil.rmtree(run_dir, ignore_errors=True)
        start = time.perf_counter()
        build_trainer(probe, progress=False).fit()
        times.append(time.perf_counter() - start)
    shutil.rmtree(run_dir, ignore_errors=True)
    return max(times[1] - times[0], 1e-9) / (batches * b)


def budget_teacher_config(ctx: BenchContext, seconds: float) -> RunConfig:
    """The dataset's teacher config with total_nimg set so that training takes ``seconds`` (see module doc)."""
    from fewstep.bench.providers import teacher_config

    cfg = teacher_config(ctx)
    t, run_dir = cfg.train, Path(cfg.run_dir + "-budget")
    b, saved = t.batch_size, run_dir / "config.json"
    if saved.exists():
        total = int(json.loads(saved.read_text())["train"]["total_nimg"])
    else:
        per_sample = _seconds_per_sample(cfg, run_dir.with_name(run_dir.name + "-probe"))
        total = max(b, round(seconds / per_sample / b) * b)
    scale = total / t.total_nimg
    train = replace(t, total_nimg=total, warmup_nimg=int(t.warmup_nimg * scale),
                    ckpt_every_nimg=max(b, int(t.ckpt_every_nimg * scale)),
                    log_every_nimg=max(b, int(t.log_every_nimg * scale)))
    return replace(cfg, run_dir=str(run_dir), train=train)


@register("teacher-budget")
def teacher_budget_provider(ctx: BenchContext) -> Iterator[ModelEntry]:
    """The Gaussian teacher trained for the IMM run's wall-clock time, every sampler at every teacher NFE
    (datasets without an IMM preset yield nothing)."""
    if not _has_imm(ctx):
        return
    from fewstep.bench.providers import sampler_entries

    _, imm_seconds = trained_imm(ctx)
    model, secs = fit_and_load(build_trainer(budget_teacher_config(ctx, imm_seconds), progress=False))

    def gen_fn(sampler: str, steps: int):
        return lambda n, g: model.sample(n, steps=steps, generator=g, sampler=sampler)

    yield from sampler_entries(ctx, "teacher-budget", gen_fn, secs)


@register("imm")
def imm_provider(ctx: BenchContext) -> Iterator[ModelEntry]:
    """IMM at every k in --steps, pushforward and restart (datasets without an IMM preset yield nothing)."""
    if not _has_imm(ctx):
        return
    model, secs = trained_imm(ctx)
    for sampler in ("pushforward", "restart"):
        for k in ctx.options.steps:
            def generate(n, g, k=k, sampler=sampler):
                return model.sample(n, steps=k, generator=g, sampler=sampler)

            yield ModelEntry(method="imm", sampler=sampler, steps=k, nfe=k, generate=generate,
                             train_seconds=secs, extra={"imm_options": model.sampler.config()})


def _has_imm(ctx: BenchContext) -> bool:
    """Whether the dataset has an IMM preset (suite data: vectors and images)."""
    data = user_data(ctx)
    return ctx.dataset in IMM_PRESETS if data is None else data_kind(data) in USER_IMM_PRESETS
