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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "fewstep.api": ("TrainedModel", "distill", "evaluate", "load"),
    "fewstep.config": ("DistillConfig", "RunConfig"),
    "fewstep.data.toys": ("GMM", "GMMOracle", "make_gmm8d"),
    "fewstep.denoisers.categorical": ("CategoricalDenoiser",),
    "fewstep.denoisers.gaussian": ("GaussianDenoiser",),
    "fewstep.methods.base": ("LossOutput", "Method", "Phase"),
    "fewstep.methods.diffusion": ("GaussianDiffusion",),
    "fewstep.methods.discrete_diffusion": ("DiscreteDiffusion",),
    "fewstep.methods.discrete_mmd": ("DiscreteMMD",),
    "fewstep.methods.idlm": ("IDLM",),
    "fewstep.methods.imm": ("InductiveMomentMatching",),
    "fewstep.methods.mm": ("MomentMatching",),
    "fewstep.nets.mlp": ("MLP",),
    "fewstep.nets.unet": ("UNet",),
    "fewstep.processes.gaussian": ("GaussianProcess",),
    "fewstep.processes.masked": ("MaskedProcess",),
    "fewstep.processes.uniform": ("UniformProcess",),
    "fewstep.samplers.gaussian": ("sample",),
    "fewstep.schedules": ("CosineSchedule", "FlowSchedule", "Schedule"),
    "fewstep.train.trainer": ("Trainer",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    """Exports are imported on first use (``import fewstep`` stays cheap: the CLI imports only what a command
    needs)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'fewstep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


# ``fewstep.train`` is both a subpackage (the Trainer) and the API function. The subpackage is imported first, so
# that the function defined next is what the name keeps (a later submodule import does not rebind it).
importlib.import_module("fewstep.train")


def train(config="toy2d-checkerboard", **kwargs):  # noqa: F811 - deliberately replaces the subpackage attribute
    """Train a teacher or IMM model: ``fewstep.api.train`` (same arguments; see ``help(fewstep.api.train)``)."""
    from fewstep.api import train as _train

    return _train(config, **kwargs)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:  # the names for type checkers and IDEs
    from fewstep.api import TrainedModel, distill, evaluate, load, train  # noqa: F401
    from fewstep.config import DistillConfig, RunConfig  # noqa: F401
    from fewstep.methods.base import LossOutput, Method, Phase  # noqa: F401
    from fewstep.train.trainer import Trainer  # noqa: F401

__version__ = "0.1.0"

__all__ = ["GMM", "IDLM", "MLP", "CategoricalDenoiser", "CosineSchedule", "DiscreteDiffusion", "DiscreteMMD",
           "DistillConfig", "FlowSchedule", "GMMOracle", "GaussianDenoiser", "GaussianDiffusion", "GaussianProcess",
           "InductiveMomentMatching", "LossOutput", "MaskedProcess", "Method", "MomentMatching", "Phase",
           "RunConfig", "Schedule", "TrainedModel", "Trainer", "UNet", "UniformProcess", "distill", "evaluate",
           "load", "make_gmm8d", "sample", "train"]
