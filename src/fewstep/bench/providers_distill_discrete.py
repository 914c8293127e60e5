"""Bench providers of discrete distillation: ``idlm``, ``idlm-latent`` and ``dmmd`` on the discrete suites.

For every process in ``--processes`` the dataset's teacher is trained or reused (``trained_discrete_teacher``)
and distilled from its run folder:
- ``idlm``: one factorised IDLM student per process; it has no K in training, so that *one* student is sampled
  at every K in ``--steps`` with the teacher's ancestral sampler (rows ``sampler="student"``, ``nfe = K``;
  ``nfe_spent`` records the evaluations actually made, fewer with per-row caching).
- ``idlm-latent``: the same with the latent-mixture student (``latent_dim = 64``; never cached).
- ``dmmd``: one D-MMD student per k in ``--steps`` (its time gaps depend on k), sampled at k steps with the
  method's kernel (``DMMDCfg.kernel``, ``sample-x`` by default: the kernel it is trained for).

Uniform-process rows record the sampling kernel in ``kernel`` (IDLM: ``duo``, the teacher's; D-MMD: its own).

Runs live under ``ctx.runs_dir`` (``<teacher run>-<method>[-k<k>]``) and are resumed or reused; ``--quick``
shrinks them, ``--distill-scale`` (default ``--train-scale``) multiplies their length, ``--distill-set`` sets
method options (e.g. ``aux_every=2``) and ``--distill-seed`` the seed; each changes the run folder's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from fewstep.bench.context import BenchContext, ModelEntry, config_overrides, fit_and_load, register
from fewstep.bench.providers_discrete import discrete_teacher_config, token_generator, trained_discrete_teacher
from fewstep.build.distill import build_distillation
from fewstep.build.distill_config import distill_config, resolve_distill
from fewstep.config import DistillConfig
from fewstep.presets import quick_distill


def discrete_distill_config(ctx: BenchContext, method: str, process: str, k: int) -> DistillConfig:
    """The DistillConfig of one bench student (``method``: idlm, idlm-latent or dmmd)."""
    opts = ctx.options
    run = discrete_teacher_config(ctx, process).run_dir
    base = "dmmd" if method == "dmmd" else "idlm"
    cfg = distill_config(run, method=base, steps=k)
    name = f"{Path(run).name}-{method}" + (f"-k{k}" if base == "dmmd" else "")
    if method == "idlm-latent":
        cfg = replace(cfg, method=replace(cfg.method, latent_dim=64))
    scale = opts.train_scale if opts.distill_scale is None else opts.distill_scale
    if scale != 1.0:
        t = cfg.train
        cfg = replace(cfg, train=replace(t, total_nimg=max(t.batch_size, int(t.total_nimg * scale)),
                                         warmup_nimg=int(t.warmup_nimg * scale),
                                         ema_halflife_nimg=int(t.ema_halflife_nimg * scale),
                                         ckpt_every_nimg=max(1, int(t.ckpt_every_nimg * scale))))
        name += f"-d{scale:g}"
    if opts.distill_set:
        over = config_overrides(opts.distill_set, type(cfg.method), flag="--distill-set", fixed=("name", "steps"))
        cfg = replace(cfg, method=replace(cfg.method, **over))
        name += "-" + "-".join(f"{a}=" + ("_".join(map(str, b)) if isinstance(b, (list, tuple)) else str(b))
                               for a, b in over.items())  # t_band=[0.05,0.95] -> t_band=0.05_0.95
    if opts.distill_seed is not None:
        cfg = replace(cfg, train=replace(cfg.train, seed=opts.distill_seed))
        name += f"-seed{opts.distill_seed}"
    if opts.quick:
        cfg = quick_distill(cfg)
        name += "-quick"
    precision = "bf16" if ctx.device.type == "cuda" else cfg.train.precision
    return resolve_distill(replace(cfg, run_dir=str(ctx.runs_dir / name),
                                   train=replace(cfg.train, device=str(ctx.device), precision=precision)))


def _student(ctx: BenchContext, method: str, process: str, k: int):
    """(TrainedModel, train seconds) of one bench student, trained or reused."""
    key = f"{method}-{process}-k{k if method == 'dmmd' else 0}"
    if key not in ctx.cache:
        ctx.cache[key] = fit_and_load(build_distillation(discrete_distill_config(ctx, method, process, k),
                                                         progress=False))
    return ctx.cache[key]


def _provider(method: str):
    def provide(ctx: BenchContext) -> Iterator[ModelEntry]:
        opts = ctx.options
        for process in opts.processes:
            trained_discrete_teacher(ctx, process)  # train (or reuse) it first: the distillation loads its run
            for k in opts.steps:
                model, secs = _student(ctx, method, process, k)
                entry = ModelEntry(method=method, sampler="student", steps=k, nfe=k, generate=None,
                                   process=process, teacher="trained", train_seconds=secs)
                kernel = opts.student_kernel or model.sampler.kernel
                if process == "uniform":  # masked: both kernels have one law
                    entry.extra["kernel"] = kernel
                entry.generate = token_generator(model, k, "ancestral", ctx, entry.extra, kernel=opts.student_kernel)
                yield entry

    provide.__doc__ = (f"{method}: distilled students of the discrete teachers (one per process"
                       f"{' and k' if method == 'dmmd' else ', sampled at every k'}).")
    return provide


for _name in ("idlm", "idlm-latent", "dmmd"):
    register(_name)(_provider(_name))
