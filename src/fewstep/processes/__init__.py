"""Noise processes (forward corruption, posteriors, priors)."""

from fewstep.processes.base import NoiseProcess, check_times
from fewstep.processes.gaussian import GaussianProcess
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess

__all__ = ["GaussianProcess", "MaskedProcess", "NoiseProcess", "UniformProcess", "check_times"]
