"""fewstep: few-step diffusion — teachers, moment-matching distillation, inductive moment matching.

Light re-exports only; heavy modules (metrics, CLI, bench) are imported where they are used.
"""

from fewstep.config import RunConfig
from fewstep.data.toys import GMM, GMMOracle, make_gmm8d
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.base import LossOutput, Method, Phase
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers.gaussian import sample
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule

__version__ = "0.1.0"

__all__ = ["GMM", "CosineSchedule", "FlowSchedule", "GMMOracle", "GaussianDenoiser", "GaussianDiffusion",
           "GaussianProcess", "LossOutput", "MLP", "Method", "Phase", "RunConfig", "Schedule", "UNet", "make_gmm8d",
           "sample"]
