"""Built-in bench providers: the trained Gaussian teacher and the exact GMM oracle (``gmm8d`` only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from fewstep.bench.context import (
    USER_DATASET,
    USER_PRESETS,
    BenchContext,
    ModelEntry,
    fit_and_load,
    register,
    scaled,
    user_data,
    user_data_tag,
)
from fewstep.build.datasets import data_kind, mixture
from fewstep.config import RunConfig
from fewstep.presets import BENCH_PRESETS, get_preset
from fewstep.samplers.gaussian import nfe as sampler_nfe


def teacher_config(ctx: BenchContext) -> RunConfig:
    """The resolved RunConfig of the dataset's teacher (preset, train_scale, --quick, run folder, device)."""
    opts = ctx.options
    data = user_data(ctx)
    if data is not None:  # suite data: the preset of its kind, trained on the user's data
        preset = dict(opts.teacher_presets).get(USER_DATASET, USER_PRESETS[data_kind(data)])
        cfg = replace(get_preset(preset), data=data)
    else:
        preset = dict(opts.teacher_presets).get(ctx.dataset, BENCH_PRESETS[ctx.dataset])
        cfg = get_preset(preset)
        if cfg.data.name != ctx.dataset:
            raise ValueError(f"preset {preset!r} trains on {cfg.data.name}, not {ctx.dataset}")
    cfg = scaled(cfg, opts)
    name = f"{preset}-teacher" + (f"-{user_data_tag(data)}" if data is not None else "") + (
        "-quick" if opts.quick else "")
    if opts.train_scale != 1.0:
        name += f"-x{opts.train_scale:g}"
    return replace(cfg, run_dir=str(ctx.runs_dir / name), train=replace(cfg.train, device=str(ctx.device)))


def trained_teacher(ctx: BenchContext):
    """Train (or resume / reuse) the dataset's teacher preset (``teacher_config``); cached as
    ``ctx.cache["teacher"]``.

    Returns:
        (TrainedModel, train_seconds): the EMA weights, loaded back from the run folder.
    """
    if "teacher" in ctx.cache:
        return ctx.cache["teacher"]
    from fewstep.build.trainers import build_trainer

    ctx.cache["teacher"] = fit_and_load(build_trainer(teacher_config(ctx), progress=False))
    return ctx.cache["teacher"]


def sampler_entries(ctx: BenchContext, method_name: str, gen_fn, train_seconds: float | None,
                    teacher: str | None = None) -> Iterator[ModelEntry]:
    for sampler in ctx.options.samplers:
        for n in ctx.options.teacher_nfe:
            steps = n if sampler != "heun" else (n + 1) // 2
            yield ModelEntry(method=method_name, sampler=sampler, steps=steps, nfe=sampler_nfe(sampler, steps),
                             generate=gen_fn(sampler, steps), train_seconds=train_seconds, teacher=teacher)


@register("teacher")
def teacher_provider(ctx: BenchContext) -> Iterator[ModelEntry]:
    """The trained teacher with every sampler at every teacher NFE (discrete suites: one teacher per process,
    ``providers_discrete``)."""
    from fewstep.bench.suites_text import TEXT_BENCH_DATA

    data = user_data(ctx)
    if ctx.dataset in TEXT_BENCH_DATA or (data is not None and data_kind(data) == "tokens"):
        from fewstep.bench.providers_discrete import discrete_teacher_entries

        yield from discrete_teacher_entries(ctx)
        return
    model, secs = trained_teacher(ctx)

    def gen_fn(sampler: str, steps: int):
        return lambda n, g: model.sample(n, steps=steps, generator=g, sampler=sampler)

    yield from sampler_entries(ctx, "teacher", gen_fn, secs)


@register("oracle")
def oracle_provider(ctx: BenchContext) -> Iterator[ModelEntry]:
    """The exact GMM denoiser (``gmm8d``, or suite ``data`` on a mixture file; other datasets yield nothing)."""
    data = user_data(ctx)
    if ctx.dataset != "gmm8d" and (data is None or data.name != "gmm"):
        return
    from fewstep.data.toys import GMMOracle
    from fewstep.processes.gaussian import GaussianProcess
    from fewstep.samplers.gaussian import sample
    from fewstep.samplers.grids import uniform_grid
    from fewstep.schedules import get_schedule

    schedule = get_schedule(get_preset("gmm8d").process.schedule)
    gmm = mixture(data if data is not None else get_preset("gmm8d").data)
    oracle, process = GMMOracle(gmm, schedule), GaussianProcess(schedule)

    def gen_fn(sampler: str, steps: int):
        return lambda n, g: sample(oracle, process, (n, gmm.dim), sampler=sampler, grid=uniform_grid(steps),
                                   generator=g, device="cpu")

    yield from sampler_entries(ctx, "oracle", gen_fn, None)


