"""Analytic toy data: Gaussian mixtures with an exact denoiser, a 2-D checkerboard and a 2-D spiral.

The exact GMM denoiser follows docs/oracles.md: under z_t = alpha x + sigma eps each component
N(mu_k, Sigma_k) becomes N(alpha mu_k, C_k), C_k = alpha^2 Sigma_k + sigma^2 I, and
E[x | z_t] = sum_k r_k(z) m_k(z) with m_k = mu_k + alpha Sigma_k C_k^{-1} (z - alpha mu_k). Everything is
float64, with log-sum-exp responsibilities and Cholesky solves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fewstep.processes.base import bcast, check_times
from fewstep.schedules import Schedule


@dataclass(frozen=True)
class GMM:
    """A Gaussian mixture: weights [K], means [K, d], covariances [K, d, d] (all float64)."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    def __post_init__(self) -> None:
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError("GMM needs weights [K], means [K, d], covs [K, d, d]")
        if abs(float(self.weights.sum()) - 1.0) > 1e-9:
            raise ValueError("GMM weights must sum to 1")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, *, generator: torch.Generator, return_labels: bool = False) -> Tensor:
        """[n, d] float64 samples (and labels [n] if asked)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[labels] + (chol[labels] @ eps[:, :, None])[:, :, 0]
        return (x, labels) if return_labels else x

    def component_log_probs(self, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """log pi_k + log N(z; alpha mu_k, alpha^2 Sigma_k + sigma^2 I), shape [B, K]; alpha, sigma [B]."""
        cinv, logdet = self._noisy_precision(alpha, sigma)  # [B or 1, K, d, d], [B or 1, K]
        diff = z[:, None, :] - alpha[:, None, None] * self.means[None]  # [B, K, d]
        maha = (diff * _apply(cinv, diff)).sum(-1)
        d = self.dim
        return torch.log(self.weights)[None] - 0.5 * (d * math.log(2 * math.pi) + logdet + maha)

    def _noisy_precision(self, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """C_k^{-1} and log det C_k for C_k = alpha^2 Sigma_k + sigma^2 I; factored once when every row
        shares the same time (the sampler case), per row otherwise."""
        if alpha.numel() > 1 and bool((alpha == alpha[0]).all()) and bool((sigma == sigma[0]).all()):
            alpha, sigma = alpha[:1], sigma[:1]
        eye = torch.eye(self.dim, dtype=torch.float64)
        sig2 = sigma.clamp_min(1e-6) ** 2
        c = alpha[:, None, None, None] ** 2 * self.covs[None] + sig2[:, None, None, None] * eye
        chol = torch.linalg.cholesky(c)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.cholesky_inverse(chol), logdet

    def posterior_mean(self, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x | z_t = z] [B, d] for z [B, d] and alpha, sigma [B]."""
        z, alpha, sigma = z.double(), alpha.double(), sigma.double()
        cinv, logdet = self._noisy_precision(alpha, sigma)
        diff = z[:, None, :] - alpha[:, None, None] * self.means[None]  # [B, K, d]
        cinv_diff = _apply(cinv, diff)
        maha = (diff * cinv_diff).sum(-1)
        logr = torch.log(self.weights)[None] - 0.5 * (logdet + maha)
        r = torch.softmax(logr, dim=1)
        m = self.means[None] + alpha[:, None, None] * torch.einsum("kij,bkj->bki", self.covs, cinv_diff)
        return (r[..., None] * m).sum(1)

    def posterior_cov(self, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Cov[x | z_t = z] [B, d, d] = sum_k r_k (S_k + m_k m_k^T) - E E^T.

        S_k = Sigma_k - alpha^2 Sigma_k C_k^-1 Sigma_k is the within-component posterior covariance.
        """
        z, alpha, sigma = z.double(), alpha.double(), sigma.double()
        cinv, logdet = self._noisy_precision(alpha, sigma)
        diff = z[:, None, :] - alpha[:, None, None] * self.means[None]
        cinv_diff = _apply(cinv, diff)
        r = torch.softmax(torch.log(self.weights)[None] - 0.5 * (logdet + (diff * cinv_diff).sum(-1)), dim=1)
        m = self.means[None] + alpha[:, None, None] * torch.einsum("kij,bkj->bki", self.covs, cinv_diff)
        s_k = self.covs[None] - alpha[:, None, None, None] ** 2 * self.covs[None] @ cinv @ self.covs[None]
        second = (r[..., None, None] * (s_k + m[..., :, None] * m[..., None, :])).sum(1)
        mean = (r[..., None] * m).sum(1)
        return second - mean[:, :, None] * mean[:, None, :]

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact data log-density [B]."""
        one = torch.ones(x.shape[0], dtype=torch.float64)
        return torch.logsumexp(self.component_log_probs(x.double(), one, 0 * one), dim=1)

    def assign(self, x: Tensor) -> Tensor:
        """Most likely component of each sample [B] (int64)."""
        one = torch.ones(x.shape[0], dtype=torch.float64)
        return self.component_log_probs(x.double(), one, 0 * one).argmax(1)


def _apply(mats: Tensor, v: Tensor) -> Tensor:
    """mats [1 or B, K, d, d] applied to v [B, K, d] -> [B, K, d]."""
    if mats.shape[0] == 1:
        return torch.einsum("kij,bkj->bki", mats[0], v)
    return torch.einsum("bkij,bkj->bki", mats, v)


class GMMOracle(nn.Module):
    """The exact denoiser of a GMM under a schedule: a float64 ``Denoiser`` with no parameters."""

    input_dtype = torch.float64

    def __init__(self, gmm: GMM, schedule: Schedule) -> None:
        super().__init__()
        self.gmm, self.schedule = gmm, schedule

    def forward(self, x_t: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_times(x_t, t)
        o = self.schedule(t.double())
        return self.gmm.posterior_mean(x_t.reshape(x_t.shape[0], -1), o.alpha, o.sigma).reshape(x_t.shape)

    def sample_data(self, n: int, generator: torch.Generator) -> Tensor:
        """n data samples [n, d] (float64)."""
        return self.gmm.sample(n, generator=generator)

    def posterior_cov(self, z: Tensor, t: Tensor) -> Tensor:
        """Cov[x | z_t] [B, d, d]."""
        o = self.schedule(t.double())
        return self.gmm.posterior_cov(z.reshape(z.shape[0], -1), o.alpha, o.sigma)

    def score(self, z: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(z) = (alpha E[x|z] - z) / sigma^2."""
        o = self.schedule(t.double())
        return (bcast(o.alpha, z) * self(z, t) - z.double()) / bcast(o.sigma, z) ** 2

    def log_prob_t(self, z: Tensor, t: Tensor) -> Tensor:
        """log p_t(z) [B]."""
        o = self.schedule(t.double())
        z = z.double().reshape(z.shape[0], -1)  # like forward, accept [B, C, H, W]
        return torch.logsumexp(self.gmm.component_log_probs(z, o.alpha, o.sigma), dim=1)


def make_gmm8d() -> GMM:
    """The fixed ``gmm8d`` mixture: 8 components in 8-D, unequal weights, well separated, ~unit variance.

    Means are the rows of a fixed random orthogonal matrix scaled by 3 and centred; component stds are
    0.15-0.30 (isotropic); weights are proportional to 1..8. Built from a fixed seed: always the same.
    """
    g = torch.Generator().manual_seed(20240607)
    d = k = 8
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    weights = torch.arange(1, k + 1, dtype=torch.float64)
    weights = weights / weights.sum()
    means = 3.0 * q[:k]
    means = means - (weights[:, None] * means).sum(0)
    stds = torch.linspace(0.15, 0.30, k, dtype=torch.float64)
    covs = stds[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)[None]
    return GMM(weights, means, covs)


# ---------------------------------------------------------------------------------------------- 2-D toys
def checkerboard_sample(n: int, *, generator: torch.Generator) -> Tensor:
    """Uniform on the 8 dark squares of a 4x4 checkerboard on [-2, 2]^2; [n, 2] float64."""
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    cell = (u[:, 0] * 8).floor().clamp(max=7).long()
    row = cell // 2
    col = 2 * (cell % 2) + (row % 2)
    x = col.double() + u[:, 1] - 2.0
    y = row.double() + u[:, 2] - 2.0
    return torch.stack([x, y], dim=1)


def checkerboard_inside(x: Tensor) -> Tensor:
    """Boolean [n]: inside a dark square of the checkerboard."""
    i = torch.floor(x[:, 0] + 2.0)
    j = torch.floor(x[:, 1] + 2.0)
    inside_box = (x.abs() <= 2.0).all(1)
    return inside_box & (((i + j) % 2) == 0)


SPIRAL_NOISE = 0.05
SPIRAL_TURNS = 1.5


def _spiral_curve(u: Tensor) -> Tensor:
    theta = u * SPIRAL_TURNS * 2 * math.pi + math.pi / 4
    r = 0.2 + 1.6 * u
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)


def spiral_sample(n: int, *, generator: torch.Generator) -> Tensor:
    """A noisy 2-D spiral: arc-uniform points of a 1.5-turn spiral plus N(0, 0.05^2 I); [n, 2] float64."""
    # sample positions proportional to arc length via a fine polyline
    fine = _spiral_curve(torch.linspace(0, 1, 4097, dtype=torch.float64))
    seg = (fine[1:] - fine[:-1]).norm(dim=1)
    idx = torch.multinomial(seg, n, replacement=True, generator=generator)
    frac = torch.rand(n, generator=generator, dtype=torch.float64)
    pts = fine[idx] + frac[:, None] * (fine[idx + 1] - fine[idx])
    return pts + SPIRAL_NOISE * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def spiral_inside(x: Tensor) -> Tensor:
    """Boolean [n]: within 3 noise standard deviations of the spiral curve."""
    fine = _spiral_curve(torch.linspace(0, 1, 4097, dtype=torch.float64))
    dist = torch.cdist(x.double(), fine).min(dim=1).values
    return dist <= 3 * SPIRAL_NOISE
