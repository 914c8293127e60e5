"""Denoisers: every network is seen through an x0-predicting wrapper."""

from fewstep.denoisers.gaussian import GaussianDenoiser

__all__ = ["GaussianDenoiser"]
