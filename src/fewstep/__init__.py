"""fewstep: few-step diffusion — teachers, moment-matching distillation, inductive moment matching.

Five calls cover every method (``help(fewstep.train)`` etc.; the same code paths as the CLI)::

    import fewstep
    teacher = fewstep.train("toy2d-checkerboard", run_dir="runs/cb")          # or "digits", "hmm-mdlm", ...
    student = fewstep.distill("runs/cb", method="mm-alternating", steps=4)    # mm-instant, idlm, dmmd
    x = student.sample(4096)                                                  # the k-step sampler
    print(fewstep.evaluate(x, "checkerboard2d"))
    model = fewstep.load("runs/cb")                                           # any run folder

IMM trains from scratch: ``fewstep.train("imm-checkerboard")``. The building blocks are exported too:
schedules, processes, denoisers, samplers, the methods (``GaussianDiffusion``, ``MomentMatching``,
``InductiveMomentMatching``, ``DiscreteDiffusion``, ``IDLM``, ``DiscreteMMD``) and the ``Trainer``.
"""

from fewstep.api import TrainedModel, distill, evaluate, load, train
from fewstep.config import DistillConfig, RunConfig
from fewstep.data.toys import GMM, GMMOracle, make_gmm8d
from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.base import LossOutput, Method, Phase
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.methods.discrete_diffusion import DiscreteDiffusion
from fewstep.methods.discrete_mmd import DiscreteMMD
from fewstep.methods.idlm import IDLM
from fewstep.methods.imm import InductiveMomentMatching
from fewstep.methods.mm import MomentMatching
from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers.gaussian import sample
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule
from fewstep.train.trainer import Trainer

__version__ = "0.1.0"

__all__ = ["GMM", "IDLM", "MLP", "CategoricalDenoiser", "CosineSchedule", "DiscreteDiffusion", "DiscreteMMD",
           "DistillConfig", "FlowSchedule", "GMMOracle", "GaussianDenoiser", "GaussianDiffusion", "GaussianProcess",
           "InductiveMomentMatching", "LossOutput", "MaskedProcess", "Method", "MomentMatching", "Phase",
           "RunConfig", "Schedule", "TrainedModel", "Trainer", "UNet", "UniformProcess", "distill", "evaluate",
           "load", "make_gmm8d", "sample", "train"]
