"""What bench providers and the runner share: the options of ``fewstep bench``, the context a provider sees,
the ``ModelEntry`` it yields and the provider registry (``register``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from fewstep.build.runs import TrainedModel, load_model
from fewstep.config import DataCfg, RunConfig
from fewstep.presets import quick


@dataclass(frozen=True)
class BenchOptions:
    """Options of ``fewstep bench`` (see ``fewstep bench --help``)."""

    suite: str
    methods: tuple[str, ...] = ("teacher", "oracle")
    steps: tuple[int, ...] = (1, 2, 4, 8)
    """Sampling steps of few-step methods."""
    teacher_nfe: tuple[int, ...] = (1, 2, 4, 8, 16, 64, 256, 1024)
    """NFEs at which the teacher (and oracle) are sampled."""
    samplers: tuple[str, ...] = ("ancestral", "ddim")
    """Teacher samplers."""
    quick: bool = False
    device: str = "auto"
    out: str = "bench_out"
    seed: int = 0
    """Evaluation seed (training seeds come from the presets)."""
    repeats: int = 8
    """Independent sample sets per configuration (standard errors come from them)."""
    repeat_budget: int = 512
    """At NFE n use clamp(repeat_budget / n, min_repeats, repeats) repeats (bounds CPU time at 1024 NFE)."""
    min_repeats: int = 2
    datasets: tuple[str, ...] | None = None
    """Subset of the suite's datasets."""
    runs_dir: str | None = None
    """Where trained models live (default OUT/runs); re-running resumes or reuses them."""
    teacher_presets: tuple[tuple[str, str], ...] = ()
    """(dataset, preset) pairs overriding the default teacher preset of a dataset."""
    train_scale: float = 1.0
    """Multiplies every preset's training length (the demo uses a fraction)."""
    distill_scale: float | None = None
    """Multiplies the distillations' length (None: ``train_scale``)."""
    imm_scale: float | None = None
    """Multiplies IMM's training length (None: ``train_scale``)."""
    distill_set: tuple[tuple[str, str], ...] = ()
    """(field, JSON value) overrides of the distillation method config (e.g. ``("renoise", '"fresh"')``)."""
    imm_set: tuple[tuple[str, str], ...] = ()
    """(field, JSON value) overrides of the IMM method config (e.g. ``("group_size", "8")``)."""
    distill_teachers: tuple[str, ...] = ("trained", "oracle")
    """Teachers the students distill from: the trained teacher and (gmm8d only) the exact oracle."""
    distill_seed: int | None = None
    """Training seed of the distillations (None: the default config's)."""
    n_samples: int | None = None
    """Generated samples per repeat (None: the suite's default)."""
    processes: tuple[str, ...] = ("masked", "uniform")
    """Discrete suites: the noise processes whose teachers are trained and sampled."""
    discrete_samplers: tuple[str, ...] = ("ancestral",)
    """Discrete suites: teacher samplers (``ancestral``; ``greedy`` = greedy last step)."""
    max_row_evals: int = 1_000_000
    """Discrete suites: cap on network row evaluations per configuration (fewer samples at high NFE without a
    cache; recorded in ``n_samples``)."""
    evaluator_steps: int | None = None
    """text-char: training steps of the causal evaluator (None: its default, 2,000; --quick: 50). A different
    value is a different (separately cached) evaluator, so GenPPLs are comparable only at equal settings."""
    student_kernel: str | None = None
    data: DataCfg | None = None
    """Suite ``data``: the user's data source (``--data.name`` / ``--data.root``, resolved by the runner)."""
    """Discrete suites: uniform kernel of the distilled students' sampler (None: the one their run records)."""
    command: str = ""


