"""Many-step samplers for Gaussian diffusion teachers, as pure functions (the contract: ``fewstep.samplers``).

``sample(denoiser, process, shape, *, grid, generator, ...)`` draws the prior at grid[0] and runs a step
function; the step functions take the initial state, an explicit decreasing time grid ending at 0 and a
``torch.Generator``. The state and every coefficient are float64, the denoiser is called in its own input
dtype (``denoiser.input_dtype``, default float32). No global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers.grids import check_grid

SAMPLERS = ("ancestral", "ddim", "euler", "heun")


def _call(denoiser: Callable[..., Tensor], z: Tensor, t: float, cond: Tensor | None) -> Tensor:
    dtype = getattr(denoiser, "input_dtype", torch.float32)
    tt = torch.full((z.shape[0],), t, dtype=dtype, device=z.device)
    kw = {} if cond is None else {"cond": cond}
    with torch.no_grad():
        return denoiser(z.to(dtype), tt, **kw).double()


def _row(v: float, z: Tensor) -> Tensor:
    return torch.full((z.shape[0],), v, dtype=torch.float64, device=z.device)


def ddim_eta(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
             eta: float, generator: torch.Generator | None, cond: Tensor | None = None) -> Tensor:
    """DDIM-eta chain: z <- posterior_step(z, D(z, t_i), t_i, t_{i+1}, eta); at t = 0 return D.

    Args:
        z: [B, ...] initial state at grid[0]. grid: [N + 1] decreasing to 0.
    Returns:
        x0 samples [B, ...] float64 (N network evaluations).
    """
    def step(z: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        return process.posterior_step(z, x0, t, s, generator=generator, eta=eta)

    return chain(denoiser, z, grid, step, cond)


def chain(net: Callable[..., Tensor], z: Tensor, grid: Tensor, step: Callable[..., Tensor],
          cond: Tensor | None = None) -> Tensor:
    """The loop shared by x0-chains: x = net(z, t_i); at t_{i+1} = 0 return x, else z = step(z, x, t_i, t_{i+1}).

    Args:
        net: denoiser or student. z: [B, ...] state at grid[0]. grid: [N + 1] decreasing to 0.
        step: ``step(z, x, t [B], s [B]) -> z_s`` (a posterior / re-noising step), float64.
    Returns:
        the final x [B, ...] float64 (N evaluations of ``net``).
    """
    check_grid(grid)
    z = z.double()
    ts = grid.tolist()
    for t, s in zip(ts[:-1], ts[1:]):
        x = _call(net, z, t, cond)
        if s == 0.0:
            return x
        z = step(z, x, _row(t, z), _row(s, z))
    raise AssertionError("unreachable: grid ends at 0")


def ancestral(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
              generator: torch.Generator, cond: Tensor | None = None) -> Tensor:
    """Ancestral (DDPM posterior, eta = 1) sampler; N evaluations."""
    return ddim_eta(denoiser, process, z, grid, eta=1.0, generator=generator, cond=cond)


def ddim(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
         generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
    """Deterministic DDIM (eta = 0); N evaluations."""
    return ddim_eta(denoiser, process, z, grid, eta=0.0, generator=None, cond=cond)


def euler(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
          generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
    """Euler on the probability-flow ODE dz/dt = alpha' D + sigma' (z - alpha D)/sigma; N evaluations."""
    check_grid(grid)
    z = z.double()
    ts = grid.tolist()
    for t, s in zip(ts[:-1], ts[1:]):
        d = process.ode_drift(z, _call(denoiser, z, t, cond), _row(t, z))
        z = z + (s - t) * d
    return z


def heun(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
         generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
    """Heun (trapezoid) on the PF-ODE; the final step into t = 0 is Euler. 2N - 1 evaluations."""
    check_grid(grid)
    z = z.double()
    ts = grid.tolist()
    for t, s in zip(ts[:-1], ts[1:]):
        d = process.ode_drift(z, _call(denoiser, z, t, cond), _row(t, z))
        z_next = z + (s - t) * d
        if s > 0.0:
            d2 = process.ode_drift(z_next, _call(denoiser, z_next, s, cond), _row(s, z))
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
           sampler: str) -> Tensor:
    """Draw ``shape[0]`` samples: prior at grid[0], then the named ``sampler`` (one of ``SAMPLERS``).

    Args:
        shape: [n, ...] including the batch dimension. grid: float64 [N + 1] decreasing to 0.
    Returns:
        float64 [shape].
    """
    fns = {"ancestral": ancestral, "ddim": ddim, "euler": euler, "heun": heun}
    if sampler not in fns:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    check_grid(grid)
    z = process.prior_sample(shape, generator=generator, device=device, t=float(grid[0]))
    return fns[sampler](denoiser, process, z, grid.to(device), generator=generator, cond=cond)
