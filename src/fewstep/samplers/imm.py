"""Samplers of an IMM map f_{s,t} (docs/methods/imm.md), as pure functions with float64 state.

x_T ~ N(0, sigma_d^2 I) at grid[0] = T, then for each step t_i -> t_{i+1}:

- ``pushforward``: x_{t_{i+1}} = f_{t_{i+1}, t_i}(x_{t_i}); the result is the state at the last grid time.
- ``restart``: x~ = f_{t_min, t_i}(x_{t_i}); x_{t_{i+1}} = alpha x~ + sigma sigma_d xi (fresh noise); the result
  is the last x~.

Grids (``imm_grid``): 1 step [T, t_min]; 2 steps [T, t(eta = 1.4), t_min] (the paper; ``two_step="uniform"``
puts the middle point half-way, as the released ImageNet config); otherwise uniform in t, or with
``kind="edm"`` an EDM rho = 7 grid in eta.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.samplers.gaussian import CHUNK
from fewstep.schedules import Schedule

IMMSampler = Literal["pushforward", "restart"]


def imm_grid(steps: int, schedule: Schedule, *, t_max: float, t_min: float, two_step: str = "eta",
             kind: str = "uniform", rho: float = 7.0) -> Tensor:
    """Decreasing float64 grid [steps + 1] from t_max to t_min."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    f64 = torch.float64
    if steps == 2 and kind == "uniform":
        if two_step == "eta":
            mid = float(schedule.t_from_eta(torch.tensor(1.4, dtype=f64)))
            mid = min(max(mid, t_min), t_max)
        elif two_step == "uniform":
            mid = 0.5 * (t_max + t_min)
        else:
            raise ValueError(f"two_step must be 'eta' or 'uniform', got {two_step!r}")
        return torch.tensor([t_max, mid, t_min], dtype=f64)
    if kind == "uniform":
        return torch.linspace(t_max, t_min, steps + 1, dtype=f64)
    if kind == "edm":
        eta_hi = float(schedule.eta(torch.tensor(t_max, dtype=f64)))
        eta_lo = float(schedule.eta(torch.tensor(t_min, dtype=f64)))
        i = torch.arange(steps + 1, dtype=f64) / steps
        eta = (eta_hi ** (1 / rho) + i * (eta_lo ** (1 / rho) - eta_hi ** (1 / rho))) ** rho
        grid = schedule.t_from_eta(eta)
        grid[0], grid[-1] = t_max, t_min
        return grid
    raise ValueError(f"unknown IMM grid kind {kind!r}; choose 'uniform' or 'edm'")


def sample_imm(denoiser: nn.Module, shape: tuple[int, ...], *, grid: Tensor, generator: torch.Generator,
               device: torch.device | str = "cpu", cond: Tensor | None = None, sampler: IMMSampler = "pushforward",
               guidance: float | None = None, null_label: int | None = None) -> Tensor:
    """Samples [shape] float64 from an ``IMMMap`` along the decreasing ``grid`` (len(grid) - 1 calls).

    Args:
        denoiser: the map f(x_t, s, t, cond) with attributes ``schedule`` and ``sigma_d`` (no process is passed).
        shape: [n, ...] including the batch dimension. grid: float64 [N + 1], strictly decreasing from T to
            t_min (``imm_grid``). generator: draws the prior (and restarts).
        sampler: ``pushforward`` or ``restart``. cond: optional labels [n].
        guidance: classifier-free guidance scale w of the network output (``IMMMap.guided``: each call is one
            doubled batch of labels ``cond`` and ``null_label``); None: none.
    """
    if sampler not in ("pushforward", "restart"):
        raise ValueError(f"unknown IMM sampler {sampler!r}; choose 'pushforward' or 'restart'")
    grid = grid.double()
    if grid.dim() != 1 or grid.numel() < 2 or not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("the IMM grid must be a strictly decreasing 1-D tensor of length >= 2")
    if guidance is not None and (cond is None or null_label is None):
        raise ValueError("IMM guidance needs labels (cond) and the null label (num_classes)")
    fmap = denoiser
    sched, sd, n = fmap.schedule, float(fmap.sigma_d), shape[0]

    def f(x: Tensor, s: Tensor, t: Tensor) -> Tensor:  # in CHUNK-row calls (the samples do not depend on it)
        parts = []
        for i in range(0, x.shape[0], CHUNK):
            j = slice(i, i + CHUNK)
            c = None if cond is None else cond[j]
            parts.append(fmap(x[j], s[j], t[j], c) if guidance is None else
                         fmap.guided(x[j], s[j], t[j], c, guidance, null_label))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    x = sd * rng.randn(shape, generator=generator, device=device, dtype=torch.float64)
    times = grid.to(device)
    o = sched(grid.cpu())  # restart coefficients: one schedule evaluation per call, Python floats per step
    alphas, sigmas = o.alpha.tolist(), (o.sigma * sd).tolist()
    with torch.no_grad():
        for i in range(grid.numel() - 1):
            t = times[i].expand(n)
            nxt = times[i + 1].expand(n)
            if sampler == "pushforward":
                x = f(x, nxt, t).double()
                continue
            x_tilde = f(x, times[-1].expand(n), t).double()
            if i == grid.numel() - 2:
                return x_tilde
            xi = rng.randn(shape, generator=generator, device=device, dtype=torch.float64)
            x = alphas[i + 1] * x_tilde + sigmas[i + 1] * xi
    return x