@dataclass
class ModelEntry:
    """One sampled configuration of one model."""

    method: str
    sampler: str
    steps: int
    nfe: int
    generate: Callable[[int, torch.Generator], Tensor]
    process: str = "gaussian"
    teacher: str | None = None
    train_seconds: float | None = None
    extra: dict = field(default_factory=dict)
    """Extra row fields; ``generate`` may update it (e.g. the NFE a cached sampler actually spent)."""
    n_samples: int | None = None
    """Samples per repeat (None: the evaluator's)."""


def config_overrides(pairs: tuple[tuple[str, str], ...], cls: type, *, flag: str,
                     fixed: tuple[str, ...] = ("name",)) -> dict:
    """``(field, JSON value)`` pairs -> overrides of the dataclass ``cls``; values that are not JSON are bare
    words (``renoise=fresh``). Unknown or ``fixed`` fields are a clear error naming ``flag``."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    out = {}
    for k, v in pairs:
        if k not in fields:
            kind = cls.__name__.removesuffix("Cfg")
            raise ValueError(f"{flag}: {k!r} is not a settable {kind} option; choose from {sorted(fields)}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@dataclass
class BenchContext:
    """What providers see: the options, the dataset, the device and a cache shared between providers."""

    options: BenchOptions
    dataset: str
    device: torch.device
    runs_dir: Path
    cache: dict = field(default_factory=dict)


Provider = Callable[[BenchContext], Iterator[ModelEntry]]
PROVIDERS: dict[str, Provider] = {}


def register(name: str) -> Callable[[Provider], Provider]:
    """Decorator registering a bench provider under a method name."""

    def deco(fn: Provider) -> Provider:
        PROVIDERS[name] = fn
        return fn

    return deco


def scaled(cfg: RunConfig, opts) -> RunConfig:
    """``cfg`` with its training length times ``opts.train_scale`` and shrunk by ``--quick``."""
    if opts.train_scale != 1.0:
        t = cfg.train
        cfg = replace(cfg, train=replace(t, total_nimg=int(t.total_nimg * opts.train_scale),
                                         ckpt_every_nimg=max(1, int(t.ckpt_every_nimg * opts.train_scale))))
    return quick(cfg) if opts.quick else cfg


def fit_and_load(trainer) -> tuple[TrainedModel, float]:
    """Fit (or resume / reuse) ``trainer``'s run, then load it back from its folder with ``load_model``: the
    bench samples every model through the one path ``fewstep sample`` and the Python API use.

    Returns:
        (model, train_seconds).
    """
    summary = trainer.fit()
    return load_model(trainer.run_dir, device=trainer.device), float(summary["train_seconds"])


USER_DATASET = "data"
"""The one dataset of suite ``data``: the user's ``BenchOptions.data``."""
USER_PRESETS = {"vectors": "gmm8d", "images": "digits"}
"""Teacher preset of suite ``data`` by data kind (its net and training length; the data replaced)."""
USER_DISCRETE_PRESETS = {"masked": "hmm-mdlm", "uniform": "hmm-uniform"}
"""Discrete teacher presets of suite ``data`` (token data) by process."""
USER_IMM_PRESETS = {"vectors": "imm-gmm8d", "images": "imm-digits-small"}
"""IMM presets of suite ``data`` by data kind (images: the net width of the ``digits`` teacher it is compared with)."""


def user_data(ctx: BenchContext) -> DataCfg | None:
    """The user's (resolved) data config when the context's dataset is suite ``data``'s, else None."""
    if ctx.dataset != USER_DATASET:
        return None
    if ctx.options.data is None:
        raise ValueError("suite data needs --data.name NAME --data.root PATH (your own data)")
    return ctx.options.data


def user_data_tag(data: DataCfg) -> str:
    """A run-folder tag naming the user's data by its kind, file stem and content hash."""
    from pathlib import Path

    if data.root is None:  # a generated source (text-hmm): its canonical name holds its settings
        from fewstep.build.datasets import dataset_id

        return dataset_id(data)
    return f"{data.name}-{Path(data.root).stem}-{data.digest or 'x'}"
