"""Bench providers of Moment Matching distillation: ``mm-alternating`` and ``mm-instant``.

For every k in ``--steps`` a k-step student is distilled (``build_distillation``) from the dataset's trained
teacher (``trained_teacher``; rows tagged ``teacher="trained"``) and, on ``gmm8d``, also from the exact oracle
(``teacher="oracle"``; student and auxiliary start from one net regressed on the oracle, cached once per runs
folder). Runs live under ``ctx.runs_dir`` and are resumed or reused like the teacher's; ``--quick`` shrinks
them (``quick_distill``) and ``train_scale`` multiplies their length. Each student is sampled with its own
k-step sampler (``sampler="student"``, ``nfe = k``); ``train_seconds`` is the distillation's wall time (the
oracle regression time is the extra field ``init_seconds``, the student's warm start (when the policy turns it on)
``warm_start_seconds``). On CUDA the distillations train under bf16 autocast (``DISTILL_TRAIN`` is fp32 for
the CPU). ``distill_scale``, ``distill_set`` and ``distill_seed`` change the students (and name their run
folders), e.g. for the posterior-vs-fresh re-noising ablation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fewstep.bench.context import (
    BenchContext,
    ModelEntry,
    config_overrides,
    fit_and_load,
    register,
    user_data,
    user_data_tag,
)
from fewstep.bench.providers import teacher_config, trained_teacher
from fewstep.build.distill import build_distillation, oracle_net
from fewstep.build.distill_config import ORACLE, distill_config, resolve_distill
from fewstep.config import DistillConfig, MMCfg, TrainCfg
from fewstep.presets import quick_distill


def mm_config(ctx: BenchContext, method: str, k: int, teacher: str) -> DistillConfig:
    """The DistillConfig of one bench student (``teacher``: ``"trained"`` or ``"oracle"``)."""
    opts = ctx.options
    if teacher == "trained":
        run = teacher_config(ctx).run_dir
        cfg, name = distill_config(run, method=method, steps=k), Path(run).name
    else:
        cfg = distill_config(ORACLE, method=method, steps=k)
        data = user_data(ctx)
        if data is not None:  # suite data on a mixture file: its exact oracle
            cfg = replace(cfg, data=data)
        name = (f"{user_data_tag(data)}-oracle" if data is not None else "gmm8d-oracle") + (
            "-quick" if opts.quick else "")
        if opts.train_scale != 1.0:
            name += f"-x{opts.train_scale:g}"
    scale = opts.train_scale if opts.distill_scale is None else opts.distill_scale
    if scale != 1.0:
        t = cfg.train
        cfg = replace(cfg, train=replace(t, total_nimg=max(t.batch_size, int(t.total_nimg * scale)),
                                         warmup_nimg=int(t.warmup_nimg * scale),
                                         ckpt_every_nimg=max(1, int(t.ckpt_every_nimg * scale))))
        if opts.distill_scale is not None:
            name += f"-d{scale:g}"
    if opts.distill_set:
        method_set, train_set = distill_overrides(opts.distill_set)
        cfg = replace(cfg, method=replace(cfg.method, **method_set), train=replace(cfg.train, **train_set))
        name += "-" + "-".join(f"{k}={v}" for k, v in flat_distill_overrides(opts.distill_set).items())
    if opts.distill_seed is not None:
        cfg = replace(cfg, train=replace(cfg.train, seed=opts.distill_seed))
        name += f"-seed{opts.distill_seed}"
    if opts.quick:
        cfg = quick_distill(cfg)
    precision = "bf16" if ctx.device.type == "cuda" else cfg.train.precision  # bf16 autocast on GPUs
    return resolve_distill(replace(cfg, run_dir=str(ctx.runs_dir / f"{name}-{method}-k{k}"),
                                   train=replace(cfg.train, device=str(ctx.device), precision=precision)))


def distill_overrides(pairs: tuple[tuple[str, str], ...]) -> tuple[dict, dict]:
    """``--distill-set`` pairs -> (MMCfg overrides, TrainCfg overrides); training fields are prefixed
    ``train.`` (e.g. ``train.ema_halflife_nimg=25600``)."""
    method = tuple((k, v) for k, v in pairs if not k.startswith("train."))
    train = tuple((k.removeprefix("train."), v) for k, v in pairs if k.startswith("train."))
    return (config_overrides(method, MMCfg, flag="--distill-set", fixed=("name", "mode", "steps")),
            config_overrides(train, TrainCfg, flag="--distill-set train.",
                             fixed=("device", "precision", "total_nimg", "seed", "betas")))


def flat_distill_overrides(pairs: tuple[tuple[str, str], ...]) -> dict:
    method, train = distill_overrides(pairs)
    return {**method, **{f"train.{k}": v for k, v in train.items()}}


def _entry(ctx: BenchContext, method: str, k: int, teacher: str) -> ModelEntry:
    cfg = mm_config(ctx, method, k, teacher)
    extra, cache = {}, None
    if teacher == "oracle":
        data = user_data(ctx)
        tag = user_data_tag(data) if data is not None else "gmm8d"
        cache = ctx.runs_dir / f"{tag}-oracle-regressed{'-quick' if ctx.options.quick else ''}.safetensors"
        _, extra["init_seconds"] = oracle_net(cfg, cache)
        if cfg.method.mode == "alternating":  # the oracle itself runs on the CPU only
            cfg = replace(cfg, train=replace(cfg.train, device="cpu"))
    trainer = build_distillation(cfg, progress=False, regress_cache=cache)
    model, secs = fit_and_load(trainer)
    extra["warm_start_seconds"] = float(getattr(trainer, "warm_start_seconds", 0.0))
    extra["distill_seed"] = cfg.train.seed
    if ctx.options.distill_set:
        extra["distill_options"] = flat_distill_overrides(ctx.options.distill_set)

    def generate(n, g):
        return model.sample(n, steps=k, generator=g)

    return ModelEntry(method=method, sampler="student", steps=k, nfe=k, generate=generate, teacher=teacher,
                      train_seconds=secs, extra=extra)


def _provider(method: str):
    def provide(ctx: BenchContext) -> Iterator[ModelEntry]:
        data = user_data(ctx)
        has_oracle = ctx.dataset == "gmm8d" or (data is not None and data.name == "gmm")
        teachers = [t for t in ctx.options.distill_teachers if t == "trained" or has_oracle]
        for teacher in teachers:
            if teacher == "trained":
                trained_teacher(ctx)  # train (or reuse) it first: the distillation loads its run folder
            for k in ctx.options.steps:
                yield _entry(ctx, method, k, teacher)

    provide.__doc__ = f"{method}: one distilled student per k in --steps, from the trained teacher and the oracle."
    return provide


register("mm-alternating")(_provider("mm-alternating"))
register("mm-instant")(_provider("mm-instant"))
