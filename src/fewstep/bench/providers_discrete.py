"""Bench providers of the discrete suites: masked (MDLM) and uniform-state teachers sampled at every NFE.

``fewstep bench text-hmm|grid2d|text-char`` trains (or reuses) one teacher per process in
``BenchOptions.processes`` from ``DISCRETE_BENCH_PRESETS`` and samples it with the ancestral sampler (masked:
per-row cached, so the network evaluations actually spent are at most L per sample; they are recorded as
``nfe_spent`` beside ``nfe`` = steps). Uncached samplers are capped at ``max_row_evals`` network row
evaluations per configuration, i.e. fewer samples at high NFE (recorded in ``n_samples``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from fewstep.bench.context import (
    USER_DATASET,
    USER_DISCRETE_PRESETS,
    BenchContext,
    ModelEntry,
    fit_and_load,
    scaled,
    user_data,
    user_data_tag,
)
from fewstep.config import RunConfig
from fewstep.presets import get_preset

DISCRETE_BENCH_PRESETS: dict[str, dict[str, str]] = {
    "hmm-v32-l64": {"masked": "hmm-mdlm", "uniform": "hmm-uniform"},
    "grid2d": {"masked": "grid2d-mdlm", "uniform": "grid2d-uniform"},
    "tinyshakespeare-l128": {"masked": "shakespeare-mdlm", "uniform": "shakespeare-uniform"},
}
"""Teacher preset per (benchmark dataset, process); ``--teacher-preset DATASET/PROCESS=PRESET`` overrides."""


def discrete_teacher_config(ctx: BenchContext, process: str) -> RunConfig:
    """The resolved RunConfig of the dataset's ``process`` teacher (preset, train_scale, --quick, run folder)."""
    opts = ctx.options
    presets = dict(opts.teacher_presets)
    data = user_data(ctx)
    if data is not None:  # suite data: the text-hmm preset of the process, trained on the user's tokens
        preset = presets.get(f"{USER_DATASET}/{process}", USER_DISCRETE_PRESETS[process])
        base = get_preset(preset)
        cfg = scaled(replace(base, data=data), opts)
    else:
        preset = presets.get(f"{ctx.dataset}/{process}", DISCRETE_BENCH_PRESETS[ctx.dataset][process])
        cfg = scaled(get_preset(preset), opts)
    if opts.quick:
        cfg = replace(cfg, train=replace(cfg.train, total_nimg=min(cfg.train.total_nimg, 4096),
                                         batch_size=min(cfg.train.batch_size, 128), ckpt_every_nimg=2048))
    name = f"{preset}-teacher" + (f"-{user_data_tag(data)}" if data is not None else "") + (
        "-quick" if opts.quick else "")
    if opts.train_scale != 1.0:
        name += f"-x{opts.train_scale:g}"
    return replace(cfg, run_dir=str(ctx.runs_dir / name), train=replace(cfg.train, device=str(ctx.device)))


def trained_discrete_teacher(ctx: BenchContext, process: str):
    """Train (or resume / reuse) the ``process`` teacher; cached in ``ctx.cache``.

    Returns:
        (TrainedModel, train_seconds): the EMA weights, loaded back from the run folder.
    """
    key = f"teacher-{process}"
    if key not in ctx.cache:
        from fewstep.build.trainers import build_trainer

        ctx.cache[key] = fit_and_load(build_trainer(discrete_teacher_config(ctx, process), progress=False))
    return ctx.cache[key]


def discrete_teacher_entries(ctx: BenchContext) -> Iterator[ModelEntry]:
    """Every process's teacher with every discrete sampler at every teacher NFE."""
    opts = ctx.options
    bad = set(opts.processes) - {"masked", "uniform"}
    if bad:
        raise ValueError(f"unknown processes {sorted(bad)}; choose masked and/or uniform")
    for process in opts.processes:
        model, secs = trained_discrete_teacher(ctx, process)
        cached = process == "masked" and not model.nets["model"].time_conditioned
        for sampler in opts.discrete_samplers:
            if sampler not in ("ancestral", "greedy"):
                raise ValueError(f"unknown discrete sampler {sampler!r}; choose ancestral and/or greedy")
            for steps in opts.teacher_nfe:
                n_default = ctx.cache.get("eval_n", 0)
                n = None
                if not cached and n_default and steps * n_default > opts.max_row_evals:
                    n = max(64, opts.max_row_evals // steps)
                entry = ModelEntry(method="teacher", sampler=sampler, steps=steps, nfe=steps, generate=None,
                                   process=process, train_seconds=secs, n_samples=n)
                entry.generate = token_generator(model, steps, sampler, ctx, entry.extra)
                yield entry


def token_generator(model, steps: int, sampler: str, ctx: BenchContext, extra: dict, *, kernel: str | None = None):
    """``(n, generator) -> tokens`` of a ``TrainedModel`` (teacher or student) at ``steps``; records the network
    evaluations spent in ``extra``."""
    final = "greedy" if sampler == "greedy" else "ancestral"
    options = {} if kernel is None else {"kernel": kernel}

    def generate(n, g):
        tokens, stats = model.sample(n, steps=steps, generator=g, final=final, return_stats=True, **options)
        extra["nfe_spent"] = stats["nfe"]
        extra["steps_with_call"] = stats["steps_with_call"]
        return tokens

    return generate
