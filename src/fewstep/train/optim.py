"""Optimizers and learning-rate schedules as pure functions of the sample count.

``lr_at(nimg, ...)`` follows the pure ``get_lr(it)`` of nanoGPT (karpathy/nanoGPT, MIT), counted in
samples instead of iterations: linear warm-up to ``base_lr`` over ``warmup_nimg``, then constant, linear or
cosine decay to ``final_ratio * base_lr`` at ``total_nimg``. Weight decay is applied to matrices only
(parameters with ``ndim >= 2``), the nanoGPT convention. ``lr_mults`` scales the learning rate of named
parameters (a parameter group carries ``lr_mult``; ``set_lr`` applies it), e.g. a zero-initialised input layer
that must move faster than the weights copied from a teacher.
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
OPTIM_KEYS = ("optimizer", "lr", "betas", "eps", "weight_decay", "lr_mults")
"""Keys a per-role optimizer override may set (the ``Trainer`` keyword names)."""


def make_optimizer(params: Iterable[nn.Parameter] | nn.Module, kind: OptimizerKind = "adamw", *, lr: float = 1e-3,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   weight_decay: float = 0.0, lr_mults: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """An Adam-family optimizer over the parameters that require grad.

    Args:
        params: parameters of one network, or the network itself (needed for ``lr_mults``).
        kind: ``"adamw"`` (decoupled decay), ``"adam"`` (L2 decay) or ``"radam"``.
        lr: initial learning rate (the trainer overwrites it every step from ``lr_at``).
        betas: moment coefficients. eps: denominator epsilon.
        weight_decay: applied to parameters with ``ndim >= 2`` only.
        lr_mults: parameter-name suffix -> learning-rate multiplier (e.g. ``{"latent.weight": 100}``); every
            suffix must name at least one trainable parameter.

    Returns:
        The optimizer: one group per (decay, multiplier) pair in use, each with an ``lr_mult`` entry; Adam and
        AdamW run fused (one kernel per step; measured by ``fewstep bench speed``), RAdam multi-tensor.
    """
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; choose one of {OPTIMIZERS}")
    lr_mults = dict(lr_mults or {})
    if lr_mults and not isinstance(params, nn.Module):
        raise ValueError("make_optimizer: lr_mults needs the module (parameter names), not a parameter list")
    named = ([(n, p) for n, p in params.named_parameters()] if isinstance(params, nn.Module)
             else [("", p) for p in params])
    named = [(n, p) for n, p in named if p.requires_grad]
    if not named:
        raise ValueError("make_optimizer: no parameters require grad")
    for suffix, mult in lr_mults.items():
        if not (mult > 0 and math.isfinite(mult)):
            raise ValueError(f"lr_mults[{suffix!r}] must be a positive finite number, got {mult}")
        if not any(n == suffix or n.endswith("." + suffix) for n, _ in named):
            raise ValueError(f"lr_mults names {suffix!r}, which matches no trainable parameter")

    def mult_of(name: str) -> float:
        hits = [m for sfx, m in lr_mults.items() if name == sfx or name.endswith("." + sfx)]
        return float(hits[0]) if hits else 1.0

    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    passes = (True, False) if weight_decay > 0 else (None,)  # decayed matrices first, as before lr_mults existed
    for matrices in passes:
        for name, p in named:
            if matrices is None or (p.ndim >= 2) == matrices:
                groups.setdefault((weight_decay if matrices else 0.0, mult_of(name)), []).append(p)
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "radam": torch.optim.RAdam}[kind]
    if kind == "radam":  # no fused RAdam: the multi-tensor path (bit-identical to the per-parameter loop)
        impl = {"foreach": True}
    else:  # one fused kernel per step (CPU and CUDA); not bit-identical to the loop (~1e-7 relative per step)
        impl = {"fused": True} if all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                      for _, p in named) else {}
    return cls([{"params": ps, "weight_decay": decay, "lr_mult": mult, "lr": lr * mult}
                for (decay, mult), ps in groups.items()], lr=lr, betas=tuple(betas), eps=eps, **impl)


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
        out[key] = tuple(value) if key == "betas" else dict(value) if key == "lr_mults" else value
    return out


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (times the group's ``lr_mult``, default 1)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
