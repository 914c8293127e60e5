"""Position-addressable data sources.

A batch is a pure function of (seed, global sample position): the sample at position p of a finite
dataset is ``perm(seed, epoch = p // N)[p % N]``; an analytic source draws chunk ``p // chunk`` from a
generator seeded by (seed, chunk). Hence resuming at any ``nimg`` replays exactly the same data, and
2 ranks with per-rank batch b see exactly the samples of 1 rank with batch 2b.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
from torch import Tensor

Batch = dict[str, Tensor]
"""A training batch: ``{"x": [B, ...]}`` plus optional ``"label": [B]`` (int64)."""



def seeded(*keys: int) -> torch.Generator:
    """A CPU generator seeded deterministically from integer keys."""
    h = 0x9E3779B97F4A7C15
    for k in keys:
        h = (h * 6364136223846793005 + (int(k) & 0xFFFFFFFFFFFF) + 1442695040888963407) % (1 << 63)
    return torch.Generator().manual_seed(h)


class DataSource(abc.ABC):
    """Something the trainer can ask for the samples at positions [start, start + size)."""

    name: str = "data"
    shape: tuple[int, ...] = ()

    @abc.abstractmethod
    def batch(self, start: int, size: int, *, seed: int) -> Batch:
        """Samples at global positions ``start .. start + size - 1`` (float32 ``x``, optional ``label``)."""


class EpochOrder:
    """Item at global position p of a finite set of ``n`` items: ``perm(seed, epoch = p // n)[p % n]``, the
    permutations drawn from ``seeded(seed, epoch, tag)`` (a few are cached)."""

    def __init__(self, n: int, tag: int) -> None:
        self.n, self.tag = n, tag
        self._perm: dict[tuple[int, int], Tensor] = {}

    def _permutation(self, seed: int, epoch: int) -> Tensor:
        key = (seed, epoch)
        if key not in self._perm:
            if len(self._perm) > 4:
                self._perm.clear()
            self._perm[key] = torch.randperm(self.n, generator=seeded(seed, epoch, self.tag))
        return self._perm[key]

    def indices(self, start: int, size: int, *, seed: int) -> Tensor:
        """Item indices int64 [size] of positions ``start .. start + size - 1``."""
        pos = torch.arange(start, start + size)
        idx = torch.empty(size, dtype=torch.long)
        for epoch in pos.div(self.n, rounding_mode="floor").unique().tolist():
            sel = pos // self.n == epoch
            idx[sel] = self._permutation(seed, epoch)[pos[sel] % self.n]
        return idx


class TensorSource(DataSource):
    """A finite dataset held in memory (``x`` [N, ...] float32, optional ``labels`` [N])."""

    def __init__(self, x: Tensor, labels: Tensor | None = None, *, name: str = "data") -> None:
        if labels is not None and labels.shape[0] != x.shape[0]:
            raise ValueError("labels and data differ in length")
        self.x, self.labels, self.name = x.float(), labels, name
        self.shape = tuple(x.shape[1:])
        self._order = EpochOrder(x.shape[0], 7)

    def batch(self, start: int, size: int, *, seed: int) -> Batch:
        idx = self._order.indices(start, size, seed=seed)
        out: Batch = {"x": self.x[idx]}
        if self.labels is not None:
            out["label"] = self.labels[idx]
        return out


class SamplerSource(DataSource):
    """An infinite analytic source: ``draw(n, generator) -> [n, ...]`` evaluated chunk by chunk."""

    def __init__(self, draw: Callable[..., Tensor], shape: tuple[int, ...], *, name: str, chunk: int = 256) -> None:
        self.draw, self.shape, self.name, self.chunk = draw, shape, name, chunk

    def batch(self, start: int, size: int, *, seed: int) -> Batch:
        first, last = start // self.chunk, (start + size - 1) // self.chunk
        parts = [self.draw(self.chunk, generator=seeded(seed, c, 11)) for c in range(first, last + 1)]
        x = torch.cat(parts)[start - first * self.chunk: start - first * self.chunk + size]
        return {"x": x.float()}
