"""Teacher samplers and time grids (spec/continuous.md §0 Samplers, §1 Teacher samplers, §6.5-6.6, §7)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from _shared import gen, gmm2d
from fewstep.data.toys import GMM, GMMOracle
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers import (
    SAMPLERS,
    ancestral,
    ddim,
    edm_grid,
    euler,
    heun,
    logsnr_grid,
    make_grid,
    nfe,
    sample,
    uniform_grid,
)
from fewstep.samplers.grids import check_grid
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py
SCHEDULES = [CosineSchedule(), FlowSchedule()]
IDS = ["cosine", "flow"]
FNS = {"ancestral": ancestral, "ddim": ddim, "euler": euler, "heun": heun}


_gen = gen
_gmm2d = gmm2d


def _moments(gmm: GMM) -> tuple[Tensor, Tensor]:
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    second = (gmm.weights[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0)
    return mean, second - torch.outer(mean, mean)


def _energy_distance(x: Tensor, y: Tensor) -> float:
    """Unbiased (U-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|."""
    n, m = x.shape[0], y.shape[0]
    dxy = torch.cdist(x, y).mean()
    dxx = torch.cdist(x, x).sum() / (n * (n - 1))
    dyy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * dxy - dxx - dyy)


class Counting:
    """Wraps a denoiser, counting calls and recording the input dtype."""

    def __init__(self, inner, input_dtype: torch.dtype | None = None) -> None:
        self.inner, self.calls, self.dtypes, self.precise = inner, 0, set(), []
        if input_dtype is not None:
            self.input_dtype = input_dtype

    def __call__(self, z: Tensor, t: Tensor, **kw) -> Tensor:
        self.calls += 1
        self.dtypes.add((z.dtype, t.dtype))
        self.precise.append(bool((z != z.float().to(z.dtype)).any()))  # carries more than float32 bits
        assert t.shape == (z.shape[0],)
        return self.inner(z, t, **kw)


def _shrink(z: Tensor, t: Tensor, **kw) -> Tensor:
    """A cheap deterministic float32 'denoiser'."""
    return 0.5 * z * (1 - t)[:, None]


# ------------------------------------------------------------------------------------------ grids
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("kind", ["uniform", "edm", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 7, 64])
def test_grids_valid(schedule: Schedule, kind: str, steps: int) -> None:
    grid = make_grid(kind, steps, schedule)
    assert grid.dtype == F64 and grid.shape == (steps + 1,)
    assert bool((grid[1:] < grid[:-1]).all()), "strictly decreasing"
    assert float(grid[-1]) == 0.0 and 0.0 < float(grid[0]) <= 1.0
    check_grid(grid)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_edm_grid_formula(schedule: Schedule) -> None:
    steps, rho, lo, hi = 18, 7.0, 0.002, 80.0
    grid = edm_grid(steps, schedule)
    expect = [
        (hi ** (1 / rho) + i / (steps - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(steps)
    ]
    torch.testing.assert_close(schedule.eta(grid[:-1]), torch.tensor(expect, dtype=F64), rtol=1e-10, atol=0)
    assert float(schedule.eta(grid[:1])) == pytest.approx(80.0, rel=1e-12)
    assert float(schedule.eta(grid[-2:-1])) == pytest.approx(0.002, rel=1e-12)
    one = edm_grid(1, schedule)
    assert one.shape == (2,) and float(schedule.eta(one[:1])) == pytest.approx(80.0, rel=1e-12)
    custom = edm_grid(5, schedule, eta_min=0.01, eta_max=10.0, rho=3.0)
    e = schedule.eta(custom[:-1])
    assert float(e[0]) == pytest.approx(10.0) and float(e[-1]) == pytest.approx(0.01)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_uniform_and_logsnr_grid_values(schedule: Schedule) -> None:
    torch.testing.assert_close(uniform_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64))
    torch.testing.assert_close(uniform_grid(2, t_max=0.5), torch.tensor([0.5, 0.25, 0.0], dtype=F64))
    g = logsnr_grid(6, schedule)
    torch.testing.assert_close(
        schedule.logsnr(g[:-1]), torch.linspace(-15, 15, 6, dtype=F64), rtol=0, atol=1e-9
    )


def test_grid_errors() -> None:
    sch = CosineSchedule()
    with pytest.raises(ValueError):
        make_grid("karras", 4, sch)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError):
            uniform_grid(bad)  # type: ignore[arg-type]
    for bad_grid in ([1.0, 0.5, 0.5, 0.0], [1.0, 0.5], [0.2, 0.5, 0.0], [1.5, 0.5, 0.0], [1.0]):
        with pytest.raises(ValueError):
            check_grid(torch.tensor(bad_grid, dtype=F64))
    proc = GaussianProcess(sch)
    with pytest.raises(ValueError):
        ddim(_shrink, proc, torch.zeros(2, 2, dtype=F64), torch.tensor([1.0, 0.5], dtype=F64))


# ------------------------------------------------------------------------------------------ purity / nfe
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("denoiser_dtype", [None, F64], ids=["net32", "oracle64"])
def test_purity(sampler: str, denoiser_dtype: torch.dtype | None) -> None:
    proc = GaussianProcess(CosineSchedule())
    grid = make_grid("edm", 6, proc.schedule)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    den = Counting(_shrink, denoiser_dtype)
    a = sample(den, proc, (16, 3), sampler=sampler, grid=grid, generator=_gen(42))
    b = sample(den, proc, (16, 3), sampler=sampler, grid=grid, generator=_gen(42))
    c = sample(den, proc, (16, 3), sampler=sampler, grid=grid, generator=_gen(43))
    assert torch.equal(torch.get_rng_state(), state), "global RNG touched"
    assert torch.equal(a, b), "same seed must give bitwise-equal output"
    assert not torch.equal(a, c)
    assert a.dtype == F64 and a.shape == (16, 3)
    want = torch.float32 if denoiser_dtype is None else F64
    assert den.dtypes == {(want, want)}, "the net is called in its own dtype"
    if denoiser_dtype == F64:
        assert all(den.precise), "the sampler state must be float64 at every step"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_state_is_float64_with_float32_input(sampler: str) -> None:
    proc = GaussianProcess(FlowSchedule())
    z = torch.randn(8, 2, generator=_gen(0))  # float32 initial state
    out = FNS[sampler](_shrink, proc, z, uniform_grid(5), generator=_gen(1))
    assert out.dtype == F64


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [1, 2, 9])
def test_nfe_accounting(sampler: str, steps: int) -> None:
    proc = GaussianProcess(CosineSchedule())
    den = Counting(_shrink)
    FNS[sampler](den, proc, torch.zeros(4, 2, dtype=F64), uniform_grid(steps), generator=_gen(0))
    assert den.calls == nfe(sampler, steps)
    assert nfe(sampler, steps) == (2 * steps - 1 if sampler == "heun" else steps)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_samplers_follow_their_definitions(schedule: Schedule) -> None:
    """Ancestral = chain of eta=1 posterior steps, DDIM = eta=0 chain, Euler = explicit PF-ODE steps."""
    proc = GaussianProcess(schedule)
    grid = make_grid("edm", 5, schedule)
    z0 = torch.randn(6, 2, generator=_gen(0), dtype=F64)

    def den(z: Tensor, t: float) -> Tensor:
        return _shrink(z.float(), torch.full((z.shape[0],), t)).double()

    pairs = list(zip(grid[:-1].tolist(), grid[1:].tolist()))
    for sampler, eta in (("ancestral", 1.0), ("ddim", 0.0)):
        g, z = _gen(3), z0.clone()
        for t, s in pairs[:-1]:
            n = z.shape[0]
            z = proc.posterior_step(z, den(z, t), _row(t, n), _row(s, n), eta=eta, generator=g)
        expect = den(z, pairs[-1][0])
        assert torch.equal(FNS[sampler](_shrink, proc, z0, grid, generator=_gen(3)), expect), sampler
    z = z0.clone()
    for t, s in pairs:
        z = z + (s - t) * proc.ode_drift(z, den(z, t), _row(t, z.shape[0]))
    torch.testing.assert_close(euler(_shrink, proc, z0, grid), z, rtol=1e-14, atol=1e-14)


def _row(v: float, n: int) -> Tensor:
    return torch.full((n,), v, dtype=F64)


def test_unknown_sampler() -> None:
    proc = GaussianProcess(CosineSchedule())
    with pytest.raises(ValueError):
        nfe("dpm++", 4)
    with pytest.raises(ValueError):
        sample(_shrink, proc, (2, 2), sampler="dpm++", grid=uniform_grid(2), generator=_gen(0))


def test_cond_is_forwarded() -> None:
    proc = GaussianProcess(CosineSchedule())
    seen = []

    def den(z: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        seen.append(cond)
        return torch.zeros_like(z)

    labels = torch.tensor([1, 2, 3])
    sample(den, proc, (3, 2), sampler="heun", grid=uniform_grid(3), generator=_gen(0), cond=labels)
    assert len(seen) == 5 and all(c is labels for c in seen)


# ------------------------------------------------------------------------------------------ exact oracle
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_one_step_ddim_returns_data_mean(schedule: Schedule) -> None:
    gmm = _gmm2d()
    proc = GaussianProcess(schedule)
    out = sample(
        GMMOracle(gmm, schedule), proc, (64, 2), sampler="ddim", grid=uniform_grid(1), generator=_gen(0)
    )
    mean, _ = _moments(gmm)
    torch.testing.assert_close(out, mean.expand(64, 2), rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_flow_map_single_gaussian(schedule: Schedule) -> None:
    """Spec §7 'Single Gaussian': DDIM (1st order) and Heun (2nd order) converge to the exact PF-ODE map."""
    tau, mu = 0.5, torch.tensor([[1.0, -2.0]], dtype=F64)
    gmm = GMM(torch.ones(1, dtype=F64), mu, tau**2 * torch.eye(2, dtype=F64)[None])
    oracle, proc = GMMOracle(gmm, schedule), GaussianProcess(schedule)
    z = torch.randn(64, 2, generator=_gen(0), dtype=F64)
    for t0 in (1.0, 0.7):
        o = schedule(torch.tensor(t0, dtype=F64))
        phi = mu + torch.sqrt(tau**2 / (o.alpha**2 * tau**2 + o.sigma**2)) * (z - o.alpha * mu)

        def err(fn, steps: int, t0: float = t0, phi: Tensor = phi) -> float:
            return float((fn(oracle, proc, z, uniform_grid(steps, t_max=t0)) - phi).abs().max())

        e_ddim = [err(ddim, 40), err(ddim, 400)]
        e_heun = [err(heun, 10), err(heun, 100)]
        assert e_ddim[1] < 1e-2 and e_heun[1] < 1e-3
        assert 7 < e_ddim[0] / e_ddim[1] < 14, "DDIM is first order"
        assert 50 < e_heun[0] / e_heun[1] < 200, "Heun is second order"
    if isinstance(schedule, FlowSchedule):  # DDIM on rectified flow is Euler in t
        grid = uniform_grid(7)
        torch.testing.assert_close(
            ddim(oracle, proc, z, grid), euler(oracle, proc, z, grid), rtol=1e-10, atol=1e-10
        )


@pytest.fixture(scope="module")
def gmm_reference() -> dict:
    gmm = _gmm2d()
    n = 4000
    ref = gmm.sample(n, generator=_gen(999))
    nulls = torch.tensor(
        [
            _energy_distance(gmm.sample(n, generator=_gen(100 + i)), gmm.sample(n, generator=_gen(200 + i)))
            for i in range(6)
        ]
    )
    big = gmm.sample(100_000, generator=_gen(5))
    freq = torch.bincount(gmm.assign(big), minlength=3).double() / big.shape[0]
    mean, cov = _moments(gmm)
    return {
        "gmm": gmm,
        "n": n,
        "ref": ref,
        "ed_floor": 5 * float(nulls.pow(2).mean().sqrt()),
        "freq": freq,
        "mean": mean,
        "cov": cov,
    }


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 500), ("heun", 100), ("ancestral", 1000)])
def test_teacher_samplers_reproduce_gmm(gmm_reference: dict, sampler: str, steps: int) -> None:
    r = gmm_reference
    gmm, n = r["gmm"], r["n"]
    sch = CosineSchedule()
    x = sample(
        GMMOracle(gmm, sch),
        GaussianProcess(sch),
        (n, 2),
        sampler=sampler,
        grid=uniform_grid(steps),
        generator=_gen(1),
    )
    assert x.dtype == F64 and bool(torch.isfinite(x).all())
    # mean, within MC error
    se_mean = torch.sqrt(torch.diagonal(r["cov"]) / n)
    assert torch.all((x.mean(0) - r["mean"]).abs() < 4.5 * se_mean), (x.mean(0), r["mean"])
    # covariance entries, within MC error (SE from the fourth moments of fresh data)
    c = r["ref"] - r["mean"]
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    assert torch.all((torch.cov(x.T) - r["cov"]).abs() < 4.5 * se_cov), (torch.cov(x.T), r["cov"])
    # component frequencies: chi-square with 2 dof (p ~ 3e-4 at 16)
    counts = torch.bincount(gmm.assign(x), minlength=3).double()
    expected = n * r["freq"]
    assert float(((counts - expected) ** 2 / expected).sum()) < 16.0, (counts / n, r["freq"])
    # energy distance to fresh data within the data-vs-data noise floor
    assert _energy_distance(x, r["ref"]) < r["ed_floor"]


def test_energy_distance_has_power(gmm_reference: dict) -> None:
    """A coarse 5-step DDIM is visibly off: the energy-distance check above is not vacuous."""
    r = gmm_reference
    sch = CosineSchedule()
    x = sample(
        GMMOracle(r["gmm"], sch),
        GaussianProcess(sch),
        (r["n"], 2),
        sampler="ddim",
        grid=uniform_grid(5),
        generator=_gen(1),
    )
    assert _energy_distance(x, r["ref"]) > 2 * r["ed_floor"]
    assert 0 < r["ed_floor"] < 0.02
