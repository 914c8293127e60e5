"""Calling any denoiser (a trained net or an exact oracle) in its own input dtype."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def input_dtype(net: nn.Module) -> torch.dtype:
    """``net.input_dtype`` if declared (oracles: float64), else the dtype of its first float parameter."""
    dt = getattr(net, "input_dtype", None)
    if dt is not None:
        return dt
    p = next(iter(net.parameters()), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def call_denoiser(net: nn.Module, z: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
    """``net(z, t, cond=...)`` with z [B, ...] and t [B] cast to the net's input dtype."""
    dt = input_dtype(net)
    return net(z.to(dt), t.to(dt), **({} if cond is None else {"cond": cond}))
