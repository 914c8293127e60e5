"""The only place that turns configs into objects (data sources, processes, networks, methods, trainers)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fewstep.config import DataCfg, NetCfg, ProcessCfg, RunConfig, to_dict
from fewstep.data.source import DataSource, SamplerSource, TensorSource
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import get_schedule

TOY_DATASETS = ("gmm8d", "checkerboard2d", "spiral2d")
IMAGE_DATASETS = ("digits8x8", "mnist", "fashion_mnist")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available; use --train.device cpu")
    return torch.device(name)


def build_data(cfg: DataCfg) -> DataSource:
    """A position-addressable training source for ``cfg.name``."""
    from fewstep.data import toys

    if cfg.name == "gmm8d":
        gmm = toys.make_gmm8d()
        return SamplerSource(lambda n, generator: gmm.sample(n, generator=generator), (8,), name="gmm8d")
    if cfg.name == "checkerboard2d":
        return SamplerSource(toys.checkerboard_sample, (2,), name="checkerboard2d")
    if cfg.name == "spiral2d":
        return SamplerSource(toys.spiral_sample, (2,), name="spiral2d")
    from fewstep.data import images

    if cfg.name == "digits8x8":
        x, y = images.load_digits8x8(cfg.split)
        return TensorSource(x, y, name="digits8x8")
    if cfg.name in ("mnist", "fashion_mnist"):
        load = images.load_mnist if cfg.name == "mnist" else images.load_fashion_mnist
        x, y = load(cfg.root, split="train")
        return TensorSource(x, y, name=cfg.name)
    raise ValueError(f"unknown dataset {cfg.name!r}")


def build_process(cfg: ProcessCfg) -> GaussianProcess:
    return GaussianProcess(get_schedule(cfg.schedule), sigma_data=cfg.sigma_data, t_min=cfg.t_min)


def build_net(cfg: NetCfg, shape: tuple[int, ...]) -> nn.Module:
    """Backbone for samples of ``shape`` (without the batch dimension)."""
    if cfg.kind == "mlp":
        dim = 1
        for s in shape:
            dim *= s
        return MLP(dim, width=cfg.width, depth=cfg.depth, two_time=cfg.two_time, num_classes=cfg.num_classes)
    if cfg.kind == "unet":
        if len(shape) != 3:
            raise ValueError(f"a U-Net needs image data [C, H, W], got sample shape {shape}")
        return UNet(shape[0], base=cfg.base, mults=tuple(cfg.mults), blocks=cfg.blocks, attention=cfg.attention,
                    two_time=cfg.two_time, num_classes=cfg.num_classes, dropout=cfg.dropout)
    raise ValueError(f"unknown net kind {cfg.kind!r}")


def build_denoiser(cfg: RunConfig, shape: tuple[int, ...]) -> GaussianDenoiser:
    return GaussianDenoiser(build_net(cfg.net, shape), build_process(cfg.process), cfg.net.parametrization)


def build_method(cfg: RunConfig, shape: tuple[int, ...]) -> GaussianDiffusion:
    m = cfg.method
    return GaussianDiffusion(build_denoiser(cfg, shape), weighting=m.weighting, time_sampling=m.time_sampling,
                             conditional=cfg.net.num_classes > 0)


def seeded_init(make, seed: int):
    """Call ``make()`` (which initialises networks) with the torch RNG seeded from ``seed``, restoring the
    global RNG state afterwards: the same config always starts from the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def build_trainer(cfg: RunConfig, *, allow_config_change: bool = False, progress: bool = True,
                  data: DataSource | None = None):
    """A ready-to-fit Trainer for ``cfg`` (data, method and optimisation from the config)."""
    from fewstep.train.trainer import Trainer

    data = build_data(cfg.data) if data is None else data
    method = seeded_init(lambda: build_method(cfg, data.shape), cfg.train.seed)
    t = cfg.train
    return Trainer(
        method, data, run_dir=Path(cfg.run_dir), seed=t.seed, total_nimg=t.total_nimg, batch_size=t.batch_size,
        lr=t.lr, optimizer=t.optimizer, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
        warmup_nimg=t.warmup_nimg, lr_decay=t.lr_decay, lr_final_ratio=t.lr_final_ratio, grad_clip=t.grad_clip,
        precision=t.precision, ema_halflife_nimg=t.ema_halflife_nimg, ckpt_every_nimg=t.ckpt_every_nimg,
        log_every_nimg=t.log_every_nimg, device=str(resolve_device(t.device)), config=to_dict(cfg),
        allow_config_change=allow_config_change, max_seconds=t.max_seconds, progress=progress)


def load_trained(run_dir: str | Path, *, ema: bool = True, device: str = "cpu"):
    """(config, method, nets) of a trained run: the method rebuilt from config.json, weights from the latest
    checkpoint (EMA by default), networks in eval mode on ``device``."""
    from fewstep.config import load_config
    from fewstep.train.checkpoint import find_weights, load_weights

    cfg = load_config(run_dir)
    method = build_method(cfg, data_shape(cfg.data.name))
    nets = {}
    for role, module in method.trainable().items():
        state, _ = load_weights(find_weights(run_dir, role, ema=ema))
        module.load_state_dict(state)
        nets[role] = module.to(device).eval().requires_grad_(False)
    return cfg, method, nets


def data_shape(name: str) -> tuple[int, ...]:
    """Sample shape (without batch) of a dataset."""
    return {"gmm8d": (8,), "checkerboard2d": (2,), "spiral2d": (2,), "digits8x8": (1, 8, 8),
            "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}[name]
