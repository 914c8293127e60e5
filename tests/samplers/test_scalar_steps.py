"""The samplers' scalar per-step coefficients (issue 28) against the per-row reference.

The reference is the earlier formulation: per-row float64 time vectors through ``GaussianProcess.posterior_step``
/ ``ode_drift`` / ``renoise``. The two agree to rounding (<= 1e-12 relative): the schedule values are bit-identical,
but torch's vectorised float64 ``sqrt`` is not correctly rounded (1,428 of 100,000 draws differ from ``math.sqrt``
by one ulp), so a per-row coefficient can differ from the correctly rounded scalar by one ulp. Chunked network
calls (``chunk``) must not change a sample at all.
"""

from __future__ import annotations

import pytest
import torch

from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.nets.mlp import MLP
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers import gaussian as G
from fewstep.samplers.grids import edm_grid, uniform_grid
from fewstep.samplers.student import renoise, sample_student
from fewstep.schedules import get_schedule


def _rows(v: float, z: torch.Tensor) -> torch.Tensor:
    return torch.full((z.shape[0],), v, dtype=torch.float64)


def _den(z: torch.Tensor, t: float, den) -> torch.Tensor:
    with torch.no_grad():
        return den(z.float(), torch.full((z.shape[0],), t)).double()


def reference(den, proc: GaussianProcess, z: torch.Tensor, grid: torch.Tensor, sampler: str,
              gen: torch.Generator) -> torch.Tensor:
    """The per-row formulation of every sampler (the code before scalar coefficients)."""
    ts = grid.tolist()
    z = z.double()
    for t, s in zip(ts[:-1], ts[1:]):
        x = _den(z, t, den)
        if sampler in ("ancestral", "ddim", "student", "fresh"):
            if s == 0.0:
                return x
            if sampler == "fresh":
                z = renoise(proc, z, x, _rows(t, z), _rows(s, z), mode="fresh", generator=gen)
            else:
                eta = 0.0 if sampler == "ddim" else 1.0
                z = proc.posterior_step(z, x, _rows(t, z), _rows(s, z), generator=gen if eta else None, eta=eta)
            continue
        d = proc.ode_drift(z, x, _rows(t, z))
        z_next = z + (s - t) * d
        if sampler == "heun" and s > 0.0:
            d2 = proc.ode_drift(z_next, _den(z_next, s, den), _rows(s, z))
            z_next = z + (s - t) * 0.5 * (d + d2)
        z = z_next
    return z


@pytest.mark.parametrize("schedule", ["cosine", "flow"])
@pytest.mark.parametrize("sampler", [*G.SAMPLERS, "student", "fresh"])
def test_scalar_coefficients_bit_identical(schedule: str, sampler: str) -> None:
    torch.manual_seed(0)
    proc = GaussianProcess(get_schedule(schedule))
    den = GaussianDenoiser(MLP(3, width=32, depth=2), proc).eval()
    grids = [uniform_grid(6), edm_grid(5, proc.schedule)] if schedule == "cosine" else [uniform_grid(6)]
    for grid in grids:
        for chunk in (None, 5):
            if sampler in ("student", "fresh"):
                gen = torch.Generator().manual_seed(3)
                out = sample_student(den, proc, (37, 3), grid=grid, generator=gen, chunk=chunk,
                                     renoise_mode="fresh" if sampler == "fresh" else "posterior")
            else:
                gen = torch.Generator().manual_seed(3)
                out = G.sample(den, proc, (37, 3), grid=grid, generator=gen, sampler=sampler, chunk=chunk)
            if chunk is None:
                t0 = float(grid[0])
                z0 = proc.prior_sample((37, 3), generator=torch.Generator().manual_seed(3), t=t0)
                expect = reference(den, proc, z0, grid, sampler, _after_prior(3, (37, 3), proc, t0))
                assert out.shape == (37, 3)
                assert float((out - expect).abs().max()) <= 1e-12 * float(expect.abs().max()), (sampler, grid)
                unchunked = out
            else:
                assert torch.equal(out, unchunked), (sampler, chunk)


def _after_prior(seed: int, shape: tuple[int, ...], proc: GaussianProcess, t: float) -> torch.Generator:
    """A generator in the state ``sample`` leaves it after the prior draw (the reference draws its noise from it)."""
    gen = torch.Generator().manual_seed(seed)
    proc.prior_sample(shape, generator=gen, t=t)
    return gen


def test_posterior_step_at_matches_per_row() -> None:
    proc = GaussianProcess(get_schedule("cosine"))
    z, x = torch.randn(9, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64)
    noise = torch.randn(9, 4, dtype=torch.float64)
    for t, s in [(1.0, 0.7), (0.5, 0.2), (0.3, 0.0)]:
        vals = proc.grid_values(torch.tensor([t, s], dtype=torch.float64))
        for eta in (0.0, 0.5, 1.0):
            a = proc.posterior_step_at(z, x, vals[0], vals[1], eta=eta, noise=noise)
            b = proc.posterior_step(z, x, torch.full((9,), t, dtype=torch.float64),
                                    torch.full((9,), s, dtype=torch.float64), eta=eta, noise=noise)
            assert float((a - b).abs().max()) <= 1e-14 * float(b.abs().max())
    with pytest.raises(ValueError, match="eta"):
        proc.posterior_step_at(z, x, vals[0], vals[1], eta=2.0)


def test_imm_sampler_chunks_change_no_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    from fewstep.build.models import build_imm
    from fewstep.presets import get_preset
    from fewstep.samplers import imm

    torch.manual_seed(0)
    fmap = build_imm(get_preset("imm-gmm8d"), (8,)).fmap.eval()
    grid = torch.linspace(0.994, 0.002, 4, dtype=torch.float64)
    whole = {s: imm.sample_imm(fmap, (23, 8), grid=grid, generator=torch.Generator().manual_seed(1), sampler=s)
             for s in ("pushforward", "restart")}
    monkeypatch.setattr(imm, "CHUNK", 5)
    for s, x in whole.items():
        assert torch.equal(imm.sample_imm(fmap, (23, 8), grid=grid, generator=torch.Generator().manual_seed(1),
                                          sampler=s), x), s
