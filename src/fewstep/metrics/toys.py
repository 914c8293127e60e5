"""Sample-based metrics for the toy suites (docs/benchmarks.md: ``energy``, ``precision``, ``mode_coverage``).

Everything is computed in float64. The energy distance is the unbiased (U-statistic) estimator, evaluated
in row chunks so that memory stays bounded (~64 MB at a time, whatever the sample counts) while the benchmark's
sample sets stay fast (timing: benchmarks/teachers.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import torch
from torch import Tensor

from fewstep.data.toys import GMM

_CHUNK_ELEMS = 1 << 23  # distance-matrix entries per chunk (64 MB in float64)
THREE_SIGMA_MASS = math.erf(3.0 / math.sqrt(2.0))
"""P(|Z| <= 3) = 0.99730...: the mass within 3 standard deviations of a 1-D Gaussian."""


def _as_2d(x: Tensor, name: str) -> Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name} must be [n, d], got shape {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def _pairwise_sum(a: Tensor, b: Tensor) -> float:
    """Sum of all Euclidean distances ||a_i - b_j|| (exact differences, no Gram-matrix shortcut)."""
    rows = max(1, _CHUNK_ELEMS // max(1, b.shape[0]))
    total = 0.0
    for i in range(0, a.shape[0], rows):
        d = torch.cdist(a[i : i + rows], b, compute_mode="donot_use_mm_for_euclid_dist")
        total += float(d.sum())
    return total


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Unbiased energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||.

    The within-set terms are U-statistics: means over ordered pairs i != j (the diagonal is excluded),
    so the estimate is unbiased and fluctuates around 0 (it can be slightly negative) when x and y come from
    the same distribution.

    Args:
        x: samples [n, d], n >= 2.
        y: samples [m, d], m >= 2.

    Returns:
        The estimate as a Python float (computed in float64).
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    n, m = x.shape[0], y.shape[0]
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    if n < 2 or m < 2:
        raise ValueError("energy_distance needs at least 2 samples in each set")
    # exact differences give an exactly-zero diagonal, so the full sums are the off-diagonal sums
    xy = _pairwise_sum(x, y) / (n * m)
    xx = _pairwise_sum(x, x) / (n * (n - 1))
    yy = _pairwise_sum(y, y) / (m * (m - 1))
    return 2.0 * xy - xx - yy


def mean_and_stderr(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """Mean and standard error (sample std with ddof = 1, over sqrt(k)) of k values.

    Args:
        values: k >= 1 numbers (e.g. a metric on k disjoint splits of the samples).

    Returns:
        ``(mean, se)``; ``se`` is NaN when k = 1.
    """
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("mean_and_stderr needs at least one value")
    if v.numel() == 1:
        return float(v[0]), math.nan
    return float(v.mean()), float(v.std(correction=1) / math.sqrt(v.numel()))


def precision(x: Tensor, inside_fn: Callable[[Tensor], Tensor]) -> float:
    """Fraction of samples for which a support predicate holds.

    Args:
        x: samples [n, d].
        inside_fn: maps [n, d] to a boolean [n] (e.g. ``checkerboard_inside``, ``spiral_inside`` or
            ``functools.partial(gmm_inside, gmm)``).

    Returns:
        The fraction in [0, 1].
    """
    inside = inside_fn(x)
    if inside.shape != (x.shape[0],):
        raise ValueError(f"inside_fn must return shape [{x.shape[0]}], got {tuple(inside.shape)}")
    return float(inside.double().mean())


def chi2_quantile(p: float, dof: int) -> float:
    """Quantile of the chi-square distribution with ``dof`` degrees of freedom (no scipy).

    Exact for dof = 1 (squared normal quantile) and dof = 2 (-2 log(1 - p)); otherwise the
    Wilson-Hilferty approximation dof * (1 - 2/(9 dof) + z_p sqrt(2/(9 dof)))^3, whose coverage error at
    p = 0.9973 is below 2e-4 for dof >= 3 (e.g. 0.99741 instead of 0.99730 at dof = 8).

    Args:
        p: probability in (0, 1).
        dof: degrees of freedom >= 1.

    Returns:
        The quantile q with P(chi2_dof <= q) ~= p.
    """
    if not 0.0 < p < 1.0 or dof < 1:
        raise ValueError(f"chi2_quantile needs 0 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    if dof == 1:
        return NormalDist().inv_cdf(0.5 + p / 2.0) ** 2
    if dof == 2:
        return -2.0 * math.log1p(-p)
    z = NormalDist().inv_cdf(p)
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


def gmm_inside(gmm: GMM, x: Tensor, mass: float = THREE_SIGMA_MASS) -> Tensor:
    """Whether each sample lies "within 3 standard deviations" of its mixture component.

    Each sample is assigned to its most likely component k (``gmm.assign``); it is inside when its
    squared Mahalanobis distance (x - mu_k)^T Sigma_k^{-1} (x - mu_k) is at most the chi-square quantile
    (d degrees of freedom) of ``mass``. With the default mass 0.9973 = P(|Z| <= 3) this is the d-dimensional
    analogue of "within 3 standard deviations": true samples are inside with probability ~0.9973 whatever d.
    The quantile uses :func:`chi2_quantile` (Wilson-Hilferty for d >= 3).

    Args:
        gmm: the mixture.
        x: samples [n, d].
        mass: probability mass of the accepted ellipsoid of each component.

    Returns:
        Boolean [n].
    """
    x = _as_2d(x, "x")
    if x.shape[1] != gmm.dim:
        raise ValueError(f"samples have dimension {x.shape[1]}, the GMM {gmm.dim}")
    k = gmm.assign(x)
    chol = torch.linalg.cholesky(gmm.covs.double())[k]  # [n, d, d]
    diff = (x - gmm.means.double()[k])[..., None]
    sol = torch.linalg.solve_triangular(chol, diff, upper=False)[..., 0]
    return (sol**2).sum(1) <= chi2_quantile(mass, gmm.dim)


def _component_counts(gmm: GMM, x: Tensor) -> Tensor:
    x = _as_2d(x, "x")
    if x.shape[0] == 0:
        raise ValueError("need at least one sample")
    return torch.bincount(gmm.assign(x), minlength=gmm.weights.shape[0]).double()


def mode_coverage(gmm: GMM, x: Tensor, threshold: float = 0.5) -> float:
    """Fraction of components receiving at least ``threshold`` times their expected share of samples.

    Samples are assigned to their most likely component (``gmm.assign``); component k is covered when
    its count is >= threshold * weight_k * n.

    Args:
        gmm: the mixture (K components).
        x: samples [n, d].
        threshold: fraction of the expected count required (0.5 in docs/benchmarks.md).

    Returns:
        Covered components / K, in [0, 1].
    """
    counts = _component_counts(gmm, x)
    expected = gmm.weights.double() * x.shape[0]
    return float((counts >= threshold * expected).double().mean())


def mode_weights_tv(gmm: GMM, x: Tensor) -> float:
    """Total variation between assigned-component frequencies and the mixture weights (a diagnostic).

    Args:
        gmm: the mixture (K components).
        x: samples [n, d].

    Returns:
        0.5 * sum_k |count_k / n - weight_k|, in [0, 1].
    """
    counts = _component_counts(gmm, x)
    return float(0.5 * (counts / counts.sum() - gmm.weights.double()).abs().sum())
