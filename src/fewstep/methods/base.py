"""The ``Method`` contract: what a training method tells the ``Trainer``.

A method owns a noise process and its networks. ``trainable()`` networks each get their own optimizer,
EMA and DDP wrapper; ``frozen()`` ones (teachers) are kept in eval mode without gradients. Per
iteration the trainer runs the phases in order (a phase with ``every = n`` runs on every n-th iteration),
calling ``loss(phase, batch, nets, generator)`` with the *unwrapped-or-DDP* networks in ``nets`` and
stepping the optimizers of ``phase.trains``. ``generate`` draws samples for evaluation and sampling.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fewstep.data.source import Batch


@dataclass(frozen=True)
class Phase:
    """One optimisation phase: its name, the trainable networks it steps, and how often it runs."""

    name: str
    trains: tuple[str, ...]
    every: int = 1


@dataclass
class LossOutput:
    """A scalar loss to backpropagate and detached scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module, abc.ABC):
    """Base class of every training method (teacher diffusion, MM, IMM, ...)."""

    @abc.abstractmethod
    def trainable(self) -> dict[str, nn.Module]:
        """Networks with their own optimizer / EMA / DDP wrapper, by role name."""

    def frozen(self) -> dict[str, nn.Module]:
        """Networks that are never trained (teachers)."""
        return {}

    def phases(self) -> Sequence[Phase]:
        """Phases run each iteration; default: one phase training every trainable network."""
        return (Phase("main", tuple(self.trainable())),)

    @abc.abstractmethod
    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        """Loss of ``phase`` on ``batch``; ``nets`` maps role names to (possibly DDP-wrapped) networks."""

    @abc.abstractmethod
    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, **options: object) -> Tensor:
        """Draw ``n`` samples [n, ...] (float64 for continuous data) with ``steps`` sampling steps."""

    def config(self) -> dict:
        """JSON-able description stored with checkpoints."""
        return {}

    def set_progress(self, nimg: int, total_nimg: int) -> None:
        """Called by the Trainer before every iteration with the samples seen so far and the run length (for
        curricula; a pure function of ``nimg``, so resumed runs see the same values); default: nothing."""

    def method_state(self) -> dict:
        """Training state that lives outside the networks and optimizers (tensors and primitives only), saved
        in every checkpoint's ``train_state`` so that a resumed run continues exactly; default: none."""
        return {}

    def load_method_state(self, state: Mapping) -> None:
        """Restore what ``method_state`` returned."""
