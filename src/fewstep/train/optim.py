"""Optimizers and learning-rate schedules as pure functions of the sample count.

``lr_at(nimg, ...)`` follows the pure ``get_lr(it)`` of nanoGPT (karpathy/nanoGPT, MIT), counted in
samples instead of iterations: linear warm-up to ``base_lr`` over ``warmup_nimg``, then constant, linear or
cosine decay to ``final_ratio * base_lr`` at ``total_nimg``. Weight decay is applied to matrices only
(parameters with ``ndim >= 2``), the nanoGPT convention.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

OptimizerKind = Literal["adamw", "adam", "radam"]
LRDecay = Literal["constant", "linear", "cosine"]
OPTIMIZERS = ("adamw", "adam", "radam")
DECAYS = ("constant", "linear", "cosine")
OPTIM_KEYS = ("optimizer", "lr", "betas", "eps", "weight_decay")
"""Keys a per-role optimizer override may set (the ``Trainer`` keyword names)."""


def make_optimizer(params: Iterable[nn.Parameter], kind: OptimizerKind = "adamw", *, lr: float = 1e-3,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """An Adam-family optimizer over the parameters that require grad.

    Args:
        params: parameters of one network.
        kind: ``"adamw"`` (decoupled decay), ``"adam"`` (L2 decay) or ``"radam"``.
        lr: initial learning rate (the trainer overwrites it every step from ``lr_at``).
        betas: moment coefficients. eps: denominator epsilon.
        weight_decay: applied to parameters with ``ndim >= 2`` only.

    Returns:
        The optimizer, with one or two parameter groups.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("make_optimizer: no parameters require grad")
    if weight_decay > 0:
        groups: list[dict] = [
            {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": trainable, "weight_decay": 0.0}]
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "radam": torch.optim.RAdam}[kind]
    return cls(groups, lr=lr, betas=tuple(betas), eps=eps)


def lr_at(nimg: int, *, base_lr: float, warmup_nimg: int = 0, total_nimg: int, decay: LRDecay = "constant",
          final_ratio: float = 0.0) -> float:
    """Learning rate after ``nimg`` training samples.

    Args:
        nimg: samples seen, including the current batch.
        base_lr: peak learning rate. warmup_nimg: length of the linear warm-up (0: none).
        total_nimg: end of the decay. decay: ``"constant"``, ``"linear"`` or ``"cosine"``.
        final_ratio: learning rate at ``total_nimg`` relative to ``base_lr`` (ignored when constant).

    Returns:
        The learning rate (a float).
    """
    if decay not in DECAYS:
        raise ValueError(f"unknown lr decay {decay!r}; choose one of {DECAYS}")
    warm = min(1.0, nimg / warmup_nimg) if warmup_nimg > 0 else 1.0
    if decay == "constant":
        return base_lr * warm
    span = max(total_nimg - warmup_nimg, 1)
    p = min(max((nimg - warmup_nimg) / span, 0.0), 1.0)
    shape = 1.0 - p if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return base_lr * warm * (final_ratio + (1.0 - final_ratio) * shape)


def resolve_optim(defaults: dict, overrides: dict | None) -> dict:
    """``defaults`` updated by one role's ``overrides`` (keys from ``OPTIM_KEYS``), validated."""
    out = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in OPTIM_KEYS:
            raise ValueError(f"unknown per-role optimizer setting {key!r}; allowed: {OPTIM_KEYS}")
        out[key] = tuple(value) if key == "betas" else value
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
