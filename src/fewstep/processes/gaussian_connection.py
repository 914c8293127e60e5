"""Duo's Gaussian connection between Gaussian and uniform-state discrete diffusion (Sahoo et al., ICML 2025,
arXiv 2506.10892; docs/methods/uniform-diffusion.md).

With w = a e_x + s xi, s = sqrt(1 - a^2), xi ~ N(0, I_N), the token argmax w is distributed as the uniform-state
marginal q_t(. | x) with keep probability

    alpha = T(a) = (N I(a) - 1) / (N - 1),   I(a) = P(argmax w = x) = int phi(u - mu) Phi(u)^(N-1) du,  mu = a / s.

Only marginals correspond (Gaussian trajectories are not a discrete process). ``GaussianConnection`` tabulates T
on a dense float64 grid of mu (trapezoid quadrature in u, Phi^(N-1) through ``log_ndtr``), and inverts it by
monotone interpolation: ``alpha_tilde(alpha)`` gives the Gaussian scale a whose argmax has keep probability
alpha. IDLM-Duo uses it to corrupt a generator's soft output with the uniform teacher's own marginals.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GaussianConnection:
    """T(a) for a vocabulary of ``vocab`` tokens, tabulated once (float64).

    Args:
        vocab: N >= 2. mu_max: largest tabulated mu = a / s (T(mu_max) must be ~1; the default 16 covers
            N up to 10^6). points: grid size. quad_points: quadrature nodes in u.
    """

    def __init__(self, vocab: int, *, mu_max: float = 16.0, points: int = 4097, quad_points: int = 4001) -> None:
        if vocab < 2:
            raise ValueError(f"the Gaussian connection needs vocab >= 2, got {vocab}")
        self.vocab = vocab
        mu = torch.linspace(0.0, mu_max, points, dtype=torch.float64)
        self.mu = mu
        self.alpha_tilde_grid = mu / torch.sqrt(1 + mu * mu)
        self.keep = self._keep_of_mu(mu, quad_points)
        if not bool((self.keep[1:] >= self.keep[:-1] - 1e-12).all()):
            raise RuntimeError("the tabulated T(a) is not monotone: increase quad_points")
        self.keep = torch.cummax(self.keep, 0).values  # remove float64 round-off wiggles near T = 1

    def _keep_of_mu(self, mu: Tensor, quad_points: int) -> Tensor:
        n = self.vocab
        lo, hi = -12.0, float(mu.max()) + 12.0
        u = torch.linspace(lo, hi, quad_points, dtype=torch.float64)
        log_phi_max = (n - 1) * torch.special.log_ndtr(u)  # log Phi(u)^(N-1)   [U]
        out = torch.empty_like(mu)
        for i in range(0, mu.numel(), 512):
            m = mu[i:i + 512, None]
            dens = torch.exp(-0.5 * (u - m) ** 2 + log_phi_max) / math.sqrt(2 * math.pi)
            out[i:i + 512] = torch.trapezoid(dens, u, dim=-1)
        keep = (n * out - 1) / (n - 1)
        keep[0] = 0.0  # exact at a = 0: argmax of pure noise is uniform
        return keep.clamp(0.0, 1.0)

    def keep_prob(self, alpha_tilde: Tensor) -> Tensor:
        """alpha = T(a) (float64, same shape as ``alpha_tilde`` in [0, 1))."""
        a = alpha_tilde.double().clamp(0.0, float(self.alpha_tilde_grid[-1]))
        return _interp(a, self.alpha_tilde_grid, self.keep)

    def d_keep_prob(self, alpha_tilde: Tensor) -> Tensor:
        """dT/da (float64): the slope of the tabulated T between grid nodes."""
        a = alpha_tilde.double().clamp(0.0, float(self.alpha_tilde_grid[-1]))
        slope = (self.keep[1:] - self.keep[:-1]) / (self.alpha_tilde_grid[1:] - self.alpha_tilde_grid[:-1])
        i = torch.searchsorted(self.alpha_tilde_grid, a.reshape(-1), right=True).clamp(1, slope.numel()) - 1
        return slope[i].reshape(a.shape)

    def alpha_tilde(self, alpha: Tensor) -> Tensor:
        """The Gaussian scale a with T(a) = ``alpha`` (float64, alpha in [0, 1]; inverse by interpolation)."""
        al = alpha.double()
        if not bool(((al >= 0) & (al <= 1)).all()):
            raise ValueError("keep probabilities must lie in [0, 1] (got a value outside it, or NaN)")
        top = float(self.keep[-1])
        if bool((al > top).any()):
            raise ValueError(f"keep probability {float(al.max()):.6g} exceeds the tabulated maximum {top:.6g}: "
                             "raise mu_max")
        # the table can be flat at the top (T = 1 to float64): keep the first node of each value
        keep, grid = self.keep, self.alpha_tilde_grid
        strict = torch.cat([torch.ones(1, dtype=torch.bool), keep[1:] > keep[:-1]])
        return _interp(al, keep[strict], grid[strict])

    def corrupt(self, x: Tensor, alpha_tilde: Tensor, xi: Tensor) -> Tensor:
        """w = a x + sqrt(1 - a^2) xi [B, L, N] for x [B, L, N] (soft or one-hot), a [B], xi [B, L, N]."""
        a = alpha_tilde.to(x.dtype).reshape(-1, 1, 1)
        return a * x + torch.sqrt(1 - a * a) * xi.to(x.dtype)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing; float64)."""
    flat = x.reshape(-1)
    i = torch.searchsorted(xp, flat, right=True).clamp(1, xp.numel() - 1)
    x0, x1, y0, y1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = ((flat - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return (y0 + w * (y1 - y0)).reshape(x.shape)
