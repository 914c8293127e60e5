"""Samplers are pure functions of (denoiser, state, explicit time grid, generator)."""

from fewstep.samplers.gaussian import SAMPLERS, ancestral, ddim, euler, heun, nfe, sample
from fewstep.samplers.grids import edm_grid, logsnr_grid, make_grid, uniform_grid

__all__ = ["SAMPLERS", "ancestral", "ddim", "edm_grid", "euler", "heun", "logsnr_grid", "make_grid", "nfe",
           "sample", "uniform_grid"]
