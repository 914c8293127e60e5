"""Gaussian forward process z_t = alpha_t x + sigma_t eps, its posterior, DDIM-eta steps and conversions.

Conventions follow ``docs/methods/gaussian-diffusion.md``. The posterior q(z_s | x, z_t), 0 <= s < t, is
N(mu, gamma^2 I) with alpha_{t|s} = alpha_t/alpha_s, sigma^2_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,
mu = (alpha_{t|s} sigma_s^2 / sigma_t^2) z_t + (alpha_s sigma^2_{t|s} / sigma_t^2) x and
gamma^2 = sigma_s^2 sigma^2_{t|s} / sigma_t^2. ``posterior_step`` with eta = 1 draws from it exactly,
eta = 0 is DDIM.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from fewstep import rng
from fewstep.processes.base import bcast, check_times
from fewstep.schedules import LOGSNR_CLAMP, Schedule

TimeSampling = Literal["uniform", "logit_normal", "edm_lognormal", "uniform_logsnr"]
Weighting = Literal["flat", "snr", "v", "velocity", "max_snr_1", "edm", "sigmoid"]


class GaussianProcess:
    """Gaussian diffusion on a :class:`~fewstep.schedules.Schedule`.

    Args:
        schedule: the alpha/sigma schedule.
        sigma_data: data standard deviation used by EDM-type weights and preconditioning.
        t_min: smallest training time (avoids the t = 0 singularity of weights and conversions).
    """

    def __init__(self, schedule: Schedule, *, sigma_data: float = 1.0, t_min: float = 1e-4) -> None:
        self.schedule = schedule
        self.sigma_data = float(sigma_data)
        self.t_min = float(t_min)

    # ------------------------------------------------------------------ forward process
    def sample_t(
        self,
        n: int,
        *,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        kind: TimeSampling = "uniform",
        stratified: bool = False,
    ) -> Tensor:
        """Training times [n] in [t_min, 1] (float32)."""
        if kind == "uniform":
            u = rng.rand((n,), generator=generator, device=device, dtype=torch.float64)
            if stratified:
                u = (torch.arange(n, device=device, dtype=torch.float64) + u) / n
            t = u
        elif kind == "logit_normal":
            t = torch.sigmoid(rng.randn((n,), generator=generator, device=device, dtype=torch.float64))
        elif kind == "edm_lognormal":
            ln = -1.2 + 1.2 * rng.randn((n,), generator=generator, device=device, dtype=torch.float64)
            t = self.schedule.t_from_eta(torch.exp(ln))
        elif kind == "uniform_logsnr":
            u = rng.rand((n,), generator=generator, device=device, dtype=torch.float64)
            t = self.schedule.t_from_logsnr(LOGSNR_CLAMP - 2 * LOGSNR_CLAMP * u)
        else:
            raise ValueError(f"unknown time sampling {kind!r}")
        return t.clamp(self.t_min, 1.0).float()

    def add_noise(
        self, x0: Tensor, t: Tensor, *, generator: torch.Generator | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """z_t = alpha_t x0 + sigma_t eps for x0 [B, ...] and t [B]; pass ``noise`` or a ``generator``."""
        check_times(x0, t)
        if noise is None:
            if generator is None:
                raise ValueError("add_noise needs a generator or explicit noise")
            noise = rng.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        o = self.schedule(t.to(x0.dtype))
        return bcast(o.alpha, x0) * x0 + bcast(o.sigma, x0) * noise

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        t: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> Tensor:
        """Draw z_t ~ N(0, sigma_t^2 I), the prior at time ``t`` (ignores alpha_t E[x], exact at t = 1)."""
        sigma = float(self.schedule(torch.tensor(t, dtype=torch.float64)).sigma)
        return sigma * rng.randn(shape, generator=generator, device=device, dtype=dtype)

    # ------------------------------------------------------------------ posterior
    def posterior_coefficients(self, t: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Coefficients (c_z, c_x, gamma) of q(z_s|x, z_t) = N(c_z z_t + c_x x, gamma^2 I); each [B]."""
        if bool((s >= t).any()):
            raise ValueError("posterior needs s < t for every row")
        ot, os_ = self.schedule(t), self.schedule(s)
        a_ts = ot.alpha / os_.alpha
        var_ts = (ot.sigma**2 - a_ts**2 * os_.sigma**2).clamp_min(0.0)
        c_z = a_ts * os_.sigma**2 / ot.sigma**2
        c_x = os_.alpha * var_ts / ot.sigma**2
        gamma = (os_.sigma**2 * var_ts / ot.sigma**2).clamp_min(0.0).sqrt()
        return c_z, c_x, gamma

    def posterior_step(
        self,
        x_t: Tensor,
        x0_hat: Tensor,
        t: Tensor,
        s: Tensor,
        *,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        noise: Tensor | None = None,
    ) -> Tensor:
        """One DDIM-eta step z_t -> z_s given an x0 estimate (eta = 1: exact posterior, eta = 0: DDIM).

        z_s = alpha_s x0 + sqrt(sigma_s^2 - g^2) eps_hat + g xi, eps_hat = (z_t - alpha_t x0)/sigma_t,
        g = eta sigma_s sigma_{t|s} / sigma_t. At s = 0 the result is x0.

        Args:
            x_t: [B, ...] current state. x0_hat: [B, ...]. t, s: [B] with s < t.
        Returns:
            z_s [B, ...] in the dtype of ``x_t``.
        """
        check_times(x_t, t, s)
        if x0_hat.shape != x_t.shape:
            raise ValueError(f"x0_hat shape {tuple(x0_hat.shape)} != x_t shape {tuple(x_t.shape)}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        dt = x_t.dtype
        t, s = t.to(dt), s.to(dt)
        x0_hat = x0_hat.to(dt)
        ot, os_ = self.schedule(t), self.schedule(s)
        _, _, gamma1 = self.posterior_coefficients(t, s)
        g = eta * gamma1
        eps_hat = (x_t - bcast(ot.alpha, x_t) * x0_hat) / bcast(ot.sigma, x_t)
        c_eps = (os_.sigma**2 - g**2).clamp_min(0.0).sqrt()
        out = bcast(os_.alpha, x_t) * x0_hat + bcast(c_eps, x_t) * eps_hat
        if eta > 0:
            if noise is None:
                if generator is None:
                    raise ValueError("a stochastic posterior step (eta > 0) needs a generator")
                noise = rng.randn(x_t.shape, generator=generator, device=x_t.device, dtype=dt)
            out = out + bcast(g, x_t) * noise
        return out

    # ------------------------------------------------------------------ one shared time per step (samplers)
    def grid_values(self, grid: Tensor) -> list[tuple[float, float, float, float]]:
        """(alpha, sigma, d_alpha, d_sigma) at every time of ``grid`` [N] as Python floats (float64 math).

        Samplers evaluate the schedule once per call with it: every row shares the step's times, so a step needs
        no per-row coefficient vectors and, on a GPU, no host synchronisation."""
        o = self.schedule(grid.detach().double().cpu())
        return list(zip(o.alpha.tolist(), o.sigma.tolist(), o.d_alpha.tolist(), o.d_sigma.tolist()))

    @staticmethod
    def posterior_step_at(x_t: Tensor, x0_hat: Tensor, at: tuple[float, ...], as_: tuple[float, ...], *,
                          eta: float = 0.0, generator: torch.Generator | None = None,
                          noise: Tensor | None = None) -> Tensor:
        """:meth:`posterior_step` for one time pair shared by all rows, given their :meth:`grid_values` ``at``
        (time t) and ``as_`` (time s < t): the same formula with scalar coefficients (same arithmetic).

        Args:
            x_t: [B, ...] state at t. x0_hat: [B, ...] estimate of x0 (same shape).
        Returns:
            z_s [B, ...] in the dtype of ``x_t``.
        """
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        (a_t, s_t), (a_s, s_s) = at[:2], as_[:2]
        a_ts = a_t / a_s
        var_ts = max(s_t**2 - a_ts**2 * s_s**2, 0.0)
        g = eta * math.sqrt(max(s_s**2 * var_ts / s_t**2, 0.0))
        c_eps = math.sqrt(max(s_s**2 - g**2, 0.0))
        x0_hat = x0_hat.to(x_t.dtype)
        out = a_s * x0_hat + c_eps * ((x_t - a_t * x0_hat) / s_t)
        if eta > 0:
            if noise is None:
                if generator is None:
                    raise ValueError("a stochastic posterior step (eta > 0) needs a generator")
                noise = rng.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            out = out + g * noise
        return out

    @staticmethod
    def ode_drift_at(z: Tensor, x0_hat: Tensor, at: tuple[float, ...]) -> Tensor:
        """:meth:`ode_drift` at one time shared by all rows, given its :meth:`grid_values` ``at``."""
        a, s, da, ds = at
        return da * x0_hat + ds * ((z - a * x0_hat) / s)

    # ------------------------------------------------------------------ parametrisations
    def x0_from_eps(self, z: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x0 = (z - sigma eps) / alpha (alpha clamped through logSNR >= -15)."""
        o = self.schedule(t.to(z.dtype))
        alpha = o.alpha.clamp_min(_alpha_floor(self.schedule, t).to(z.dtype))
        return (z - bcast(o.sigma, z) * eps) / bcast(alpha, z)

    def eps_from_x0(self, z: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """eps = (z - alpha x0) / sigma."""
        o = self.schedule(t.to(z.dtype))
        sigma = o.sigma.clamp_min(1e-7)
        return (z - bcast(o.alpha, z) * x0) / bcast(sigma, z)

    def x0_from_v(self, z: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """x0 = (alpha z - sigma v) / (alpha^2 + sigma^2), v := alpha eps - sigma x0."""
        o = self.schedule(t.to(z.dtype))
        return (bcast(o.alpha, z) * z - bcast(o.sigma, z) * v) / bcast(o.alpha**2 + o.sigma**2, z)

    def v_from_x0(self, z: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """v = alpha eps - sigma x0 with eps from (z, x0)."""
        o = self.schedule(t.to(z.dtype))
        return bcast(o.alpha, z) * self.eps_from_x0(z, x0, t) - bcast(o.sigma, z) * x0

    def x0_from_velocity(self, z: Tensor, u: Tensor, t: Tensor) -> Tensor:
        """x0 = (sigma' z - sigma u)/(sigma' alpha - sigma alpha'), u = alpha' x0 + sigma' eps."""
        o = self.schedule(t.to(z.dtype))
        den = o.d_sigma * o.alpha - o.sigma * o.d_alpha
        return (bcast(o.d_sigma, z) * z - bcast(o.sigma, z) * u) / bcast(den, z)

    def velocity_from_x0(self, z: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """u = alpha' x0 + sigma' eps."""
        o = self.schedule(t.to(z.dtype))
        return bcast(o.d_alpha, z) * x0 + bcast(o.d_sigma, z) * self.eps_from_x0(z, x0, t)

    def ode_drift(self, z: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor:
        """Probability-flow ODE drift dz/dt = alpha' D + sigma' (z - alpha D)/sigma."""
        o = self.schedule(t.to(z.dtype))
        eps = (z - bcast(o.alpha, z) * x0_hat) / bcast(o.sigma, z)
        return bcast(o.d_alpha, z) * x0_hat + bcast(o.d_sigma, z) * eps

    # ------------------------------------------------------------------ loss weights (x-space)
    def loss_weight(self, t: Tensor, kind: Weighting = "edm", *, max_weight: float = 1e5,
                    sigmoid_bias: float = 0.0) -> Tensor:
        """x-space weight w(t) for E w(t) ||D(z_t, t) - x||^2 (docs/methods/gaussian-diffusion.md).

        ``snr`` equals the eps-loss, ``v`` the v-loss, ``velocity`` the velocity loss, ``edm`` is
        (eta^2 + sd^2)/(eta sd)^2 = 1/c_out^2 of EDM preconditioning, ``sigmoid`` the sigmoid-ELBO weight
        0.5 sigmoid(b - lambda)(-dlambda/dt) SNR with b = ``sigmoid_bias`` (Kingma & Gao 2023 use b < 0, e.g. -2 or
        -3 for images; larger b moves weight towards low noise). Clamped to ``max_weight``.
        """
        t = t.double()
        o = self.schedule(t)
        lam = self.schedule.clamped_logsnr(t)
        snr = torch.exp(lam)
        sd = self.sigma_data
        if kind == "flat":
            w = torch.ones_like(t)
        elif kind == "snr":
            w = snr
        elif kind == "v":
            w = (o.alpha**2 + o.sigma**2) ** 2 / o.sigma.clamp_min(1e-12) ** 2
        elif kind == "velocity":
            w = (o.d_alpha - o.d_sigma * o.alpha / o.sigma.clamp_min(1e-12)) ** 2
        elif kind == "max_snr_1":
            w = snr.clamp_min(1.0)
        elif kind == "edm":
            w = (o.alpha**2 * sd**2 + o.sigma**2) / (o.sigma.clamp_min(1e-12) ** 2 * sd**2)
        elif kind == "sigmoid":
            w = 0.5 * torch.sigmoid(sigmoid_bias - lam) * (-self.schedule.dlogsnr_dt(t)).abs() * snr
        else:
            raise ValueError(f"unknown weighting {kind!r}")
        return w.clamp(max=max_weight).float()

    def elbo_weight(self, t: Tensor) -> Tensor:
        """Continuous-time ELBO weight in x-space: -0.5 d lambda/dt * SNR(t)."""
        t = t.double()
        return (-0.5 * self.schedule.dlogsnr_dt(t) * torch.exp(self.schedule.clamped_logsnr(t))).float()


def _alpha_floor(schedule: Schedule, t: Tensor) -> Tensor:
    """alpha at logSNR = -15 for a variance ~1 process: sqrt(sigmoid(-15))."""
    return torch.full_like(t, math.sqrt(1.0 / (1.0 + math.exp(LOGSNR_CLAMP))))
