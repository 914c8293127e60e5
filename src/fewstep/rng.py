"""Explicit-generator random draws that work across devices.

``randn(shape, generator=g, device=d)`` draws on the generator's own device and moves the result to
``d``: a CPU generator can drive a CUDA sampler, and then the noise (hence the samples, up to kernel
numerics) is the same on every device. A generator already on ``d`` draws there directly.
"""

from __future__ import annotations

import torch
from torch import Tensor


def randn(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal [shape] on ``device`` drawn from ``generator`` (no global RNG)."""
    device = torch.device(device)
    if generator.device.type == device.type:
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)


def rand(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) [shape] on ``device`` drawn from ``generator``."""
    device = torch.device(device)
    if generator.device.type == device.type:
        return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype)
    return torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
