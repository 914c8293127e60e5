"""Noise schedules for Gaussian diffusion: z_t = alpha(t) x + sigma(t) eps, t in [0, 1] (t = 0 is data).

Each schedule gives alpha, sigma and their time derivatives, the log signal-to-noise ratio
lambda(t) = 2 log(alpha / sigma) and the inverses t(lambda) and t(eta) where eta = sigma / alpha is the
EDM noise level (IMM's eta). All functions are elementwise and keep the input dtype, so samplers can run
them in float64.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOGSNR_CLAMP = 15.0


@dataclass(frozen=True)
class ScheduleOutput:
    """Schedule values at times ``t`` (each shaped like ``t``)."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor


class Schedule(abc.ABC):
    """Abstract schedule. Subclasses implement ``__call__``, ``logsnr``, ``t_from_logsnr``, ``t_from_eta``."""

    name: str = "schedule"

    @abc.abstractmethod
    def __call__(self, t: Tensor) -> ScheduleOutput:
        """alpha, sigma, d alpha/dt, d sigma/dt at ``t`` (any shape)."""

    @abc.abstractmethod
    def logsnr(self, t: Tensor) -> Tensor:
        """lambda(t) = 2 log(alpha/sigma); +inf at t = 0, -inf where alpha = 0."""

    @abc.abstractmethod
    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        """Inverse of :meth:`logsnr`."""

    @abc.abstractmethod
    def t_from_eta(self, eta: Tensor) -> Tensor:
        """Inverse of eta(t) = sigma/alpha (the EDM noise level)."""

    def eta(self, t: Tensor) -> Tensor:
        """EDM noise level sigma/alpha (inf where alpha = 0)."""
        out = self(t)
        return out.sigma / out.alpha

    def clamped_logsnr(self, t: Tensor, clamp: float = LOGSNR_CLAMP) -> Tensor:
        """lambda(t) clamped to [-clamp, clamp]; use wherever a conversion divides by alpha or sigma."""
        return self.logsnr(t).clamp(-clamp, clamp)

    def dlogsnr_dt(self, t: Tensor) -> Tensor:
        """d lambda / dt = 2 (alpha'/alpha - sigma'/sigma)."""
        o = self(t)
        return 2.0 * (o.d_alpha / o.alpha - o.d_sigma / o.sigma)


class CosineSchedule(Schedule):
    """Variance-preserving cosine schedule: alpha = cos(pi t / 2), sigma = sin(pi t / 2)."""

    name = "cosine"

    def __call__(self, t: Tensor) -> ScheduleOutput:
        h = 0.5 * math.pi
        a, s = torch.cos(h * t), torch.sin(h * t)
        return ScheduleOutput(alpha=a, sigma=s, d_alpha=-h * s, d_sigma=h * a)

    def logsnr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(torch.tan(0.5 * math.pi * t))

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        return (2.0 / math.pi) * torch.atan(torch.exp(-0.5 * logsnr))

    def t_from_eta(self, eta: Tensor) -> Tensor:
        return (2.0 / math.pi) * torch.atan(eta)


class FlowSchedule(Schedule):
    """Linear (rectified-flow) schedule: alpha = 1 - t, sigma = t."""

    name = "flow"

    def __call__(self, t: Tensor) -> ScheduleOutput:
        one = torch.ones_like(t)
        return ScheduleOutput(alpha=1.0 - t, sigma=t.clone(), d_alpha=-one, d_sigma=one)

    def logsnr(self, t: Tensor) -> Tensor:
        return 2.0 * (torch.log1p(-t) - torch.log(t))

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        return torch.sigmoid(-0.5 * logsnr)

    def t_from_eta(self, eta: Tensor) -> Tensor:
        # eta = inf (t = 1) would give inf/inf = nan
        return torch.where(torch.isinf(eta), torch.ones_like(eta), eta / (1.0 + eta))


SCHEDULES: dict[str, type[Schedule]] = {"cosine": CosineSchedule, "flow": FlowSchedule}


def get_schedule(name: str) -> Schedule:
    """Build a schedule by name (``cosine`` or ``flow``)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]()
