"""Training: the ``Trainer`` loop, EMA, optimizers, checkpoints, logging and distributed helpers."""

from fewstep.train.checkpoint import (
    DamagedCheckpointWarning,
    find_weights,
    load_latest,
    load_weights,
    save_checkpoint,
    save_weights,
)
from fewstep.train.ema import EMA
from fewstep.train.optim import lr_at, make_optimizer
from fewstep.train.trainer import ConfigMismatchError, Evaluator, NonFiniteError, Trainer, TrainingInterrupted

__all__ = [
    "EMA",
    "ConfigMismatchError",
    "DamagedCheckpointWarning",
    "Evaluator",
    "NonFiniteError",
    "Trainer",
    "TrainingInterrupted",
    "find_weights",
    "load_latest",
    "load_weights",
    "lr_at",
    "make_optimizer",
    "save_checkpoint",
    "save_weights",
]
