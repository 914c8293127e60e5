"""Duo's Gaussian connection T(a) (spec/discrete.md section 2 and section 8, test 5, last sentence): the tabulated
keep probability against Monte Carlo and an independent quadrature, its derivative, its inverse, and the law of
argmax(a e_x + s xi)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from fewstep.processes.gaussian_connection import GaussianConnection

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def conn8() -> GaussianConnection:
    return GaussianConnection(8)


def _t_reference(a: float, n: int) -> float:
    """T(a) = (N I - 1)/(N - 1), I = int phi(u - mu) Phi(u)^(N-1) du, mu = a / sqrt(1 - a^2), by adaptive
    quadrature (independent of the library's trapezoid table)."""
    mu = a / math.sqrt(1 - a * a)

    def f(u: float) -> float:
        return stats.norm.pdf(u - mu) * math.exp((n - 1) * stats.norm.logcdf(u))

    i, _ = integrate.quad(f, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12, limit=200)
    return (n * i - 1) / (n - 1)


def _a(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


@pytest.mark.parametrize("a", [0.1, 0.4, 0.7, 0.9])
def test_keep_prob_matches_monte_carlo(conn8, a):
    """P(argmax(a e_x + s xi) = x) from 400k seeded draws agrees with the table within 5 standard errors
    (the table's own error, ~1e-6, is far below the ~1e-3 Monte-Carlo resolution)."""
    n, draws, x = 8, 400_000, 3
    g = torch.Generator().manual_seed(int(a * 1000))
    xi = torch.randn(draws, n, generator=g, dtype=torch.float64)
    w = math.sqrt(1 - a * a) * xi
    w[:, x] += a
    hit = float((w.argmax(-1) == x).double().mean())
    keep = float(conn8.keep_prob(_a(a)))
    i_table = (keep * (n - 1) + 1) / n  # back to I(a) = P(argmax = x)
    se = math.sqrt(i_table * (1 - i_table) / draws)
    assert abs(hit - i_table) < 5 * se, (a, hit, i_table, se)
    keep_mc = (n * hit - 1) / (n - 1)
    assert abs(keep_mc - keep) < 5 * se * n / (n - 1)


@pytest.mark.parametrize("a", [0.05, 0.2, 0.5, 0.8, 0.95, 0.99])
def test_keep_prob_matches_independent_quadrature(conn8, a):
    """The tabulated (linearly interpolated) T agrees with adaptive quadrature to 2e-6; keep_prob is monotone
    with T(0) = 0 and T -> 1."""
    assert float(conn8.keep_prob(_a(a))) == pytest.approx(_t_reference(a, 8), abs=2e-6)
    grid = torch.linspace(0, 0.9999, 5001, dtype=torch.float64)
    k = conn8.keep_prob(grid)
    assert float(k[0]) == 0.0 and bool((k[1:] >= k[:-1]).all()) and float(k[-1]) > 0.99999


@pytest.mark.parametrize("a", [0.05, 0.2, 0.5, 0.8, 0.95, 0.99])
def test_d_keep_prob_matches_finite_differences(conn8, a):
    """d_keep_prob is the slope of the table's segment at a: it equals a central difference of keep_prob inside
    that segment (to round-off), and differs from the true dT/da (central difference of the quadrature) and from
    a wider central difference of keep_prob only by the tabulation error (< 0.5%: segments are ~4e-3 wide in a
    near 0 and far narrower near 1)."""
    d = float(conn8.d_keep_prob(_a(a)))
    h_in = 1e-7  # well inside one segment
    fd_in = float((conn8.keep_prob(_a(a + h_in)) - conn8.keep_prob(_a(a - h_in))) / (2 * h_in))
    assert fd_in == pytest.approx(d, rel=1e-6)
    h = 1e-3 if a < 0.95 else 1e-4  # T'' is large near a = 1
    fd = float((conn8.keep_prob(_a(a + h)) - conn8.keep_prob(_a(a - h))) / (2 * h))
    assert fd == pytest.approx(d, rel=5e-3)
    hr = 1e-5
    true = (_t_reference(a + hr, 8) - _t_reference(a - hr, 8)) / (2 * hr)
    assert true == pytest.approx(d, rel=5e-3)
    assert d > 0


@pytest.mark.parametrize("vocab", [8, 50257])
def test_alpha_tilde_inverts_keep_prob(vocab):
    """alpha_tilde(alpha) round-trips through keep_prob for alpha in [1e-3, 0.999]; construction takes < 2 s of
    CPU time (process time, robust to the machine being shared) even for a GPT-2-sized vocabulary."""
    t0 = time.process_time()
    conn = GaussianConnection(vocab)
    assert time.process_time() - t0 < 2.0
    alpha = torch.linspace(1e-3, 0.999, 2001, dtype=torch.float64)
    a = conn.alpha_tilde(alpha)
    assert bool((a > 0).all()) and bool((a < 1).all()) and bool((a[1:] > a[:-1]).all())
    assert torch.allclose(conn.keep_prob(a), alpha, atol=1e-6, rtol=0)
    assert float(conn.alpha_tilde(_a(0.0))) == 0.0
    # larger vocabularies need a larger Gaussian scale for the same keep probability
    if vocab > 8:
        assert bool((a > GaussianConnection(8).alpha_tilde(alpha)).all())


@pytest.mark.parametrize("bad", [-0.1, -1e-12, 1 + 1e-12, 1.5, float("nan")])
def test_alpha_tilde_rejects_out_of_range(conn8, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conn8.alpha_tilde(torch.tensor([0.5, bad], dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.15, 0.5, 0.85])
def test_corrupt_argmax_has_the_uniform_state_marginal(conn8, alpha):
    """argmax corrupt(e_x, alpha_tilde(alpha), xi) ~ q_t(. | x) = alpha e_x + (1 - alpha)/N: chi-square over the
    N outcomes, and the keep frequency within 5 standard errors of alpha + (1 - alpha)/N."""
    n, b, length, x = 8, 2000, 100, 5
    g = torch.Generator().manual_seed(int(alpha * 100))
    onehot = torch.nn.functional.one_hot(torch.full((b, length), x), n).double()
    a = conn8.alpha_tilde(torch.full((b,), alpha, dtype=torch.float64))
    xi = torch.randn(b, length, n, generator=g, dtype=torch.float64)
    w = conn8.corrupt(onehot, a, xi)
    assert w.shape == (b, length, n) and w.dtype == torch.float64
    z = w.argmax(-1).reshape(-1)
    counts = torch.bincount(z, minlength=n).double().numpy()
    expected = np.full(n, (1 - alpha) / n)
    expected[x] += alpha
    total = z.numel()
    assert stats.chisquare(counts, expected * total).pvalue > 1e-4
    p = expected[x]
    assert abs(counts[x] / total - p) < 5 * math.sqrt(p * (1 - p) / total)
