"""GaussianProcess: posterior, DDIM-eta steps, conversions, loss weights, time sampling (spec §1, §6)."""

from __future__ import annotations

import math

import pytest
import torch

from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule

SCHEDULES = [CosineSchedule(), FlowSchedule()]
IDS = ["cosine", "flow"]
F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _row(v: float, n: int) -> torch.Tensor:
    return torch.full((n,), v, dtype=F64)


def _coefs(schedule: Schedule, t: float, s: float) -> tuple[float, float, float]:
    """(c_z, c_x, gamma^2) of q(z_s | x, z_t) written out from spec §1 with Python floats."""
    at, st = (
        float(schedule(torch.tensor(t, dtype=F64)).alpha),
        float(schedule(torch.tensor(t, dtype=F64)).sigma),
    )
    as_, ss = (
        float(schedule(torch.tensor(s, dtype=F64)).alpha),
        float(schedule(torch.tensor(s, dtype=F64)).sigma),
    )
    a_ts = at / as_
    var_ts = st**2 - a_ts**2 * ss**2
    return a_ts * ss**2 / st**2, as_ * var_ts / st**2, ss**2 * var_ts / st**2


# ------------------------------------------------------------------------------------------ posterior
PAIRS = [(0.9, 0.5), (0.5, 0.3), (0.2, 0.05), (0.999, 0.9)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("ts", PAIRS)
def test_posterior_coefficients_closed_form(schedule: Schedule, ts: tuple[float, float]) -> None:
    proc = GaussianProcess(schedule)
    t, s = ts
    c_z, c_x, g = proc.posterior_coefficients(_row(t, 1), _row(s, 1))
    ez, ex, eg2 = _coefs(schedule, t, s)
    assert float(c_z) == pytest.approx(ez, rel=1e-12)
    assert float(c_x) == pytest.approx(ex, rel=1e-12)
    assert float(g) ** 2 == pytest.approx(eg2, rel=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("ts", PAIRS[:3])
def test_posterior_matches_forward_regression(schedule: Schedule, ts: tuple[float, float]) -> None:
    """Spec §6.3: draw ~1e6 forward pairs with x fixed and regress z_s on z_t per dimension."""
    proc = GaussianProcess(schedule)
    t, s = ts
    x = torch.tensor([1.5, -0.7], dtype=F64)
    n = 500_000  # x 2 dimensions = 1e6 pairs
    g = _gen(1234)
    os_, ot = schedule(torch.tensor(s, dtype=F64)), schedule(torch.tensor(t, dtype=F64))
    a_ts = ot.alpha / os_.alpha
    s_ts = (ot.sigma**2 - a_ts**2 * os_.sigma**2).sqrt()
    z_s = os_.alpha * x + os_.sigma * torch.randn(n, 2, generator=g, dtype=F64)
    z_t = a_ts * z_s + s_ts * torch.randn(n, 2, generator=g, dtype=F64)

    zt_c, zs_c = z_t - z_t.mean(0), z_s - z_s.mean(0)
    slope = (zt_c * zs_c).sum(0) / (zt_c**2).sum(0)
    intercept = z_s.mean(0) - slope * z_t.mean(0)
    resid_var = ((zs_c - slope * zt_c) ** 2).sum(0) / (n - 2)

    c_z, c_x, gam = (v.squeeze(0) for v in proc.posterior_coefficients(_row(t, 1), _row(s, 1)))
    g2 = gam**2
    var_zt = float(ot.sigma) ** 2
    se_slope = math.sqrt(float(g2) / (n * var_zt))
    se_int = torch.sqrt(g2 / n * (1 + (ot.alpha * x) ** 2 / var_zt))
    se_var = float(g2) * math.sqrt(2.0 / n)
    assert torch.all((slope - c_z).abs() < 5 * se_slope), (slope, c_z, se_slope)
    assert torch.all((intercept - c_x * x).abs() < 5 * se_int), (intercept, c_x * x, se_int)
    assert torch.all((resid_var - g2).abs() < 5 * se_var), (resid_var, g2, se_var)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_posterior_limits(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    t = torch.tensor([0.3, 0.7, 1.0], dtype=F64)
    # s = 0: a delta at x
    c_z, c_x, g = proc.posterior_coefficients(t, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(c_z, torch.zeros(3, dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(c_x, torch.ones(3, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(g, torch.zeros(3, dtype=F64), rtol=0, atol=1e-15)
    # t = 1 (alpha_t = 0): q(z_s | x) = N(alpha_s x, sigma_s^2)
    s = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    c_z, c_x, g = proc.posterior_coefficients(torch.ones(3, dtype=F64), s)
    os_ = schedule(s)
    torch.testing.assert_close(c_z, torch.zeros(3, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(c_x, os_.alpha, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, os_.sigma, rtol=1e-12, atol=1e-14)


def test_posterior_requires_s_below_t() -> None:
    proc = GaussianProcess(CosineSchedule())
    with pytest.raises(ValueError):
        proc.posterior_coefficients(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([0.2, 0.5], dtype=F64))
    z = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError):
        proc.posterior_step(z, z, torch.tensor([0.5, 0.4], dtype=F64), torch.tensor([0.2, 0.6], dtype=F64))


# ------------------------------------------------------------------------------------------ posterior_step
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_posterior_step_eta1_is_posterior_exactly(schedule: Schedule) -> None:
    """With explicit noise, eta = 1 gives c_z z_t + c_x x + gamma xi (the posterior draw)."""
    proc = GaussianProcess(schedule)
    g = _gen(0)
    b = 64
    t = torch.rand(b, generator=g, dtype=F64) * 0.9 + 0.1
    s = t * torch.rand(b, generator=g, dtype=F64)
    x = torch.randn(b, 3, generator=g, dtype=F64)
    z = torch.randn(b, 3, generator=g, dtype=F64)
    xi = torch.randn(b, 3, generator=g, dtype=F64)
    out = proc.posterior_step(z, x, t, s, eta=1.0, noise=xi)
    c_z, c_x, gam = proc.posterior_coefficients(t, s)
    torch.testing.assert_close(
        out, c_z[:, None] * z + c_x[:, None] * x + gam[:, None] * xi, rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("ts", PAIRS)
def test_posterior_step_eta1_moments_mc(schedule: Schedule, ts: tuple[float, float]) -> None:
    proc = GaussianProcess(schedule)
    t, s = ts
    n = 100_000
    x = torch.tensor([0.8, -1.2], dtype=F64).expand(n, 2)
    z_t = torch.tensor([-0.4, 2.0], dtype=F64).expand(n, 2)
    out = proc.posterior_step(z_t, x, _row(t, n), _row(s, n), eta=1.0, generator=_gen(7))
    assert out.dtype == F64 and out.shape == (n, 2)
    ez, ex, eg2 = _coefs(schedule, t, s)
    mu = ez * z_t[0] + ex * x[0]
    se_mean = math.sqrt(eg2 / n)
    assert torch.all((out.mean(0) - mu).abs() < 5 * se_mean)
    assert torch.all((out.var(0) - eg2).abs() < 5 * eg2 * math.sqrt(2.0 / n))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_posterior_step_eta0_is_deterministic_ddim(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    g = _gen(3)
    b = 32
    t = torch.rand(b, generator=g, dtype=F64) * 0.9 + 0.1
    s = t * torch.rand(b, generator=g, dtype=F64)
    x = torch.randn(b, 4, generator=g, dtype=F64)
    z = torch.randn(b, 4, generator=g, dtype=F64)
    out_a = proc.posterior_step(z, x, t, s, eta=0.0, generator=_gen(1))
    out_b = proc.posterior_step(z, x, t, s, eta=0.0, generator=_gen(2))
    out_c = proc.posterior_step(z, x, t, s)  # default eta = 0 needs no generator
    assert torch.equal(out_a, out_b) and torch.equal(out_a, out_c)
    ot, os_ = schedule(t), schedule(s)
    eps_hat = (z - ot.alpha[:, None] * x) / ot.sigma[:, None]
    ddim = os_.alpha[:, None] * x + os_.sigma[:, None] * eps_hat
    torch.testing.assert_close(out_a, ddim, rtol=1e-12, atol=1e-12)
    # DDIM = one Euler step of the EDM ODE dy/d eta = (y - D)/eta with y = z / alpha
    eta_t, eta_s = (ot.sigma / ot.alpha)[:, None], (os_.sigma / os_.alpha)[:, None]
    y_t = z / ot.alpha[:, None]
    y_s = y_t + (eta_s - eta_t) * (y_t - x) / eta_t
    torch.testing.assert_close(out_a, os_.alpha[:, None] * y_s, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_posterior_step_intermediate_eta(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    g = _gen(11)
    b, eta = 16, 0.4
    t = torch.rand(b, generator=g, dtype=F64) * 0.8 + 0.2
    s = t * 0.5
    x, z, xi = (torch.randn(b, 2, generator=g, dtype=F64) for _ in range(3))
    out = proc.posterior_step(z, x, t, s, eta=eta, noise=xi)
    ot, os_ = schedule(t), schedule(s)
    _, _, gam = proc.posterior_coefficients(t, s)
    ge = (eta * gam)[:, None]
    eps_hat = (z - ot.alpha[:, None] * x) / ot.sigma[:, None]
    expect = os_.alpha[:, None] * x + (os_.sigma[:, None] ** 2 - ge**2).sqrt() * eps_hat + ge * xi
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_posterior_step_at_s0_returns_x(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    g = _gen(5)
    x, z = torch.randn(8, 3, generator=g, dtype=F64), torch.randn(8, 3, generator=g, dtype=F64)
    t = torch.linspace(0.1, 1.0, 8, dtype=F64)
    for eta in (0.0, 0.5, 1.0):
        out = proc.posterior_step(z, x, t, torch.zeros(8, dtype=F64), eta=eta, generator=_gen(0))
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_step_with_true_x_preserves_marginal(schedule: Schedule, eta: float) -> None:
    """z_t ~ q(z_t | x), one DDIM-eta step with the true x gives z_s ~ q(z_s | x) for every eta."""
    proc = GaussianProcess(schedule)
    n = 100_000
    x = torch.tensor([1.0, -2.0], dtype=F64).expand(n, 2)
    t, s = 0.8, 0.35
    z_t = proc.add_noise(x, _row(t, n), generator=_gen(21))
    z_s = proc.posterior_step(z_t, x, _row(t, n), _row(s, n), eta=eta, generator=_gen(22))
    os_ = schedule(torch.tensor(s, dtype=F64))
    a_s, v_s = float(os_.alpha), float(os_.sigma) ** 2
    assert torch.all((z_s.mean(0) - a_s * x[0]).abs() < 5 * math.sqrt(v_s / n))
    assert torch.all((z_s.var(0) - v_s).abs() < 5 * v_s * math.sqrt(2.0 / n))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_ancestral_chain_with_true_x_preserves_marginals(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    n = 50_000
    x = torch.tensor([0.5, -1.5], dtype=F64).expand(n, 2)
    grid = torch.linspace(1.0, 0.0, 11, dtype=F64)
    g = _gen(31)
    z = proc.prior_sample((n, 2), generator=g)  # exact q(z_1 | x) since alpha_1 = 0
    for t, s in zip(grid[:-2].tolist(), grid[1:-1].tolist()):
        z = proc.posterior_step(z, x, _row(t, n), _row(s, n), eta=1.0, generator=g)
        os_ = schedule(torch.tensor(s, dtype=F64))
        a_s, v_s = float(os_.alpha), float(os_.sigma) ** 2
        assert torch.all((z.mean(0) - a_s * x[0]).abs() < 5 * math.sqrt(v_s / n)), s
        assert torch.all((z.var(0) - v_s).abs() < 5 * v_s * math.sqrt(2.0 / n)), s
        assert abs(float(torch.corrcoef(z.T)[0, 1])) < 5 / math.sqrt(n)


def test_posterior_step_argument_checks() -> None:
    proc = GaussianProcess(CosineSchedule())
    z = torch.zeros(4, 2, dtype=F64)
    t, s = _row(0.5, 4), _row(0.2, 4)
    with pytest.raises(ValueError, match="generator"):
        proc.posterior_step(z, z, t, s, eta=1.0)
    with pytest.raises(ValueError, match="eta"):
        proc.posterior_step(z, z, t, s, eta=1.5, generator=_gen(0))
    with pytest.raises(ValueError, match="shape"):
        proc.posterior_step(z, torch.zeros(4, 3, dtype=F64), t, s)
    with pytest.raises(ValueError):
        proc.posterior_step(z, z, _row(0.5, 3), _row(0.2, 3))


def test_posterior_step_keeps_state_dtype() -> None:
    proc = GaussianProcess(CosineSchedule())
    z = torch.randn(4, 2, generator=_gen(0), dtype=F64)
    x = torch.randn(4, 2, generator=_gen(1), dtype=torch.float32)
    t, s = torch.full((4,), 0.5), torch.full((4,), 0.25)  # float32 times
    out = proc.posterior_step(z, x, t, s, eta=1.0, generator=_gen(2))
    assert out.dtype == F64


# ------------------------------------------------------------------------------------------ conversions
def _interior_t(schedule: Schedule, n: int, seed: int) -> torch.Tensor:
    """Times with logSNR strictly inside the conversion clamp [-15, 15] (minus a margin)."""
    lam = (torch.rand(n, generator=_gen(seed), dtype=F64) * 2 - 1) * 14.0
    return schedule.t_from_logsnr(lam)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_conversion_roundtrips(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    n = 256
    t = _interior_t(schedule, n, 0)
    g = _gen(1)
    x = torch.randn(n, 2, 3, generator=g, dtype=F64)
    eps = torch.randn(n, 2, 3, generator=g, dtype=F64)
    o = schedule(t)
    a, s, da, ds = (v[:, None, None] for v in (o.alpha, o.sigma, o.d_alpha, o.d_sigma))
    z = a * x + s * eps
    # definitions
    torch.testing.assert_close(proc.eps_from_x0(z, x, t), eps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(proc.v_from_x0(z, x, t), a * eps - s * x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(proc.velocity_from_x0(z, x, t), da * x + ds * eps, rtol=1e-9, atol=1e-9)
    # inverses
    torch.testing.assert_close(proc.x0_from_eps(z, eps, t), x, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(proc.x0_from_v(z, a * eps - s * x, t), x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(proc.x0_from_velocity(z, da * x + ds * eps, t), x, rtol=1e-10, atol=1e-10)
    # round trips through every parametrisation
    v = proc.v_from_x0(z, x, t)
    u = proc.velocity_from_x0(z, x, t)
    e = proc.eps_from_x0(z, x, t)
    torch.testing.assert_close(proc.eps_from_x0(z, proc.x0_from_v(z, v, t), t), e, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(proc.v_from_x0(z, proc.x0_from_velocity(z, u, t), t), v, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(
        proc.velocity_from_x0(z, proc.x0_from_eps(z, e, t), t), u, rtol=1e-7, atol=1e-7
    )
    # the PF-ODE drift with the true x is the velocity
    torch.testing.assert_close(proc.ode_drift(z, x, t), da * x + ds * eps, rtol=1e-9, atol=1e-9)


def test_flow_velocity_is_eps_minus_x() -> None:
    proc = GaussianProcess(FlowSchedule())
    g = _gen(2)
    t = torch.rand(50, generator=g, dtype=F64) * 0.98 + 0.01
    x, eps = torch.randn(50, 2, generator=g, dtype=F64), torch.randn(50, 2, generator=g, dtype=F64)
    z = (1 - t)[:, None] * x + t[:, None] * eps
    torch.testing.assert_close(proc.velocity_from_x0(z, x, t), eps - x, rtol=1e-10, atol=1e-10)
    u = eps - x
    torch.testing.assert_close(proc.x0_from_velocity(z, u, t), z - t[:, None] * u, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_conversions_finite_at_endpoints(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule)
    g = _gen(4)
    x, eps = torch.randn(2, 3, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    t = torch.tensor([1.0, 1.0], dtype=F64)
    z = eps.clone()  # alpha_1 = 0
    o = schedule(t)
    v = o.alpha[:, None] * eps - o.sigma[:, None] * x
    u = o.d_alpha[:, None] * x + o.d_sigma[:, None] * eps
    # x0-, v- and velocity-nets are well defined at t = 1
    torch.testing.assert_close(proc.x0_from_v(z, v, t), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(proc.x0_from_velocity(z, u, t), x, rtol=1e-12, atol=1e-12)
    # eps is not; the logSNR clamp keeps it finite
    assert bool(torch.isfinite(proc.x0_from_eps(z, eps, t)).all())
    assert bool(torch.isfinite(proc.x0_from_eps(z, eps + 0.1, t)).all())
    t0 = torch.zeros(2, dtype=F64)
    assert bool(torch.isfinite(proc.eps_from_x0(x, x, t0)).all())


# ------------------------------------------------------------------------------------------ loss weights
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_loss_weight_identities(schedule: Schedule) -> None:
    """x-space weights reproduce the eps-, v- and velocity-losses exactly (per sample)."""
    proc = GaussianProcess(schedule)
    g = _gen(8)
    n = 512
    t = torch.rand(n, generator=g, dtype=F64) * 0.96 + 0.02
    x, eps = torch.randn(n, 5, generator=g, dtype=F64), torch.randn(n, 5, generator=g, dtype=F64)
    x_hat = x + 0.3 * torch.randn(n, 5, generator=g, dtype=F64)
    o = schedule(t)
    z = o.alpha[:, None] * x + o.sigma[:, None] * eps
    x_err = ((x_hat - x) ** 2).sum(1)

    eps_err = ((proc.eps_from_x0(z, x_hat, t) - eps) ** 2).sum(1)
    torch.testing.assert_close(proc.loss_weight(t, "snr").double() * x_err, eps_err, rtol=2e-6, atol=1e-9)
    v_true = o.alpha[:, None] * eps - o.sigma[:, None] * x
    v_err = ((proc.v_from_x0(z, x_hat, t) - v_true) ** 2).sum(1)
    torch.testing.assert_close(proc.loss_weight(t, "v").double() * x_err, v_err, rtol=2e-6, atol=1e-9)
    u_true = o.d_alpha[:, None] * x + o.d_sigma[:, None] * eps
    u_err = ((proc.velocity_from_x0(z, x_hat, t) - u_true) ** 2).sum(1)
    torch.testing.assert_close(proc.loss_weight(t, "velocity").double() * x_err, u_err, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_loss_weight_closed_forms(schedule: Schedule) -> None:
    sd = 0.5
    proc = GaussianProcess(schedule, sigma_data=sd)
    t = torch.linspace(0.02, 0.98, 97, dtype=F64)
    o = schedule(t)
    snr = (o.alpha / o.sigma) ** 2
    eta = o.sigma / o.alpha

    def w(kind: str) -> torch.Tensor:
        out = proc.loss_weight(t, kind)
        assert out.dtype == torch.float32 and out.shape == t.shape
        return out.double()

    kw = {"rtol": 2e-6, "atol": 1e-9}
    torch.testing.assert_close(w("flat"), torch.ones_like(t), **kw)
    torch.testing.assert_close(w("snr"), snr, **kw)
    torch.testing.assert_close(w("max_snr_1"), snr.clamp_min(1.0), **kw)
    torch.testing.assert_close(w("edm"), (eta**2 + sd**2) / (eta * sd) ** 2, **kw)
    dlam = schedule.dlogsnr_dt(t)
    torch.testing.assert_close(w("sigmoid"), 0.5 * torch.sigmoid(-torch.log(snr)) * (-dlam) * snr, **kw)
    for b in (-3.0, 2.0):  # the bias b of sigmoid(b - lambda) is honoured (it was hard-coded to 0)
        got = proc.loss_weight(t, "sigmoid", sigmoid_bias=b).double()
        torch.testing.assert_close(got, 0.5 * torch.sigmoid(b - torch.log(snr)) * (-dlam) * snr, **kw)
    torch.testing.assert_close(proc.elbo_weight(t).double(), -0.5 * dlam * snr, **kw)
    if isinstance(schedule, CosineSchedule):
        torch.testing.assert_close(w("v"), snr + 1.0, **kw)
    else:
        torch.testing.assert_close(w("velocity"), 1.0 / t**2, **kw)
    with pytest.raises(ValueError, match="unknown weighting"):
        proc.loss_weight(t, "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("kind", ["flat", "snr", "v", "velocity", "max_snr_1", "edm", "sigmoid"])
def test_loss_weight_finite_positive_and_clamped(schedule: Schedule, kind: str) -> None:
    proc = GaussianProcess(schedule)
    t = torch.tensor([0.0, 1e-8, 1e-4, 0.5, 1 - 1e-6, 1.0], dtype=F64)
    w = proc.loss_weight(t, kind, max_weight=1e4)
    assert bool(torch.isfinite(w).all()) and bool((w >= 0).all()) and bool((w <= 1e4).all())
    assert float(w[3]) > 0


# ------------------------------------------------------------------------------------------ add_noise
def test_add_noise_formula_and_shapes() -> None:
    sch = CosineSchedule()
    proc = GaussianProcess(sch)
    g = _gen(0)
    x = torch.randn(4, 1, 3, 3, generator=g, dtype=F64)
    noise = torch.randn(4, 1, 3, 3, generator=g, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=F64)
    z = proc.add_noise(x, t, noise=noise)
    o = sch(t)
    torch.testing.assert_close(z, o.alpha.view(4, 1, 1, 1) * x + o.sigma.view(4, 1, 1, 1) * noise)
    assert torch.equal(z[0], x[0])
    z1 = proc.add_noise(x, t, generator=_gen(9))
    z2 = proc.add_noise(x, t, generator=_gen(9))
    assert torch.equal(z1, z2) and z1.dtype == F64 and z1.shape == x.shape
    # float32 data with float64 times stays float32
    assert proc.add_noise(x.float(), t, generator=_gen(1)).dtype == torch.float32


@pytest.mark.parametrize(
    "bad_t",
    [
        torch.full((4, 1), 0.5),
        torch.full((3,), 0.5),
        torch.full((5,), 0.5),
        torch.tensor(0.5),
        torch.ones(4, dtype=torch.int64),
    ],
    ids=["B1", "short", "long", "scalar", "int"],
)
def test_add_noise_rejects_bad_times(bad_t: torch.Tensor) -> None:
    proc = GaussianProcess(CosineSchedule())
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError):
        proc.add_noise(x, bad_t, generator=_gen(0))


def test_add_noise_needs_randomness_source() -> None:
    proc = GaussianProcess(CosineSchedule())
    with pytest.raises(ValueError, match="generator"):
        proc.add_noise(torch.zeros(2, 2), torch.full((2,), 0.5))


# ------------------------------------------------------------------------------------------ time sampling
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("kind", ["uniform", "logit_normal", "edm_lognormal", "uniform_logsnr"])
def test_sample_t_basic(schedule: Schedule, kind: str) -> None:
    proc = GaussianProcess(schedule, t_min=1e-3)
    state = torch.get_rng_state()
    a = proc.sample_t(1000, generator=_gen(3), kind=kind)  # type: ignore[arg-type]
    b = proc.sample_t(1000, generator=_gen(3), kind=kind)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert a.shape == (1000,) and a.dtype == torch.float32
    assert float(a.min()) >= 1e-3 and float(a.max()) <= 1.0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_sample_t_distributions(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule, t_min=1e-6)
    n = 100_000
    u = proc.sample_t(n, generator=_gen(1), kind="uniform").double()
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    ln = proc.sample_t(n, generator=_gen(2), kind="logit_normal").double()
    logit = torch.log(ln / (1 - ln))
    assert abs(float(logit.mean())) < 5 / math.sqrt(n) and abs(float(logit.std()) - 1) < 0.02
    e = proc.sample_t(n, generator=_gen(3), kind="edm_lognormal").double()
    log_eta = torch.log(schedule.eta(e))
    assert abs(float(log_eta.mean()) + 1.2) < 5 * 1.2 / math.sqrt(n)
    assert abs(float(log_eta.std()) - 1.2) < 0.02
    lam = schedule.logsnr(proc.sample_t(n, generator=_gen(4), kind="uniform_logsnr").double())
    sd = 30 / math.sqrt(12)
    assert abs(float(lam.mean())) < 5 * sd / math.sqrt(n)
    assert abs(float(lam.std()) - sd) < 0.05
    assert float(lam.min()) > -15.01 and float(lam.max()) < 15.01
    with pytest.raises(ValueError, match="unknown time sampling"):
        proc.sample_t(4, generator=_gen(0), kind="beta")  # type: ignore[arg-type]


def test_sample_t_stratified() -> None:
    proc = GaussianProcess(CosineSchedule(), t_min=0.0)
    n = 64
    t = proc.sample_t(n, generator=_gen(5), stratified=True).double()
    pos = t * n - torch.arange(n, dtype=F64)  # each t lies in its own stratum [i/n, (i+1)/n)
    assert bool((pos > -1e-5).all()) and bool((pos < 1 + 1e-5).all())


def test_prior_sample() -> None:
    proc = GaussianProcess(CosineSchedule())
    state = torch.get_rng_state()
    z = proc.prior_sample((50_000, 2), generator=_gen(0), t=0.5)
    assert torch.equal(torch.get_rng_state(), state)
    assert z.dtype == F64 and z.shape == (50_000, 2)
    sig = math.sin(math.pi / 4)
    assert torch.all((z.std(0) - sig).abs() < 5 * sig / math.sqrt(2 * 50_000))
    assert torch.equal(z, proc.prior_sample((50_000, 2), generator=_gen(0), t=0.5))
