"""Training: the ``Trainer`` loop, EMA, optimizers, checkpoints, logging and distributed helpers."""

from fewstep.train.checkpoint import find_weights, load_latest, load_weights, save_checkpoint, save_weights
from fewstep.train.ema import EMA
from fewstep.train.optim import lr_at, make_optimizer
from fewstep.train.trainer import ConfigMismatchError, Evaluator, Trainer

__all__ = [
    "EMA",
    "ConfigMismatchError",
    "Evaluator",
    "Trainer",
    "find_weights",
    "load_latest",
    "load_weights",
    "lr_at",
    "make_optimizer",
    "save_checkpoint",
    "save_weights",
]
