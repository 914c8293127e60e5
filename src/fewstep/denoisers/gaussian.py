"""x0-predicting wrapper around a backbone for Gaussian diffusion.

The backbone sees a unit-variance input c_in z_t and the time(s); its output is turned into x0_hat by the
chosen parametrisation. Preconditioning coefficients are computed in float32 (float64 -> float32 at the
end) and the backbone output is cast to float32 before the skip, so bf16 autocast never touches them.

Parametrisations (docs/concepts.md, docs/methods/gaussian-diffusion.md):
- ``edm``: D = c_skip z + c_out F with c_skip = alpha sd^2 / (alpha^2 sd^2 + sigma^2),
  c_out = sigma sd / sqrt(alpha^2 sd^2 + sigma^2) (EDM preconditioning written in t; well defined at t = 1).
- ``x0``: D = F. ``eps``: D = (z - sigma F)/alpha. ``v``: D = (alpha z - sigma F)/(alpha^2 + sigma^2).
- ``velocity``: D = (sigma' z - sigma F)/(sigma' alpha - sigma alpha').
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fewstep.processes.base import bcast, check_times
from fewstep.processes.gaussian import GaussianProcess

Parametrization = Literal["edm", "x0", "eps", "v", "velocity"]
PARAMETRIZATIONS = ("edm", "x0", "eps", "v", "velocity")


class GaussianDenoiser(nn.Module):
    """D(z_t, t, s=None, cond=None) -> x0_hat, shaped like z_t, float32.

    Args:
        net: backbone ``net(x, t, s, cond)`` returning a tensor shaped like x.
        process: the Gaussian process whose schedule defines the coefficients.
        parametrization: what the backbone predicts (see module docstring).
    """

    def __init__(self, net: nn.Module, process: GaussianProcess, parametrization: Parametrization = "edm") -> None:
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"unknown parametrization {parametrization!r}; choose one of {PARAMETRIZATIONS}")
        self.net = net
        self.process = process
        self.parametrization = parametrization

    def forward(self, x_t: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_times(x_t, t, s)
        proc = self.process
        sd = proc.sigma_data
        o = proc.schedule(t.double())
        c_in = 1.0 / (o.alpha**2 * sd**2 + o.sigma**2).sqrt()
        z = x_t.float()
        out = self.net(bcast(c_in.float(), z) * z, t.float(), None if s is None else s.float(), cond).float()
        p = self.parametrization
        if p == "edm":
            den = (o.alpha**2 * sd**2 + o.sigma**2)
            c_skip = (o.alpha * sd**2 / den).float()
            c_out = (o.sigma * sd / den.sqrt()).float()
            return bcast(c_skip, z) * z + bcast(c_out, z) * out
        if p == "x0":
            return out
        tt = t.float()
        if p == "eps":
            return proc.x0_from_eps(z, out, tt)
        if p == "v":
            return proc.x0_from_v(z, out, tt)
        return proc.x0_from_velocity(z, out, tt)


def denoise64(denoiser: nn.Module, z: Tensor, t: Tensor, **kw: Tensor | None) -> Tensor:
    """Call ``denoiser`` on a float64 state and return float64 (cast to float32 only at the call)."""
    with torch.no_grad():
        return denoiser(z.float(), t.float(), **kw).double()
