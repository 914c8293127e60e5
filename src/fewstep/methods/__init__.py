"""Training methods: each one file, each a ``Method`` run by the one ``Trainer``."""

from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.methods.diffusion import GaussianDiffusion

__all__ = ["Batch", "GaussianDiffusion", "LossOutput", "Method", "Phase"]
