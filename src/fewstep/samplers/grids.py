"""Explicit, decreasing time grids t_0 > t_1 > ... > t_N = 0 (float64), one per sampler call."""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep.schedules import Schedule


def uniform_grid(steps: int, *, t_max: float = 1.0) -> Tensor:
    """[steps + 1] uniform in t from ``t_max`` down to 0."""
    _check_steps(steps)
    return torch.linspace(t_max, 0.0, steps + 1, dtype=torch.float64)


def edm_grid(steps: int, schedule: Schedule, *, eta_min: float = 0.002, eta_max: float = 80.0,
             rho: float = 7.0) -> Tensor:
    """[steps + 1]: EDM rho-spaced noise levels eta_i in [eta_min, eta_max] mapped to t, then 0 appended."""
    _check_steps(steps)
    if steps == 1:
        etas = torch.tensor([eta_max], dtype=torch.float64)
    else:
        i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
        etas = (eta_max ** (1 / rho) + i * (eta_min ** (1 / rho) - eta_max ** (1 / rho))) ** rho
    return torch.cat([schedule.t_from_eta(etas), torch.zeros(1, dtype=torch.float64)])


def logsnr_grid(steps: int, schedule: Schedule, *, logsnr_min: float = -15.0, logsnr_max: float = 15.0) -> Tensor:
    """[steps + 1]: uniform in logSNR from ``logsnr_min`` to ``logsnr_max`` mapped to t, then 0 appended."""
    _check_steps(steps)
    lam = torch.linspace(logsnr_min, logsnr_max, steps, dtype=torch.float64)
    return torch.cat([schedule.t_from_logsnr(lam), torch.zeros(1, dtype=torch.float64)])


def diffusers_grid(spacing: str, steps: int, train_timesteps: int, *, steps_offset: int = 0) -> Tensor:
    """[steps + 1]: the inference timesteps of diffusers' DDIM / DDPM schedulers for ``timestep_spacing`` =
    ``trailing``, ``leading`` or ``linspace`` (same integer arithmetic), as times t = (n + 1) / N of a
    ``DDPMSchedule``, then 0 (alpha-bar = 1, diffusers' ``set_alpha_to_one``). ``trailing`` with steps dividing N
    is the uniform grid."""
    import numpy as np

    _check_steps(steps)
    n = int(train_timesteps)
    if steps > n:
        raise ValueError(f"{steps} steps exceed the model's {n} training timesteps")
    if spacing == "trailing":
        ts = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "linspace":
        ts = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; choose trailing, leading or linspace")
    t = torch.tensor((ts + 1).tolist(), dtype=torch.float64) / n
    grid = torch.cat([t.clamp(max=1.0), torch.zeros(1, dtype=torch.float64)])
    check_grid(grid)
    return grid


GRIDS = ("uniform", "edm", "logsnr", "trailing", "leading", "linspace")


def make_grid(kind: str, steps: int, schedule: Schedule) -> Tensor:
    """Grid by name: ``uniform``, ``edm`` or ``logsnr``; for a ``DDPMSchedule`` (diffusers teacher) also diffusers'
    timestep spacings ``trailing``, ``leading`` (with the schedule's ``steps_offset``) and ``linspace``."""
    if kind in ("trailing", "leading", "linspace"):
        from fewstep.schedules import DDPMSchedule

        if not isinstance(schedule, DDPMSchedule):
            raise ValueError(f"grid {kind!r} is a diffusers timestep spacing: it needs a ddpm process (a diffusers "
                             "teacher)")
        return diffusers_grid(kind, steps, schedule.timesteps, steps_offset=schedule.steps_offset)
    if kind == "uniform":
        return uniform_grid(steps)
    if kind == "edm":
        return edm_grid(steps, schedule)
    if kind == "logsnr":
        return logsnr_grid(steps, schedule)
    raise ValueError(f"unknown grid {kind!r}; choose one of {GRIDS}")


def check_grid(grid: Tensor) -> None:
    """Raise unless ``grid`` is 1-D, strictly decreasing, within [0, 1] and ends at 0."""
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("a time grid needs at least two points")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("a time grid must be strictly decreasing")
    if float(grid[0]) > 1.0 or float(grid[-1]) != 0.0:
        raise ValueError("a time grid must start at t <= 1 and end at 0")


def _check_steps(steps: int) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
