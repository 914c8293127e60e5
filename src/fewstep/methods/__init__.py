"""Training methods: each one file, each a ``Method`` run by the one ``Trainer``."""

from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.methods.discrete_diffusion import DiscreteDiffusion
from fewstep.methods.mm import MM_OPTIM, MomentMatching

__all__ = ["MM_OPTIM", "Batch", "DiscreteDiffusion", "GaussianDiffusion", "LossOutput", "Method", "MomentMatching",
           "Phase"]
