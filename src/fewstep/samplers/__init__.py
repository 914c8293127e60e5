"""Samplers are pure functions of (denoiser, state, explicit time grid, generator)."""

from fewstep.samplers.gaussian import SAMPLERS, ancestral, ddim, euler, heun, nfe, sample
from fewstep.samplers.grids import edm_grid, logsnr_grid, make_grid, uniform_grid
from fewstep.samplers.student import multistep, renoise, sample_student, student_grid

__all__ = ["SAMPLERS", "ancestral", "ddim", "edm_grid", "euler", "heun", "logsnr_grid", "make_grid", "multistep",
           "nfe", "renoise", "sample", "sample_student", "student_grid", "uniform_grid"]
