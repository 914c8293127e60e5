"""Noise processes (forward corruption, posteriors, priors)."""

from fewstep.processes.base import NoiseProcess, check_times
from fewstep.processes.gaussian import GaussianProcess

__all__ = ["GaussianProcess", "NoiseProcess", "check_times"]
