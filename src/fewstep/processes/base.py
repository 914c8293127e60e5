"""The ``NoiseProcess`` protocol and shared shape checks."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from fewstep.schedules import Schedule


@runtime_checkable
class NoiseProcess(Protocol):
    """What every forward process offers (Gaussian, masked, uniform)."""

    schedule: Schedule

    def sample_t(self, n: int, *, generator: torch.Generator, device: torch.device | str) -> Tensor: ...

    def add_noise(self, x0: Tensor, t: Tensor, *, generator: torch.Generator) -> Tensor: ...

    def prior_sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device | str
    ) -> Tensor: ...

    def posterior_step(
        self, x_t: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor, *, generator: torch.Generator, eta: float = 0.0
    ) -> Tensor: ...


def check_times(x: Tensor, *times: Tensor | None) -> None:
    """Assert every time tensor is 1-D with one entry per batch row of ``x`` and lies in [0, 1]."""
    for t in times:
        if t is None:
            continue
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"time must have shape [B]=[{x.shape[0]}], got {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"time must be a float tensor, got {t.dtype}")
        if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):  # one host sync; NaN fails too
            raise ValueError(f"time must lie in [0, 1], got range [{float(t.min()):g}, {float(t.max()):g}]")


def bcast(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-row tensor ``v`` [B] to broadcast against ``x`` [B, ...]."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))
