"""Many-step samplers for Gaussian diffusion teachers, as pure functions (the contract: ``fewstep.samplers``).

``sample(denoiser, process, shape, *, grid, generator, ...)`` draws the prior at grid[0] and runs a step
function; the step functions take the initial state, an explicit decreasing time grid ending at 0 and a
``torch.Generator``. Every row shares a step's times, so the schedule is evaluated once per call
(``GaussianProcess.grid_values``) and a step multiplies by Python-float coefficients: no per-row coefficient vectors,
no host synchronisation on a GPU. The state and every coefficient are float64, the denoiser is called in its own input
dtype (``denoiser.input_dtype``, default float32). No global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers.grids import check_grid

SAMPLERS = ("ancestral", "ddim", "euler", "heun")


def _call(denoiser: Callable[..., Tensor], z: Tensor, t: float, cond: Tensor | None,
          chunk: int | None = None) -> Tensor:
    """The denoiser at the shared time ``t`` on z [B, ...] (its input dtype), float64 out; ``chunk`` rows per call."""
    dtype = getattr(denoiser, "input_dtype", torch.float32)
    zz = z.to(dtype)
    tt = torch.full((z.shape[0],), t, dtype=dtype, device=z.device)
    with torch.no_grad():
        if chunk is None or z.shape[0] <= chunk:
            return denoiser(zz, tt, **({} if cond is None else {"cond": cond})).double()
        parts = [denoiser(zz[i:i + chunk], tt[i:i + chunk], **({} if cond is None else {"cond": cond[i:i + chunk]}))
                 for i in range(0, z.shape[0], chunk)]
        return torch.cat(parts).double()


CHUNK = 1024
"""Rows per network call inside a sampler step (``sample(..., chunk=)``): the state stays one batch, so the random
stream and the samples do not depend on it; smaller calls stay in cache (measured: ``fewstep bench speed``)."""

Step = Callable[[Tensor, Tensor, int], Tensor]


def ddim_eta(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
             eta: float, generator: torch.Generator | None, cond: Tensor | None = None,
             chunk: int | None = None) -> Tensor:
    """DDIM-eta chain: z <- posterior_step(z, D(z, t_i), t_i, t_{i+1}, eta); at t = 0 return D.

    Args:
        z: [B, ...] initial state at grid[0]. grid: [N + 1] decreasing to 0.
    Returns:
        x0 samples [B, ...] float64 (N network evaluations).
    """
    vals = process.grid_values(grid)

    def step(z: Tensor, x0: Tensor, i: int) -> Tensor:
        return process.posterior_step_at(z, x0, vals[i], vals[i + 1], generator=generator, eta=eta)

    return chain(denoiser, z, grid, step, cond, chunk=chunk)


def chain(net: Callable[..., Tensor], z: Tensor, grid: Tensor, step: Step, cond: Tensor | None = None, *,
          chunk: int | None = None) -> Tensor:
    """The loop shared by x0-chains: x = net(z, t_i); at t_{i+1} = 0 return x, else z = step(z, x, i).

    Args:
        net: denoiser or student. z: [B, ...] state at grid[0]. grid: [N + 1] decreasing to 0.
        step: ``step(z, x, i) -> z at grid[i + 1]`` (a posterior / re-noising step from grid[i]), float64.
        chunk: rows per network call (None: all).
    Returns:
        the final x [B, ...] float64 (N evaluations of ``net``).
    """
    check_grid(grid)
    z = z.double()
    ts = grid.tolist()
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x = _call(net, z, t, cond, chunk)
        if s == 0.0:
            return x
        z = step(z, x, i)
    raise AssertionError("unreachable: grid ends at 0")


def ancestral(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
              generator: torch.Generator, cond: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Ancestral (DDPM posterior, eta = 1) sampler; N evaluations."""
    return ddim_eta(denoiser, process, z, grid, eta=1.0, generator=generator, cond=cond, chunk=chunk)


def ddim(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
         generator: torch.Generator | None = None, cond: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Deterministic DDIM (eta = 0); N evaluations."""
    return ddim_eta(denoiser, process, z, grid, eta=0.0, generator=None, cond=cond, chunk=chunk)


def euler(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
          generator: torch.Generator | None = None, cond: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Euler on the probability-flow ODE dz/dt = alpha' D + sigma' (z - alpha D)/sigma; N evaluations."""
    check_grid(grid)
    z = z.double()
    ts, vals = grid.tolist(), process.grid_values(grid)
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        d = process.ode_drift_at(z, _call(denoiser, z, t, cond, chunk), vals[i])
        z = z + (s - t) * d
    return z


def heun(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
         generator: torch.Generator | None = None, cond: Tensor | None = None, chunk: int | None = None) -> Tensor:
    """Heun (trapezoid) on the PF-ODE; the final step into t = 0 is Euler. 2N - 1 evaluations."""
    check_grid(grid)
    z = z.double()
    ts, vals = grid.tolist(), process.grid_values(grid)
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        d = process.ode_drift_at(z, _call(denoiser, z, t, cond, chunk), vals[i])
        z_next = z + (s - t) * d
        if s > 0.0:
            d2 = process.ode_drift_at(z_next, _call(denoiser, z_next, s, cond, chunk), vals[i + 1])
            z_next = z + (s - t) * 0.5 * (d + d2)
        z = z_next
    return z


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations per sample of ``sampler`` with ``steps`` steps."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return 2 * steps - 1 if sampler == "heun" else steps


def sample(denoiser: Callable[..., Tensor], process: GaussianProcess, shape: tuple[int, ...], *, grid: Tensor,
           generator: torch.Generator, device: torch.device | str = "cpu", cond: Tensor | None = None,
           sampler: str, chunk: int | None = CHUNK) -> Tensor:
    """Draw ``shape[0]`` samples: prior at grid[0], then the named ``sampler`` (one of ``SAMPLERS``).

    Args:
        shape: [n, ...] including the batch dimension. grid: float64 [N + 1] decreasing to 0.
        chunk: rows per network call (None: the whole batch); the samples do not depend on it.
    Returns:
        float64 [shape].
    """
    fns = {"ancestral": ancestral, "ddim": ddim, "euler": euler, "heun": heun}
    if sampler not in fns:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    check_grid(grid)
    z = process.prior_sample(shape, generator=generator, device=device, t=float(grid[0]))
    return fns[sampler](denoiser, process, z, grid, generator=generator, cond=cond, chunk=chunk)
