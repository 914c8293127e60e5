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


DDPM_BETAS = ("linear", "scaled_linear", "squaredcos_cap_v2")
"""Beta schedules of a discrete DDPM (diffusers' ``beta_schedule`` names) that :class:`DDPMSchedule` maps."""


def ddpm_alphas_cumprod(betas: str, beta_start: float, beta_end: float, timesteps: int) -> Tensor:
    """alpha-bar_n, n = 0..N-1, of a discrete DDPM [N] (float32), computed as diffusers' ``DDPMScheduler`` /
    ``DDIMScheduler`` compute it (float32 betas, float32 cumulative product), so that the values are identical.

    ``linear``: betas evenly spaced from ``beta_start`` to ``beta_end``; ``scaled_linear``: their square roots evenly
    spaced (latent diffusion); ``squaredcos_cap_v2``: the cosine alpha-bar of Nichol & Dhariwal (2021), betas capped
    at 0.999."""
    if betas not in DDPM_BETAS:
        raise ValueError(f"unsupported DDPM beta schedule {betas!r}; supported: {', '.join(DDPM_BETAS)}")
    if int(timesteps) != timesteps or timesteps < 2:
        raise ValueError(f"a DDPM needs at least 2 training timesteps, got {timesteps}")
    n = int(timesteps)
    if betas == "linear":
        b = torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    elif betas == "scaled_linear":
        b = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2
    else:
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        b = torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    if not bool(((b > 0) & (b < 1)).all()):
        raise ValueError(f"DDPM betas must lie in (0, 1); {betas} from {beta_start} to {beta_end} does not")
    return torch.cumprod(1.0 - b, dim=0)


class DDPMSchedule(Schedule):
    """A discrete-time DDPM (N training timesteps, alpha-bar_n) as a continuous variance-preserving schedule.

    Time map: diffusers timestep n = 0..N-1 sits at t = (n + 1) / N, and t = 0 is the data (alpha-bar = 1), so the
    uniform grid with K | N steps visits exactly diffusers' ``trailing`` timesteps. Between the knots
    t_n = n / N (knot 0: alpha-bar = 1) log alpha-bar is linear in t (a constant beta-rate per interval, the
    continuous-time reading of a DDPM step); at the knots the schedule equals the DDPM's alpha-bar exactly:
    alpha = sqrt(alpha-bar), sigma = sqrt(1 - alpha-bar). Derivatives are those of the interpolant (one-sided
    at the knots, from the interval to the right; the last interval at t = 1).

    Args:
        betas, beta_start, beta_end, timesteps: as diffusers' ``beta_schedule``, ``beta_start``, ``beta_end``,
            ``num_train_timesteps`` (:func:`ddpm_alphas_cumprod`).
        steps_offset: diffusers' ``steps_offset`` (used by the ``leading`` sampling grid only).
    """

    name = "ddpm"

    def __init__(self, betas: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
                 timesteps: int = 1000, steps_offset: int = 0) -> None:
        self.betas, self.beta_start, self.beta_end = betas, float(beta_start), float(beta_end)
        self.timesteps, self.steps_offset = int(timesteps), int(steps_offset)
        self.alphas_cumprod = ddpm_alphas_cumprod(betas, beta_start, beta_end, timesteps)
        self._log_abar = torch.cat([torch.zeros(1, dtype=torch.float64), self.alphas_cumprod.double().log()])

    def _knots(self, like: Tensor) -> Tensor:
        return self._log_abar.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float64)

    def log_alpha_bar(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log alpha-bar(t), its slope d/dt) of the piecewise-linear interpolant, shaped like ``t``."""
        knots = self._knots(t)
        u = t * self.timesteps
        idx = u.detach().floor().clamp(0, self.timesteps - 1).long()
        lo, hi = knots[idx], knots[idx + 1]
        slope = (hi - lo) * self.timesteps
        return lo + (u - idx.to(u.dtype)) * (hi - lo), slope

    def __call__(self, t: Tensor) -> ScheduleOutput:
        la, slope = self.log_alpha_bar(t)
        alpha = torch.exp(0.5 * la)
        sigma = torch.sqrt(-torch.expm1(la))
        return ScheduleOutput(alpha=alpha, sigma=sigma, d_alpha=0.5 * slope * alpha,
                              d_sigma=-0.5 * slope * torch.exp(la) / sigma)

    def logsnr(self, t: Tensor) -> Tensor:
        la, _ = self.log_alpha_bar(t)
        return la - torch.log(-torch.expm1(la))

    def _t_from_log_abar(self, la: Tensor) -> Tensor:
        """Inverse of the interpolant: t with log alpha-bar(t) = ``la`` (0 above the data end, 1 past t = 1)."""
        knots = self._knots(la)
        neg = -knots  # increasing
        idx = torch.searchsorted(neg, (-la).contiguous(), right=True).clamp(1, self.timesteps) - 1
        lo, hi = knots[idx], knots[idx + 1]
        t = (idx.to(la.dtype) + (la - lo) / (hi - lo)) / self.timesteps
        return t.clamp(0.0, 1.0)

    def t_from_logsnr(self, logsnr: Tensor) -> Tensor:
        return self._t_from_log_abar(torch.nn.functional.logsigmoid(logsnr))

    def t_from_eta(self, eta: Tensor) -> Tensor:
        return self._t_from_log_abar(-torch.log1p(eta**2))

    def timestep(self, t: Tensor) -> Tensor:
        """The diffusers timestep of time ``t``: t N - 1 (continuous between training timesteps), floored at 0
        below t = 1/N (less noise than the DDPM's first step: the network sees its lowest trained timestep)."""
        return (t * self.timesteps - 1.0).clamp_min(0.0)


SCHEDULES: dict[str, type[Schedule]] = {"cosine": CosineSchedule, "flow": FlowSchedule}


def get_schedule(name: str) -> Schedule:
    """Build a schedule by name (``cosine`` or ``flow``; a ``ddpm`` schedule needs its betas: use
    ``schedule_from_cfg`` of a ``ProcessCfg`` or :class:`DDPMSchedule`)."""
    if name == "ddpm":
        raise ValueError("a ddpm schedule needs its betas: build it from the process config (schedule_from_cfg)")
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]()


def schedule_from_cfg(cfg) -> Schedule:
    """The schedule of a ``ProcessCfg``: ``cosine`` / ``flow``, or ``ddpm`` with its ``betas``, ``beta_start``,
    ``beta_end`` and ``train_timesteps``."""
    if cfg.schedule == "ddpm":
        return DDPMSchedule(cfg.betas, cfg.beta_start, cfg.beta_end, cfg.train_timesteps, cfg.steps_offset)
    return get_schedule(cfg.schedule)
