"""The teacher-kind registry: config -> process, network, denoiser and training method of a run.

A teacher kind is keyed by the ``name`` of its method config (``diffusion``, ``imm``, ``mdlm``, ``uniform``)
and says whether its process is discrete and how to build its ``Method`` from a ``RunConfig`` and the sample
shape. :func:`build_method` dispatches on it; :func:`register_teacher_kind` adds one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace

from torch import nn

from fewstep.build.datasets import dataset_names, is_token_data, resolve_data
from fewstep.config import DiffusionCfg, DistillConfig, IMMCfg, MDLMCfg, NetCfg, ProcessCfg, RunConfig
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import get_schedule, schedule_from_cfg


@dataclass(frozen=True)
class TeacherKind:
    """One registered kind of trainable model: ``build(cfg, shape)`` returns its ``Method``."""

    name: str
    discrete: bool
    build: Callable[[RunConfig, tuple[int, ...]], nn.Module]


TEACHER_KINDS: dict[str, TeacherKind] = {}


def register_teacher_kind(kind: TeacherKind, *, overwrite: bool = False) -> TeacherKind:
    """Add ``kind`` to the registry (a name already taken is an error unless ``overwrite``)."""
    if kind.name in TEACHER_KINDS and not overwrite:
        raise ValueError(f"teacher kind {kind.name!r} is already registered")
    TEACHER_KINDS[kind.name] = kind
    return kind


def get_teacher_kind(name: str) -> TeacherKind:
    try:
        return TEACHER_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(TEACHER_KINDS)}") from None


def is_discrete(cfg: RunConfig) -> bool:
    """Whether a run trains a discrete process (MDLM / uniform)."""
    return get_teacher_kind(cfg.method.name).discrete


def build_method(cfg: RunConfig, shape: tuple[int, ...]):
    """The training method of ``cfg``: a ``GaussianDiffusion`` teacher, ``InductiveMomentMatching``, or a
    masked / uniform ``DiscreteDiffusion`` teacher (``shape`` is then unused)."""
    return get_teacher_kind(cfg.method.name).build(cfg, shape)


# ------------------------------------------------------------------------------------------ Gaussian
def build_process(cfg: ProcessCfg) -> GaussianProcess:
    return GaussianProcess(schedule_from_cfg(cfg), sigma_data=cfg.sigma_data, t_min=cfg.t_min)


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
    if cfg.kind == "diffusers":
        raise ValueError("net kind diffusers is imported, not built: pass --teacher diffusers:DIR")
    raise ValueError(f"unknown net kind {cfg.kind!r}")


def build_denoiser(cfg: RunConfig | DistillConfig, shape: tuple[int, ...]):
    """The x0 denoiser of a Gaussian run: ``GaussianDenoiser`` around a fewstep net, or ``DiffusersDenoiser``
    around the diffusers model whose config ``net.imported`` stores (randomly initialised; load weights after)."""
    if cfg.net.kind == "diffusers":
        from fewstep.denoisers.diffusers import DiffusersDenoiser, model_from_config, model_shape

        if not cfg.net.imported:
            raise ValueError("net kind diffusers needs the model's config (net.imported): import the teacher with "
                             "--teacher diffusers:DIR")
        import json

        if model_shape(json.loads(cfg.net.imported)) != tuple(shape):
            raise ValueError(f"the diffusers model takes samples of shape "
                             f"{model_shape(json.loads(cfg.net.imported))}, the data has {tuple(shape)}")
        return DiffusersDenoiser(model_from_config(cfg.net.imported), build_process(cfg.process),
                                 cfg.net.parametrization)
    return GaussianDenoiser(build_net(cfg.net, shape), build_process(cfg.process), cfg.net.parametrization)


def resolve_label_dropout(cfg: RunConfig, *, absent: float | None = None) -> RunConfig:
    """``cfg`` with ``method.label_dropout = None`` resolved (diffusion and IMM): to ``absent`` if given (a
    config.json written before label dropout existed: ``absent=0``), else auto: ``AUTO_LABEL_DROPOUT`` (0.1)
    for a class-conditional net, 0 otherwise."""
    from fewstep.methods.diffusion import AUTO_LABEL_DROPOUT

    m = cfg.method
    if not isinstance(m, (DiffusionCfg, IMMCfg)):
        return cfg
    if m.label_dropout is not None:
        if m.label_dropout > 0 and cfg.net.num_classes <= 0:
            raise ValueError("--method.label-dropout > 0 needs a class-conditional net (--net.num-classes > 0)")
        return cfg
    p = absent if absent is not None else (AUTO_LABEL_DROPOUT if cfg.net.num_classes > 0 else 0.0)
    return replace(cfg, method=replace(m, label_dropout=float(p)))


def build_diffusion(cfg: RunConfig, shape: tuple[int, ...]) -> GaussianDiffusion:
    """A Gaussian diffusion teacher."""
    cfg = resolve_label_dropout(cfg)
    m, classes = cfg.method, cfg.net.num_classes
    return GaussianDiffusion(build_denoiser(cfg, shape), weighting=m.weighting, time_sampling=m.time_sampling,
                             conditional=classes > 0, num_classes=classes or None, label_dropout=m.label_dropout,
                             sigmoid_bias=m.sigmoid_bias)


def build_imm(cfg: RunConfig, shape: tuple[int, ...]):
    """IMM from a RunConfig: the backbone (given a second time input) wrapped in ``IMMMap`` with the process's
    schedule and sigma_d = ``process.sigma_data``."""
    from fewstep.denoisers.imm import IMMMap
    from fewstep.methods.imm import InductiveMomentMatching

    cfg = resolve_label_dropout(cfg)
    m = cfg.method
    net = build_net(replace(cfg.net, two_time=True), shape)
    fmap = IMMMap(net, get_schedule(cfg.process.schedule), sigma_d=cfg.process.sigma_data, param=m.param,
                  second_time=m.second_time)
    return InductiveMomentMatching(fmap, conditional=cfg.net.num_classes > 0, num_classes=cfg.net.num_classes or None,
                                   **method_options(m, InductiveMomentMatching, builder=IMM_MAP_FIELDS))


IMM_MAP_FIELDS = ("param", "second_time")
"""``IMMCfg`` fields of the map (``IMMMap``), not of the method."""


def method_options(cfg, cls: type, *, rename: Mapping[str, str] | None = None,
                   builder: Collection[str] = ()) -> dict:
    """The constructor arguments of the method class ``cls`` from its config dataclass ``cfg``: every field under
    its own name (or ``rename[field]``), except ``name`` and the ``builder`` fields the builder consumes itself
    (learning rates, warm start, ...). A field the constructor does not take is an error: an option is spelled
    once, in its config dataclass, and reaches the method unchanged (lists become tuples)."""
    rename = rename or {}
    params = inspect.signature(cls).parameters
    out = {}
    for f in fields(cfg):
        if f.name == "name" or f.name in builder:
            continue
        arg = rename.get(f.name, f.name)
        if arg not in params:
            raise TypeError(f"{type(cfg).__name__}.{f.name} is not an argument of {cls.__name__}")
        value = getattr(cfg, f.name)
        out[arg] = tuple(value) if isinstance(value, list) else value
    return out


# ------------------------------------------------------------------------------------------ discrete
def build_discrete_process(cfg: RunConfig):
    """The MaskedProcess / UniformProcess of a discrete run (vocabulary from the resolved data config)."""
    from fewstep.processes.categorical import get_keep_schedule
    from fewstep.processes.masked import MaskedProcess
    from fewstep.processes.uniform import UniformProcess

    m = cfg.method
    schedule = get_keep_schedule(m.schedule)
    if isinstance(m, MDLMCfg):
        return MaskedProcess(cfg.data.vocab, schedule=schedule, t_min=m.t_min, t_max=m.t_max)
    return UniformProcess(cfg.data.vocab, schedule=schedule, t_min=m.t_min, t_max=m.t_max)


def build_token_denoiser(cfg: RunConfig, *, latent_dim: int = 0, latent_init_std: float = 0.0):
    """A ``TextDiT`` of ``cfg.net`` wrapped in a ``CategoricalDenoiser`` of the run's process (an optional
    latent-noise input for few-step students). ``cfg.data`` must be resolved."""
    from fewstep.denoisers.categorical import CategoricalDenoiser
    from fewstep.nets.text_dit import TextDiT

    process = build_discrete_process(cfg)
    n, data = cfg.net, cfg.data
    if n.kind == "mdlm_dit":
        import json

        from fewstep.nets.mdlm_dit import MDLMTokenNet

        if latent_dim:
            raise ValueError("an imported MDLM / Duo transformer has no latent-noise input: use --method.latent-dim 0")
        if not n.imported:
            raise ValueError("net kind mdlm_dit needs the model's sizes (net.imported): import the teacher with "
                             "--teacher mdlm:DIR or duo:DIR")
        sizes = json.loads(n.imported)
        if int(sizes["vocab_size"]) != process.width:
            raise ValueError(f"the transformer has {sizes['vocab_size']} output tokens, the {process.kind} process "
                             f"over the data's {data.vocab} tokens needs {process.width}")
        return CategoricalDenoiser(MDLMTokenNet(sizes, process.schedule), process)
    net = TextDiT(process.width, process.width, data.length, dim=n.width, depth=n.depth, heads=n.heads,
                  time_conditioned=n.time_conditioned, dropout=n.dropout, latent_dim=latent_dim,
                  latent_init_std=latent_init_std)
    return CategoricalDenoiser(net, process)


def build_discrete_method(cfg: RunConfig, shape: tuple[int, ...] | None = None):
    """``DiscreteDiffusion`` with a ``TextDiT`` backbone wrapped in a ``CategoricalDenoiser``."""
    from fewstep.methods.discrete_diffusion import DiscreteDiffusion

    if not is_token_data(cfg.data):
        raise ValueError(f"--method {cfg.method.name} trains on token data ({', '.join(dataset_names('tokens'))}), "
                         f"not {cfg.data.name}")
    if cfg.net.kind not in ("text_dit", "mdlm_dit"):
        raise ValueError(f"discrete diffusion needs --net.kind text_dit, got {cfg.net.kind}")
    cfg = replace(cfg, data=resolve_data(cfg.data))
    return DiscreteDiffusion(build_token_denoiser(cfg), length=cfg.data.length)


def token_student(cfg, latent_dim: int, latent_init_std: float = 0.0):
    """A CategoricalDenoiser with the teacher's architecture (plus an optional latent-noise input)."""
    return build_token_denoiser(RunConfig(data=cfg.data, net=cfg.net, method=cfg.discrete), latent_dim=latent_dim,
                                latent_init_std=latent_init_std)


for _kind in (TeacherKind("diffusion", False, build_diffusion), TeacherKind("imm", False, build_imm),
              TeacherKind("mdlm", True, build_discrete_method), TeacherKind("uniform", True, build_discrete_method)):
    register_teacher_kind(_kind)
