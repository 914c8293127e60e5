"""Trainer assembly: a ready-to-fit ``Trainer`` for a teacher / from-scratch run, and the shared adapter from
``cfg.train`` to the ``Trainer``'s arguments (used by the distillation builder too)."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch

from fewstep.build.datasets import build_data, dataset_names, is_token_data, resolve_data
from fewstep.build.device import resolve_device, seeded_init
from fewstep.build.models import build_method, is_discrete, resolve_label_dropout
from fewstep.config import DiffusionCfg, DistillConfig, IMMCfg, RunConfig, TrainCfg, defaults_like, to_dict
from fewstep.data.source import DataSource
from fewstep.train.trainer import Trainer
from fewstep.validation import check_config


def build_trainer(cfg: RunConfig, *, allow_config_change: bool = False, progress: bool = True,
                  data: DataSource | None = None) -> Trainer:
    """A ready-to-fit Trainer for ``cfg`` (data, method and optimisation from the config); every value is checked
    (``validation.check_config``) before anything is written."""
    check_config(cfg)
    if is_discrete(cfg) != is_token_data(cfg.data):
        raise ValueError(f"--method {cfg.method.name} does not train on {cfg.data.name}: the discrete methods "
                         f"(mdlm, uniform) take token data ({', '.join(dataset_names('tokens'))}), the others "
                         "continuous data")
    cfg = resolve_label_dropout(replace(cfg, data=resolve_data(cfg.data)))  # config.json holds the number
    check_labels(cfg)
    if isinstance(cfg.method, IMMCfg) and cfg.train.batch_size % cfg.method.group_size:
        raise ValueError(f"IMM needs a batch of whole groups: train.batch_size {cfg.train.batch_size} is not a "
                         f"multiple of method.group_size {cfg.method.group_size}")
    data = build_data(cfg.data) if data is None else data
    method = seeded_init(lambda: build_method(cfg, data.shape), cfg.train.seed)
    return make_trainer(method, data, cfg, device=resolve_device(cfg.train.device),
                        allow_config_change=allow_config_change, progress=progress)


def make_trainer(method, data: DataSource, cfg: RunConfig | DistillConfig, *, device: torch.device | str,
                 allow_config_change: bool = False, progress: bool = True,
                 per_role_optim: dict | None = None) -> Trainer:
    """The ``Trainer`` of ``method`` on ``data`` with the optimisation and bookkeeping of ``cfg.train``; the
    resolved ``cfg`` is the run's config.json."""
    defaults = defaults_like(cfg)
    if isinstance(cfg, RunConfig) and isinstance(cfg.method, (DiffusionCfg, IMMCfg)):
        defaults["method"]["label_dropout"] = 0.0  # a config.json without it: a run trained without label dropout
    return Trainer(method, data, run_dir=Path(cfg.run_dir), device=str(device), config=to_dict(cfg),
                   config_defaults=defaults, allow_config_change=allow_config_change, progress=progress,
                   per_role_optim=per_role_optim, **trainer_options(cfg.train))


NOT_TRAINER_OPTIONS = ("device",)
"""``TrainCfg`` fields the builder resolves itself (``device``: ``auto`` -> cuda / cpu)."""


def trainer_options(t: TrainCfg) -> dict:
    """The ``Trainer`` keyword arguments of ``t``: every other ``TrainCfg`` field, under the same name."""
    out = {f.name: getattr(t, f.name) for f in fields(t) if f.name not in NOT_TRAINER_OPTIONS}
    out["betas"] = tuple(out["betas"])
    return out


def check_labels(cfg: RunConfig) -> None:
    """A class-conditional net on a user's image files needs labels that fit it (one-line errors)."""
    d, classes = cfg.data, cfg.net.num_classes
    if d.classes is None or classes <= 0:
        return
    if d.classes == 0:
        raise ValueError(f"--net.num-classes {classes} needs labelled images: class sub-folders under {d.root}, or a "
                         "'y' array in the .npz")
    if d.classes > classes:
        raise ValueError(f"the labels of {d.root} go up to {d.classes - 1}: --net.num-classes must be >= {d.classes}")
