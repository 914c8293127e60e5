"""Exponential moving average of network weights with a half-life counted in samples.

After a step that consumed ``batch_nimg`` samples the average moves with
``beta = 0.5 ** (batch_nimg / halflife_nimg)``, so the half-life does not depend on the batch size. With
a ramp-up ratio r the half-life is ``min(halflife_nimg, nimg * r)`` (the EDM warm-up, reimplemented from
the paper), so early weights are forgotten quickly. A half-life of 0 disables averaging.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """A float32, eval-mode, gradient-free copy of a network that tracks its weights.

    Args:
        module: the (unwrapped) network to average; copied with ``copy.deepcopy``.
        halflife_nimg: half-life in samples (0: the EMA equals the weights).
        rampup_ratio: optional ramp-up ratio (EDM uses 0.05); ``None`` disables it.
    """

    def __init__(self, module: nn.Module, halflife_nimg: float, rampup_ratio: float | None = None) -> None:
        if halflife_nimg < 0:
            raise ValueError(f"EMA half-life must be >= 0, got {halflife_nimg}")
        self.halflife_nimg = float(halflife_nimg)
        self.rampup_ratio = rampup_ratio
        self.module = copy.deepcopy(module).float().eval().requires_grad_(False)

    def beta(self, batch_nimg: int, nimg: int) -> float:
        """Decay factor of one update of ``batch_nimg`` samples when ``nimg`` samples have been seen."""
        halflife = self.halflife_nimg
        if self.rampup_ratio is not None:
            halflife = min(halflife, nimg * self.rampup_ratio)
        if halflife <= 0:
            return 0.0
        return 0.5 ** (batch_nimg / halflife)

    @torch.no_grad()
    def update(self, module: nn.Module, batch_nimg: int, nimg: int) -> float:
        """Move the average towards ``module``'s weights; buffers are copied. Returns the beta used.

        The (average, source) tensor pairs are matched by name once per source module and kept; each update is
        one ``torch._foreach_lerp_`` (bit-identical to a per-parameter ``lerp_``) and one foreach copy of buffers.

        Args:
            module: the unwrapped network being trained (same structure as the copy).
            batch_nimg: samples consumed since the previous update.
            nimg: samples seen so far, including this batch.
        """
        beta = self.beta(batch_nimg, nimg)
        ema_p, src_p, ema_b, src_b = self._pairs(module)
        if beta == 0.0:
            torch._foreach_copy_(ema_p, src_p)
        elif ema_p:
            src = src_p if all(a.dtype == b.dtype for a, b in zip(ema_p, src_p)) else [
                p.to(a.dtype) for a, p in zip(ema_p, src_p)]
            torch._foreach_lerp_(ema_p, src, 1.0 - beta)
        if ema_b:
            torch._foreach_copy_(ema_b, src_b)
        return beta

    def _pairs(self, module: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """(average params, source params, average buffers, source buffers), matched by name; cached while neither
        module has been moved (the key holds the storage of the first tensors, which ``.to()`` replaces)."""
        first = next(module.parameters(), None)
        mine = next(self.module.parameters(), None)
        key = (id(module), None if first is None else first.data_ptr(), None if mine is None else mine.data_ptr())
        if getattr(self, "_pairs_key", None) != key:
            src = dict(module.named_parameters())
            src_buffers = dict(module.named_buffers())
            params, buffers = list(self.module.named_parameters()), list(self.module.named_buffers())
            self._cached = ([p for _, p in params], [src[n] for n, _ in params],
                            [b for _, b in buffers], [src_buffers[n] for n, _ in buffers])
            self._pairs_key = key
        return self._cached

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights (a module state dict)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Restore averaged weights saved by ``state_dict``."""
        getattr(self.module, "_orig_mod", self.module).load_state_dict(state_dict)  # unwrapped keys
