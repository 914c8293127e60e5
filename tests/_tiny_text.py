"""Tiny text denoisers shared by the IDLM and D-MMD tests (tests only)."""

from __future__ import annotations

import torch

from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.nets.text_dit import TextDiT
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess

NS, LS = 6, 4


def tiny_teacher(kind: str, seed: int = 0) -> CategoricalDenoiser:
    torch.manual_seed(seed)
    proc = MaskedProcess(NS) if kind == "masked" else UniformProcess(NS)
    net = TextDiT(proc.width, proc.width, LS, dim=32, depth=1, heads=2, time_conditioned=kind == "uniform")
    return CategoricalDenoiser(net, proc)


def latent_copy(teacher: CategoricalDenoiser, latent_dim: int) -> CategoricalDenoiser:
    proc = teacher.process
    net = TextDiT(proc.width, proc.width, LS, dim=32, depth=1, heads=2,
                  time_conditioned=teacher.net.time_conditioned, latent_dim=latent_dim)
    missing, unexpected = net.load_state_dict(teacher.net.state_dict(), strict=False)
    assert missing == ["latent.weight"] and not unexpected
    return CategoricalDenoiser(net, proc)
