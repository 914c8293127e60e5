"""Explicit-generator random draws that work across devices.

``randn(shape, generator=g, device=d)`` draws on the generator's own device and moves the result to
``d``: a CPU generator can drive a CUDA sampler, and then the noise (hence the samples, up to kernel
numerics) is the same on every device. A generator already on ``d`` draws there directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _draw(fn: Callable[..., Tensor], shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
          device: torch.device | str, dtype: torch.dtype) -> Tensor:
    device = torch.device(device)
    where = device if generator.device.type == device.type else generator.device
    return fn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def randn(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal [shape] on ``device`` drawn from ``generator`` (no global RNG)."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform [0, 1) [shape] on ``device`` drawn from ``generator``."""
    return _draw(torch.rand, shape, generator, device, dtype)
