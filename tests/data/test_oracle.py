"""The exact Gaussian-mixture oracle and the toy data (spec/continuous.md §7 and §6.12)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from _shared import gen, gmm2d
from fewstep.data.toys import (
    GMM,
    GMMOracle,
    checkerboard_inside,
    checkerboard_sample,
    make_gmm8d,
    spiral_inside,
    spiral_sample,
)
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py
SCHEDULES = [CosineSchedule(), FlowSchedule()]
IDS = ["cosine", "flow"]


_gen = gen
_gmm2d = gmm2d


GMMS = {"gmm2d": _gmm2d, "gmm8d": make_gmm8d}


def _reference_log_pt(gmm: GMM, z: Tensor, alpha: float, sigma: float) -> Tensor:
    """log p_t(z) from torch.distributions (independent of the oracle's code)."""
    eye = torch.eye(gmm.dim, dtype=F64)
    comp = MultivariateNormal(alpha * gmm.means, covariance_matrix=alpha**2 * gmm.covs + sigma**2 * eye)
    return MixtureSameFamily(Categorical(probs=gmm.weights), comp).log_prob(z)


def _sched_at(schedule: Schedule, t: float) -> tuple[float, float]:
    o = schedule(torch.tensor(t, dtype=F64))
    return float(o.alpha), float(o.sigma)


# ------------------------------------------------------------------------------------------ E[x | z_t]
@pytest.mark.parametrize("name", list(GMMS))
def test_posterior_mean_vs_importance_sampling(name: str) -> None:
    """Self-normalised IS over prior draws x_i with weights N(z; alpha x_i, sigma^2 I)."""
    gmm = GMMS[name]()
    sch = CosineSchedule()
    oracle = GMMOracle(gmm, sch)
    m = 200_000
    xs = gmm.sample(m, generator=_gen(1))
    times = (0.3, 0.6, 0.9) if name == "gmm8d" else (0.1, 0.4, 0.8)
    for t in times:
        a, s = _sched_at(sch, t)
        q = 6
        x_q = gmm.sample(q, generator=_gen(int(100 * t)))
        z = a * x_q + s * torch.randn(q, gmm.dim, generator=_gen(int(100 * t) + 1), dtype=F64)
        logw = -((z[:, None, :] - a * xs[None]) ** 2).sum(-1) / (2 * s**2)  # [q, m]
        w = torch.softmax(logw, dim=1)
        est = w @ xs
        var = w @ xs**2 - est**2
        ess = 1.0 / (w**2).sum(1)
        assert bool((ess > 200).all()), f"IS degenerate at t={t}: ESS {ess}"
        got = oracle(z, torch.full((q,), t, dtype=F64))
        se = torch.sqrt(var / ess[:, None])
        assert torch.all((got - est).abs() < 5 * se + 1e-6), (t, got, est, se)


@pytest.mark.parametrize("name", list(GMMS))
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_log_prob_and_tweedie_vs_torch_distributions(name: str, schedule: Schedule) -> None:
    gmm = GMMS[name]()
    oracle = GMMOracle(gmm, schedule)
    for t in (0.05, 0.5, 0.95):
        a, s = _sched_at(schedule, t)
        z = a * gmm.sample(16, generator=_gen(3)) + s * torch.randn(16, gmm.dim, generator=_gen(4), dtype=F64)
        tt = torch.full((16,), t, dtype=F64)
        z_req = z.clone().requires_grad_(True)
        ref = _reference_log_pt(gmm, z_req, a, s)
        (grad,) = torch.autograd.grad(ref.sum(), z_req)
        torch.testing.assert_close(oracle.log_prob_t(z, tt), ref.detach(), rtol=1e-10, atol=1e-10)
        # Tweedie: E[x | z] = (z + sigma^2 grad log p_t(z)) / alpha
        torch.testing.assert_close(oracle(z, tt), (z + s**2 * grad) / a, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", list(GMMS))
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_score_matches_autograd_of_log_prob(name: str, schedule: Schedule) -> None:
    gmm = GMMS[name]()
    oracle = GMMOracle(gmm, schedule)
    g = _gen(7)
    n = 32
    t = torch.rand(n, generator=g, dtype=F64) * 0.96 + 0.02  # per-row times
    o = schedule(t)
    z = o.alpha[:, None] * gmm.sample(n, generator=g) + o.sigma[:, None] * torch.randn(
        n, gmm.dim, generator=g, dtype=F64
    )
    z_req = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(oracle.log_prob_t(z_req, t).sum(), z_req)
    score = oracle.score(z, t)
    assert score.dtype == F64 and score.shape == z.shape
    torch.testing.assert_close(score, grad, rtol=1e-7, atol=1e-7)
    # the same with every row at one time (the factor-once path)
    t1 = torch.full((n,), 0.4, dtype=F64)
    z_req = z.clone().requires_grad_(True)
    (grad1,) = torch.autograd.grad(oracle.log_prob_t(z_req, t1).sum(), z_req)
    torch.testing.assert_close(oracle.score(z, t1), grad1, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", list(GMMS))
def test_shared_time_batch_equals_per_row(name: str) -> None:
    gmm = GMMS[name]()
    oracle = GMMOracle(gmm, CosineSchedule())
    z = torch.randn(10, gmm.dim, generator=_gen(0), dtype=F64) * 1.5
    t = torch.full((10,), 0.37, dtype=F64)
    batch = oracle(z, t)
    rows = torch.cat([oracle(z[i : i + 1], t[i : i + 1]) for i in range(10)])
    torch.testing.assert_close(batch, rows, rtol=1e-12, atol=1e-12)
    mixed = torch.tensor([0.37, 0.8] * 5, dtype=F64)
    out = oracle(z, mixed)
    torch.testing.assert_close(out[0::2], batch[0::2], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        out[1::2], oracle(z[1::2], torch.full((5,), 0.8, dtype=F64)), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("name", list(GMMS))
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_at_t1_returns_mixture_mean(name: str, schedule: Schedule) -> None:
    gmm = GMMS[name]()
    oracle = GMMOracle(gmm, schedule)
    z = (
        torch.randn(8, gmm.dim, generator=_gen(2), dtype=F64)
        * torch.tensor([0.0, 1.0, 3.0, 10.0] * 2)[:, None]
    )
    out = oracle(z, torch.ones(8, dtype=F64))
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    torch.testing.assert_close(out, mean.expand_as(out), rtol=0, atol=1e-12)


def test_near_t0_returns_input_and_dtype() -> None:
    gmm = _gmm2d()
    oracle = GMMOracle(gmm, CosineSchedule())
    x = gmm.sample(8, generator=_gen(0))
    out = oracle(x.float(), torch.full((8,), 1e-6))
    assert out.dtype == F64 and out.shape == (8, 2)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    assert oracle.input_dtype == F64
    assert len(list(oracle.parameters())) == 0
    with pytest.raises(ValueError):
        oracle(x, torch.full((8, 1), 0.5, dtype=F64))


def test_image_shaped_input() -> None:
    """The oracle (denoiser, score, log-density) flattens [B, C, H, W] inputs."""
    d = 4
    gmm = GMM(
        torch.tensor([0.4, 0.6], dtype=F64),
        torch.randn(2, d, generator=_gen(0), dtype=F64),
        0.1 * torch.eye(d, dtype=F64).expand(2, d, d).clone(),
    )
    oracle = GMMOracle(gmm, CosineSchedule())
    z = torch.randn(3, 1, 2, 2, generator=_gen(1), dtype=F64)
    t = torch.full((3,), 0.5, dtype=F64)
    flat = z.reshape(3, d)
    torch.testing.assert_close(oracle(z, t), oracle(flat, t).reshape(3, 1, 2, 2))
    torch.testing.assert_close(oracle.score(z, t), oracle.score(flat, t).reshape(3, 1, 2, 2))
    torch.testing.assert_close(oracle.log_prob_t(z, t), oracle.log_prob_t(flat, t))


def test_memorising_oracle_zero_covariance() -> None:
    """tau_k = 0: E[x | z] is the softmax-weighted data points; near t = 0 it snaps to the nearest point."""
    pts = torch.tensor([[0.0, 0.0], [1.0, 2.0], [-1.5, 0.5], [2.0, -1.0]], dtype=F64)
    gmm = GMM(torch.full((4,), 0.25, dtype=F64), pts, torch.zeros(4, 2, 2, dtype=F64))
    sch = CosineSchedule()
    oracle = GMMOracle(gmm, sch)
    z = torch.randn(6, 2, generator=_gen(0), dtype=F64)
    a, s = _sched_at(sch, 0.5)
    w = torch.softmax(-((z[:, None] - a * pts[None]) ** 2).sum(-1) / (2 * s**2), dim=1)
    torch.testing.assert_close(oracle(z, torch.full((6,), 0.5, dtype=F64)), w @ pts, rtol=1e-10, atol=1e-10)
    a, _ = _sched_at(sch, 1e-3)
    near = a * pts + 1e-4
    torch.testing.assert_close(oracle(near, torch.full((4,), 1e-3, dtype=F64)), pts, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------ GMM itself
def test_gmm_sampling_moments_and_labels() -> None:
    gmm = _gmm2d()
    state = torch.get_rng_state()
    n = 100_000
    x, labels = gmm.sample(n, generator=_gen(0), return_labels=True)
    assert torch.equal(torch.get_rng_state(), state)
    assert x.dtype == F64 and x.shape == (n, 2) and labels.shape == (n,)
    assert torch.equal(x, gmm.sample(n, generator=_gen(0)))
    freq = torch.bincount(labels, minlength=3).double() / n
    assert torch.all((freq - gmm.weights).abs() < 5 * torch.sqrt(gmm.weights * (1 - gmm.weights) / n))
    for k in range(3):
        xk = x[labels == k]
        nk = xk.shape[0]
        assert torch.all((xk.mean(0) - gmm.means[k]).abs() < 5 * torch.sqrt(torch.diagonal(gmm.covs[k]) / nk))
        assert torch.all((torch.cov(xk.T) - gmm.covs[k]).abs() < 6 * 0.45 / math.sqrt(nk))
    # well separated: the MAP component recovers the label almost always
    assert float((gmm.assign(x) == labels).double().mean()) > 0.99


def test_gmm_log_prob_exact() -> None:
    gmm = _gmm2d()
    x = gmm.sample(64, generator=_gen(1))
    torch.testing.assert_close(gmm.log_prob(x), _reference_log_pt(gmm, x, 1.0, 0.0), rtol=1e-6, atol=1e-6)


def test_gmm_validation() -> None:
    mu = torch.zeros(2, 3, dtype=F64)
    cov = torch.eye(3, dtype=F64).expand(2, 3, 3).clone()
    with pytest.raises(ValueError, match="sum to 1"):
        GMM(torch.tensor([0.5, 0.6], dtype=F64), mu, cov)
    with pytest.raises(ValueError):
        GMM(torch.tensor([1.0], dtype=F64), mu, cov)
    with pytest.raises(ValueError):
        GMM(torch.tensor([0.5, 0.5], dtype=F64), mu, cov[:, :2, :2])


def test_make_gmm8d_properties() -> None:
    gmm = make_gmm8d()
    assert gmm.means.shape == (8, 8) and gmm.covs.shape == (8, 8, 8) and gmm.dim == 8
    w = gmm.weights
    assert abs(float(w.sum()) - 1.0) < 1e-12 and bool((w > 0).all())
    assert float(w.max() / w.min()) > 2.0, "weights must be unequal"
    assert len(set(w.tolist())) == 8
    # about unit overall variance
    mean = (w[:, None] * gmm.means).sum(0)
    cov = (w[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    cov = cov - torch.outer(mean, mean)
    per_dim = torch.diagonal(cov)
    assert abs(float(per_dim.mean()) - 1.0) < 0.1
    assert bool((per_dim > 0.5).all()) and bool((per_dim < 1.5).all())
    assert float(mean.abs().max()) < 1e-10, "centred"
    # well separated: minimum mean distance >> largest component std
    dist = torch.cdist(gmm.means, gmm.means) + 1e9 * torch.eye(8, dtype=F64)
    max_std = float(torch.linalg.eigvalsh(gmm.covs).max().sqrt())
    assert float(dist.min()) > 10 * max_std
    # deterministic
    again = make_gmm8d()
    assert torch.equal(again.means, gmm.means) and torch.equal(again.covs, gmm.covs)
    x = gmm.sample(20_000, generator=_gen(0))
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0, atol=0.08)


# ------------------------------------------------------------------------------------------ 2-D toys
def test_checkerboard() -> None:
    state = torch.get_rng_state()
    x = checkerboard_sample(40_000, generator=_gen(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert x.dtype == F64 and x.shape == (40_000, 2)
    assert torch.equal(x, checkerboard_sample(40_000, generator=_gen(0)))
    assert bool(checkerboard_inside(x).all())
    cells = (torch.floor(x[:, 0] + 2) * 4 + torch.floor(x[:, 1] + 2)).long()
    counts = torch.bincount(cells, minlength=16).double()
    dark = counts > 0
    assert int(dark.sum()) == 8
    p = 1 / 8
    assert torch.all((counts[dark] / 40_000 - p).abs() < 5 * math.sqrt(p * (1 - p) / 40_000))
    box = torch.rand(40_000, 2, generator=_gen(1), dtype=F64) * 4 - 2
    assert abs(float(checkerboard_inside(box).double().mean()) - 0.5) < 0.02
    assert not bool(checkerboard_inside(torch.tensor([[2.5, 0.5]], dtype=F64)).any())


def test_spiral() -> None:
    state = torch.get_rng_state()
    x = spiral_sample(4000, generator=_gen(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert x.dtype == F64 and x.shape == (4000, 2)
    assert torch.equal(x, spiral_sample(4000, generator=_gen(0)))
    assert float(spiral_inside(x).double().mean()) > 0.99
    box = torch.rand(4000, 2, generator=_gen(1), dtype=F64) * 4 - 2
    assert float(spiral_inside(box).double().mean()) < 0.3
