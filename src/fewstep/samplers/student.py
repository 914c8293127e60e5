"""The k-step sampler of a Moment Matching student, as a pure function (docs/methods/mm.md).

A student G(z_t, t) returns a *sample* x~ of the data given z_t. Its k-step sampler runs on the uniform grid
[1, 1 - 1/k, ..., 1/k, 0] and re-noises every sample to the next time:

    for i: x~ = G(z, t_i); if t_{i+1} == 0: return x~; z = renoise(z, x~, t_i, t_{i+1})

``renoise`` is shared with training so that both use the same rule:

- ``"posterior"`` (default): z_s ~ q(z_s | x = x~, z_t) through ``GaussianProcess.posterior_step`` with the
  training eta (eta = 1: the exact posterior). It keeps the noise already in z_t.
- ``"fresh"``: z_s = alpha_s x~ + sigma_s xi, forgetting z_t (a DMD-type re-noising). At t = 1 the two agree.

State and coefficients are float64; the student is called in its own input dtype. All noise comes from the
explicit generator (or an explicit ``noise`` tensor), never the global RNG. With G := T (a teacher denoiser)
and ``"posterior"`` / eta = 1 the sampler is exactly the teacher's ancestral sampler on the same grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from fewstep import rng
from fewstep.processes.base import bcast
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers.gaussian import CHUNK, chain
from fewstep.samplers.grids import check_grid, uniform_grid

Renoise = Literal["posterior", "fresh"]
RENOISE = ("posterior", "fresh")


def renoise(process: GaussianProcess, z_t: Tensor, x_tilde: Tensor, t: Tensor, s: Tensor, *,
            mode: Renoise = "posterior", eta: float = 1.0, generator: torch.Generator | None = None,
            noise: Tensor | None = None) -> Tensor:
    """Move a student sample ``x_tilde`` from time t to time s < t (float64, no grad).

    Args:
        process: the Gaussian process. z_t: [B, ...] state at t. x_tilde: [B, ...] the student's sample.
        t, s: [B] times with s < t. mode: ``"posterior"`` or ``"fresh"`` (see module docstring).
        eta: DDIM-eta of the posterior step (``"posterior"`` only; 1 is the exact posterior).
        generator: draws the noise when ``noise`` is None. noise: [B, ...] explicit standard normal noise.
    Returns:
        z_s [B, ...] float64, detached from any graph.
    """
    if mode not in RENOISE:
        raise ValueError(f"unknown renoise mode {mode!r}; choose one of {RENOISE}")
    z_t, x_tilde = z_t.detach().double(), x_tilde.detach().double()
    t, s = t.double(), s.double()
    if mode == "posterior":
        return process.posterior_step(z_t, x_tilde, t, s, generator=generator, eta=eta,
                                      noise=None if noise is None else noise.double())
    if bool((s >= t).any()):
        raise ValueError("renoise needs s < t for every row")
    if noise is None:
        if generator is None:
            raise ValueError("fresh re-noising needs a generator or explicit noise")
        noise = rng.randn(x_tilde.shape, generator=generator, device=x_tilde.device, dtype=torch.float64)
    o = process.schedule(s)
    return bcast(o.alpha, x_tilde) * x_tilde + bcast(o.sigma, x_tilde) * noise.double()


def student_grid(k: int) -> Tensor:
    """The k-step grid [1, 1 - 1/k, ..., 1/k, 0] (float64, [k + 1])."""
    return uniform_grid(k)


def multistep(denoiser: Callable[..., Tensor], process: GaussianProcess, z: Tensor, grid: Tensor, *,
              generator: torch.Generator, cond: Tensor | None = None, eta: float = 1.0,
              renoise_mode: Renoise = "posterior", chunk: int | None = None) -> Tensor:
    """Run the student sampler from ``z`` at grid[0] down the explicit decreasing ``grid`` (ends at 0).

    Every row shares a step's times: the re-noising uses scalar coefficients (``GaussianProcess.grid_values``), the
    same arithmetic as :func:`renoise` with per-row times.

    Args:
        denoiser: the student G(z, t, cond=...) -> x~ shaped like z. z: [B, ...] initial state.
        grid: [N + 1] decreasing to 0 (``student_grid(k)`` for a k-step student).
        generator: draws every re-noising. eta, renoise_mode: as in training.
        cond: optional labels [B]. chunk: rows per network call (None: all).
    Returns:
        samples [B, ...] float64 (N student evaluations).
    """
    if renoise_mode not in RENOISE:
        raise ValueError(f"unknown renoise mode {renoise_mode!r}; choose one of {RENOISE}")
    vals = process.grid_values(grid)

    def step(z: Tensor, x_tilde: Tensor, i: int) -> Tensor:
        if renoise_mode == "posterior":
            return process.posterior_step_at(z, x_tilde, vals[i], vals[i + 1], generator=generator, eta=eta)
        noise = rng.randn(x_tilde.shape, generator=generator, device=x_tilde.device, dtype=torch.float64)
        return vals[i + 1][0] * x_tilde + vals[i + 1][1] * noise

    return chain(denoiser, z, grid, step, cond, chunk=chunk)


def sample_student(denoiser: Callable[..., Tensor], process: GaussianProcess, shape: tuple[int, ...], *,
                   grid: Tensor, generator: torch.Generator, device: torch.device | str = "cpu",
                   cond: Tensor | None = None, eta: float = 1.0, renoise_mode: Renoise = "posterior",
                   chunk: int | None = CHUNK) -> Tensor:
    """Draw ``shape[0]`` samples: z ~ prior at t = grid[0], then ``multistep`` with the student ``denoiser``.

    Args:
        shape: [n, ...] including the batch dimension. grid: float64 [N + 1] decreasing to 0
            (``student_grid(k)`` for a k-step student).
    Returns:
        float64 [shape]. Same seed, same output; the prior draw matches ``fewstep.samplers.sample``.
    """
    check_grid(grid)
    z = process.prior_sample(shape, generator=generator, device=device, t=float(grid[0]))
    return multistep(denoiser, process, z, grid, generator=generator, eta=eta, renoise_mode=renoise_mode,
                     cond=cond, chunk=chunk)
