"""The contract of a benchmark dataset evaluator: reference data and metrics of one dataset.

A dataset evaluator draws reference and fresh true samples by (seed, repeat) and computes every metric of
the suite on a set of generated samples; ``primary`` names the metric the acceleration factor reads.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class MetricSpec:
    name: str
    lower_is_better: bool


class DatasetEval(abc.ABC):
    """Reference data and metrics of one benchmark dataset."""

    name: str
    shape: tuple[int, ...]
    metrics: tuple[MetricSpec, ...]
    primary: str
    n_samples: int  # generated samples per repeat

    @abc.abstractmethod
    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        """Fresh true samples (independent of the reference) for the ``data`` noise-floor rows."""

    @abc.abstractmethod
    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        """All metrics of generated samples ``x`` [n, ...] against reference set ``repeat``."""

    def lower_is_better(self, metric: str) -> bool:
        return next(m.lower_is_better for m in self.metrics if m.name == metric)
