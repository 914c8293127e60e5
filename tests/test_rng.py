"""fewstep.rng: explicit generators, no global RNG, device-independent draws."""

from __future__ import annotations

import torch

from fewstep import rng


def test_draws_are_reproducible_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a = rng.randn((3, 4), generator=torch.Generator().manual_seed(5), device="cpu", dtype=torch.float64)
    b = rng.randn((3, 4), generator=torch.Generator().manual_seed(5), device="cpu", dtype=torch.float64)
    u = rng.rand((7,), generator=torch.Generator().manual_seed(5), device="cpu")
    assert torch.equal(a, b) and a.dtype == torch.float64 and u.shape == (7,)
    assert bool(((u >= 0) & (u < 1)).all())
    assert torch.equal(state, torch.get_rng_state())


def test_matches_torch_on_the_generator_device():
    a = rng.randn((5,), generator=torch.Generator().manual_seed(1), device="cpu")
    b = torch.randn(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
