"""GMMOracle.posterior_cov against Tweedie's identity dE[x|z]/dz = (alpha / sigma^2) Cov[x|z] (autograd)."""

from __future__ import annotations

import pytest
import torch

from fewstep.data.toys import GMM, GMMOracle, make_gmm8d
from fewstep.schedules import CosineSchedule, FlowSchedule


def _full_cov_gmm() -> GMM:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) * 0.1 + 0.05 * torch.eye(2, dtype=torch.float64)
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.5]], dtype=torch.float64)
    return GMM(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), means, covs)


@pytest.mark.parametrize("schedule", [CosineSchedule(), FlowSchedule()])
@pytest.mark.parametrize("gmm_fn", [_full_cov_gmm, make_gmm8d])
def test_posterior_cov_matches_tweedie_jacobian(schedule, gmm_fn):
    gmm = gmm_fn()
    oracle = GMMOracle(gmm, schedule)
    g = torch.Generator().manual_seed(0)
    for t_val in (0.2, 0.5, 0.8):
        t = torch.full((4,), t_val, dtype=torch.float64)
        o = schedule(t)
        x = gmm.sample(4, generator=g)
        z = o.alpha[:, None] * x + o.sigma[:, None] * torch.randn(x.shape, generator=g, dtype=torch.float64)
        cov = oracle.posterior_cov(z, t)
        for i in range(4):
            jac = torch.autograd.functional.jacobian(lambda zz, i=i, t=t: oracle(zz[None], t[i:i + 1])[0], z[i])
            expected = jac * (o.sigma[i] ** 2 / o.alpha[i])
            torch.testing.assert_close(cov[i], expected, rtol=1e-7, atol=1e-9)
        # symmetric positive semi-definite
        torch.testing.assert_close(cov, cov.transpose(1, 2))
        assert bool((torch.linalg.eigvalsh(cov) > -1e-10).all())


def test_sample_data_is_the_gmm():
    gmm = make_gmm8d()
    x = GMMOracle(gmm, CosineSchedule()).sample_data(20000, torch.Generator().manual_seed(1))
    freq = torch.bincount(gmm.assign(x), minlength=8).double() / x.shape[0]
    assert (freq - gmm.weights).abs().max() < 0.015
