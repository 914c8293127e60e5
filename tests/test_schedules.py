"""Property tests for the noise schedules (spec/continuous.md sections 0 and 6.1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewstep.schedules import LOGSNR_CLAMP, CosineSchedule, FlowSchedule, Schedule, get_schedule

SCHEDULES = [CosineSchedule(), FlowSchedule()]
IDS = ["cosine", "flow"]

T_LO, T_HI = 1e-4, 1.0 - 1e-4
times = st.floats(min_value=T_LO, max_value=T_HI, allow_nan=False, allow_infinity=False)
time_lists = st.lists(times, min_size=1, max_size=16)
PROP = settings(max_examples=60, deadline=None, derandomize=True, database=None)  # reproducible in CI


def _t(values: float | list[float]) -> torch.Tensor:
    return torch.tensor(values if isinstance(values, list) else [values], dtype=torch.float64)


# ------------------------------------------------------------------------------------------ closed forms
def _reference(schedule: Schedule, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha, sigma written out independently from the spec."""
    if isinstance(schedule, CosineSchedule):
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)
    return 1.0 - t, t


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@PROP
@given(ts=time_lists)
def test_matches_spec_closed_form(schedule: Schedule, ts: list[float]) -> None:
    t = _t(ts)
    o = schedule(t)
    a, s = _reference(schedule, t)
    torch.testing.assert_close(o.alpha, a, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(o.sigma, s, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(schedule.logsnr(t), 2.0 * torch.log(a / s), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(schedule.eta(t), s / a, rtol=1e-12, atol=0.0)
    for v in (o.alpha, o.sigma, o.d_alpha, o.d_sigma):
        assert v.shape == t.shape and v.dtype == torch.float64


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_boundaries(schedule: Schedule) -> None:
    o = schedule(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert float(o.alpha[0]) == 1.0
    assert float(o.sigma[0]) == 0.0
    assert abs(float(o.alpha[1])) < 1e-15
    assert abs(float(o.sigma[1]) - 1.0) < 1e-15
    assert schedule.logsnr(torch.zeros(1, dtype=torch.float64)).item() == math.inf
    assert schedule.logsnr(torch.ones(1, dtype=torch.float64)).item() < -60.0
    assert schedule.t_from_eta(torch.zeros(1, dtype=torch.float64)).item() == 0.0
    assert abs(schedule.t_from_eta(torch.tensor([math.inf], dtype=torch.float64)).item() - 1.0) < 1e-15


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@PROP
@given(t=times, gap=st.floats(min_value=1e-6, max_value=1.0))
def test_monotone(schedule: Schedule, t: float, gap: float) -> None:
    t2 = min(t + gap, T_HI)
    if t2 - t < 1e-6:  # alpha or sigma is flat to fp precision at the ends for tinier gaps
        return
    o = schedule(_t([t, t2]))
    assert float(o.alpha[1]) < float(o.alpha[0]), "alpha must decrease"
    assert float(o.sigma[1]) > float(o.sigma[0]), "sigma must increase"
    lam = schedule.logsnr(_t([t, t2]))
    assert float(lam[1]) < float(lam[0]), "logSNR must decrease"
    eta = schedule.eta(_t([t, t2]))
    assert float(eta[1]) > float(eta[0]), "eta must increase"


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_monotone_dense_grid(schedule: Schedule) -> None:
    t = torch.linspace(0.0, 1.0, 20001, dtype=torch.float64)
    o = schedule(t)
    assert bool((o.alpha[1:] < o.alpha[:-1]).all())
    assert bool((o.sigma[1:] > o.sigma[:-1]).all())
    assert bool((o.d_alpha <= 0).all()) and bool((o.d_sigma >= 0).all())


@PROP
@given(ts=time_lists)
def test_cosine_variance_preserving(ts: list[float]) -> None:
    o = CosineSchedule()(_t(ts))
    torch.testing.assert_close(o.alpha**2 + o.sigma**2, torch.ones_like(o.alpha), rtol=0, atol=1e-15)


@PROP
@given(ts=time_lists)
def test_flow_linear(ts: list[float]) -> None:
    o = FlowSchedule()(_t(ts))
    torch.testing.assert_close(o.alpha + o.sigma, torch.ones_like(o.alpha), rtol=0, atol=1e-15)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@PROP
@given(ts=time_lists)
def test_inverse_maps_roundtrip(schedule: Schedule, ts: list[float]) -> None:
    t = _t(ts)
    torch.testing.assert_close(schedule.t_from_logsnr(schedule.logsnr(t)), t, rtol=0, atol=1e-10)
    torch.testing.assert_close(schedule.t_from_eta(schedule.eta(t)), t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@PROP
@given(lams=st.lists(st.floats(min_value=-20.0, max_value=20.0), min_size=1, max_size=16))
def test_logsnr_of_inverse(schedule: Schedule, lams: list[float]) -> None:
    lam = _t(lams)
    t = schedule.t_from_logsnr(lam)
    assert bool(((t > 0) & (t < 1)).all())
    torch.testing.assert_close(schedule.logsnr(t), lam, rtol=0, atol=1e-7)
    eta = torch.exp(-0.5 * lam)
    torch.testing.assert_close(schedule.eta(schedule.t_from_eta(eta)), eta, rtol=1e-9, atol=0)


def _autograd(fn, t: torch.Tensor) -> torch.Tensor:
    t = t.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(t).sum(), t)
    return g


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@PROP
@given(ts=time_lists)
def test_derivatives_vs_autograd(schedule: Schedule, ts: list[float]) -> None:
    t = _t(ts)
    o = schedule(t)
    torch.testing.assert_close(o.d_alpha, _autograd(lambda u: schedule(u).alpha, t), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(o.d_sigma, _autograd(lambda u: schedule(u).sigma, t), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(schedule.dlogsnr_dt(t), _autograd(schedule.logsnr, t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_derivatives_vs_finite_differences(schedule: Schedule) -> None:
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    a_p, a_m = schedule(t + h), schedule(t - h)
    o = schedule(t)
    torch.testing.assert_close(o.d_alpha, (a_p.alpha - a_m.alpha) / (2 * h), rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(o.d_sigma, (a_p.sigma - a_m.sigma) / (2 * h), rtol=1e-7, atol=1e-8)
    fd = (schedule.logsnr(t + h) - schedule.logsnr(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.dlogsnr_dt(t), fd, rtol=1e-6, atol=1e-6)
    # d lambda / dt < 0 everywhere inside (0, 1)
    assert bool((schedule.dlogsnr_dt(t) < 0).all())


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_dtype_and_shape_preserved(schedule: Schedule) -> None:
    t = torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    o = schedule(t)
    for v in (o.alpha, o.sigma, o.d_alpha, o.d_sigma, schedule.logsnr(t), schedule.eta(t)):
        assert v.dtype == torch.float32 and v.shape == (3, 4)
    assert schedule.t_from_logsnr(schedule.logsnr(t)).dtype == torch.float32


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_clamped_logsnr(schedule: Schedule) -> None:
    t = torch.tensor([0.0, 1e-9, 0.5, 1.0 - 1e-9, 1.0], dtype=torch.float64)
    lam = schedule.clamped_logsnr(t)
    assert bool(torch.isfinite(lam).all())
    assert float(lam.max()) == LOGSNR_CLAMP and float(lam.min()) == -LOGSNR_CLAMP
    assert float(lam[2]) == pytest.approx(float(schedule.logsnr(t[2:3])), abs=1e-12)


def test_get_schedule() -> None:
    assert isinstance(get_schedule("cosine"), CosineSchedule)
    assert isinstance(get_schedule("flow"), FlowSchedule)
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("linear-vp")
