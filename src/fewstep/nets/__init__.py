"""Backbones. A backbone maps (x, t, s, cond) -> tensor shaped like x; no preconditioning, no device code."""

from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet

__all__ = ["MLP", "UNet"]
