"""Two-token joint tables with exact laws (the ``grid2d`` suite).

Each sample is a pair of tokens (x, y) in ``[0, bins)``; the true joint is an explicit float64 ``[bins, bins]``
table, so total variation to it is exact. A sampler that draws the two tokens independently can at best reach
the product of some marginals; ``product_tv`` gives the TV of the product of the table's own marginals
(0.5 for the 4-band checkerboard).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

Grid2dKind = Literal["checkerboard", "spiral", "rings"]


def _centres(bins: int) -> Tensor:
    """Cell centres of ``bins`` equal cells covering [-1, 1], float64 ``[bins]``."""
    return (torch.arange(bins, dtype=torch.float64) + 0.5) * (2.0 / bins) - 1.0


def _smooth_curve(points: Tensor, bins: int, width: float) -> Tensor:
    """Gaussian-smoothed density of a curve given as ``points`` [P, 2] at the ``[bins, bins]`` cell centres."""
    c = _centres(bins)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(-1, 1, 2)  # [bins^2, 1, 2]
    d2 = (grid - points[None]).square().sum(-1)  # [bins^2, P]
    return torch.exp(-d2 / (2 * width**2)).sum(-1).reshape(bins, bins)


def grid2d_table(kind: Grid2dKind = "checkerboard", bins: int = 32, bands: int = 4) -> Tensor:
    """The exact joint law of two tokens.

    - ``checkerboard``: with ``band(v) = v * bands // bins``, cell (x, y) is valid iff ``band(x)`` and ``band(y)``
      have the same parity; uniform over valid cells.
    - ``spiral``: a 1.5-turn Archimedean spiral ``r = 0.9 * theta / theta_max``, ``theta`` in [pi/2, 3.5 pi], on
      [-1, 1]^2 (x = first token); 1,024 points roughly uniform in arc length (uniform in theta^2), each
      smoothed by a Gaussian of width 0.75 cell (1.5 / bins); cells below 1e-2 of the maximum are set to 0.
    - ``rings``: two concentric rings of radius 0.35 and 0.8, density ``sum_k exp(-(r - r_k)^2 / (2 w^2))`` with
      w = 0.75 cell (1.5 / bins), weighted by circumference (uniform along the curves); cells below 1e-2 of the
      maximum are set to 0.

    ``bands`` is used by ``checkerboard`` only.

    Args:
        kind: which table.
        bins: tokens per axis.
        bands: checkerboard bands per axis.

    Returns:
        float64 ``[bins, bins]`` summing to 1; entry [x, y] = P(first = x, second = y).
    """
    if bins < 1:
        raise ValueError("bins must be positive")
    if kind == "checkerboard":
        if not 1 <= bands <= bins:
            raise ValueError(f"need 1 <= bands <= bins, got bands={bands}, bins={bins}")
        band = torch.arange(bins) * bands // bins
        table = (band[:, None] % 2 == band[None, :] % 2).to(torch.float64)
    elif kind == "spiral":
        theta = torch.linspace((0.5 * math.pi) ** 2, (3.5 * math.pi) ** 2, 1024, dtype=torch.float64).sqrt()
        r = 0.9 * theta / theta[-1]
        table = _smooth_curve(torch.stack([r * theta.cos(), r * theta.sin()], -1), bins, 1.5 / bins)
    elif kind == "rings":
        c = _centres(bins)
        radius = torch.sqrt(c[:, None].square() + c[None, :].square())
        w = 1.5 / bins
        table = sum(rk * torch.exp(-(radius - rk).square() / (2 * w**2)) for rk in (0.35, 0.8))
    else:
        raise ValueError(f"unknown grid2d kind {kind!r}; expected 'checkerboard', 'spiral' or 'rings'")
    table = torch.where(table >= 1e-2 * table.max(), table, torch.zeros_like(table))
    return table / table.sum()


def sample_table(table: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
    """Draw pairs from a joint table by float64 inverse CDF over the flattened table.

    Args:
        table: ``[X, Y]`` non-negative, summing to 1.
        n: number of samples.
        generator: the only randomness (``n`` float64 uniforms).

    Returns:
        int64 ``[n, 2]``: columns (x, y).
    """
    if table.ndim != 2:
        raise ValueError(f"expected a [X, Y] table, got shape {tuple(table.shape)}")
    flat = table.to(torch.float64).reshape(-1)
    cdf = flat.cumsum(0)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * cdf[-1]
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=flat.numel() - 1)
    cols = table.shape[1]
    return torch.stack([idx // cols, idx % cols], -1)


def product_tv(table: Tensor) -> float:
    """Total variation between a joint ``[X, Y]`` table and the product of its two marginals."""
    t = table.to(torch.float64)
    t = t / t.sum()
    prod = t.sum(1, keepdim=True) * t.sum(0, keepdim=True)
    return 0.5 * (t - prod).abs().sum().item()


def histogram(pairs: Tensor, shape: tuple[int, int]) -> Tensor:
    """Empirical joint of int64 pairs ``[n, 2]`` as a float64 ``shape`` table summing to 1."""
    counts = torch.bincount(pairs[:, 0] * shape[1] + pairs[:, 1], minlength=shape[0] * shape[1])
    return (counts.to(torch.float64) / max(pairs.shape[0], 1)).reshape(shape)
