"""Shared pieces of the discrete (categorical) processes: keep-probability schedules, stratified times and
float64 categorical draws (docs/concepts.md).

Keep probability alpha(t) falls from alpha(0) = 1 (data) to alpha(1) = 0 (noise). Every categorical draw is
made in float64 by inverting the CDF with float64 uniforms from an explicit generator: a float32 draw lives on a
2^-24 grid and starves tokens far less likely than the leader (Zheng et al., arXiv 2409.02908), which is the
"low-temperature" artefact that makes float32 GenPPL improve spuriously with more steps.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

from fewstep import rng


class KeepSchedule(abc.ABC):
    """alpha(t), the probability that a position still holds its clean token, and d alpha / dt."""

    name: str = "keep"

    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t), elementwise, same dtype as ``t``."""

    @abc.abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt, elementwise."""


class LogLinear(KeepSchedule):
    """alpha(t) = 1 - t (MDLM's "log-linear" schedule: sigma(t) = -log(1 - t)); ELBO weight 1/t."""

    name = "log-linear"

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


class CosineKeep(KeepSchedule):
    """alpha(t) = cos(pi t / 2)."""

    name = "cosine"

    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


KEEP_SCHEDULES = {"log-linear": LogLinear, "cosine": CosineKeep}


def get_keep_schedule(name: str) -> KeepSchedule:
    """Keep schedule by name (``log-linear`` or ``cosine``)."""
    if name not in KEEP_SCHEDULES:
        raise ValueError(f"unknown keep schedule {name!r}; choose one of {sorted(KEEP_SCHEDULES)}")
    return KEEP_SCHEDULES[name]()


def stratified_t(n: int, t_min: float, t_max: float, *, generator: torch.Generator,
                 device: torch.device | str) -> Tensor:
    """[n] float32 stratified ("antithetic") times t_i = t_min + (t_max - t_min)(i + u_i)/n, u_i ~ U[0, 1)."""
    u = rng.rand((n,), generator=generator, device=device, dtype=torch.float64)
    i = torch.arange(n, device=device, dtype=torch.float64)
    return (t_min + (t_max - t_min) * (i + u) / n).float()


def categorical(probs: Tensor, *, generator: torch.Generator, dtype: torch.dtype = torch.float64,
                allow_low_precision: bool = False) -> Tensor:
    """One draw per row of ``probs`` [..., V] (unnormalised, non-negative) -> int64 [...].

    Inverse CDF with uniforms of ``dtype`` (float64 by default). Lower precision is refused unless
    ``allow_low_precision`` (it exists to measure the float32 artefact, see :func:`gumbel_categorical`).
    """
    if dtype != torch.float64 and not allow_low_precision:
        raise ValueError(f"categorical draws are made in float64; {dtype} needs allow_low_precision=True")
    u = rng.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=dtype)
    return inverse_cdf(probs.to(dtype), u)


def inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """The category of uniform ``u`` [...] under unnormalised ``probs`` [..., V] (computed in their dtype)."""
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, (u.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1), right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def gumbel_categorical(logits: Tensor, *, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """Gumbel-max draw argmax(logits + g), g = -log(-log u), with u of ``dtype`` -> int64 [...].

    In float32, u lies on a 2^-24 grid, so g <= ~16.6 with a coarsely quantised tail: tokens far less likely
    than the leader are under-drawn. Provided to *measure* that artefact (the float32 reference
    implementations sample this way); library samplers use :func:`categorical` in float64.
    """
    u = rng.rand(logits.shape, generator=generator, device=logits.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    g = -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))
    return (logits.to(dtype) + g).argmax(-1)
