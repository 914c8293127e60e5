"""Validation of user values in a run or distillation config, before anything is built or written.

``check_config(cfg)`` walks every field of a (nested) config dataclass: numbers must be finite, and the fields named
in ``RULES`` must lie in their range. The first violation is a ``ValueError`` with one line naming the field as the
CLI spells it (``--train.batch-size``), the rule and the value. The CLI edges (``fewstep train`` / ``distill``) and
the Python API call it before a run folder or its ``config.json`` is touched, so a corrected command is never
refused as a changed config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

Rule = tuple[Callable[[Any], bool], str]

_POS: Rule = (lambda v: v > 0, "must be > 0")
_NONNEG: Rule = (lambda v: v >= 0, "must be >= 0")
_UNIT_OPEN: Rule = (lambda v: 0 <= v < 1, "must be in [0, 1)")
_UNIT: Rule = (lambda v: 0 <= v <= 1, "must be in [0, 1]")

RULES: dict[str, Rule] = {
    "train.total_nimg": _POS, "train.batch_size": _POS, "train.lr": _POS, "train.eps": _POS,
    "train.weight_decay": _NONNEG, "train.warmup_nimg": _NONNEG, "train.lr_final_ratio": _UNIT,
    "train.grad_clip": _NONNEG, "train.ema_halflife_nimg": _NONNEG, "train.ckpt_every_nimg": _NONNEG,
    "train.log_every_nimg": _NONNEG, "train.max_seconds": _POS, "train.seed": _NONNEG,
    "train.ckpt_every_seconds": _NONNEG, "train.max_nonfinite_steps": _POS, "train.log_every_seconds": _NONNEG,
    "train.betas": (lambda v: all(0 <= b < 1 for b in v), "must be two numbers in [0, 1)"),
    "data.length": _POS, "data.vocab": _POS, "data.states": _POS, "data.concentration": _POS, "data.seed": _NONNEG,
    "data.resize": _POS,
    "process.sigma_data": _POS, "process.t_min": _UNIT_OPEN, "process.beta_start": _POS, "process.beta_end": _POS,
    "process.train_timesteps": (lambda v: v >= 2, "must be >= 2"), "process.steps_offset": _NONNEG,
    "net.width": _POS, "net.depth": _POS, "net.heads": _POS, "net.base": _POS, "net.blocks": _POS,
    "net.dropout": _UNIT_OPEN, "net.num_classes": _NONNEG,
    "net.mults": (lambda v: len(v) > 0 and all(m > 0 for m in v), "must be positive integers"),
    "method.steps": _POS, "method.label_dropout": _UNIT_OPEN, "method.group_size": _POS,
}
"""Range of each checked field by its dotted path (a field absent from a config is skipped)."""


def flag(path: str) -> str:
    """The CLI flag of a dotted config path: ``train.batch_size`` -> ``--train.batch-size``."""
    return "--" + path.replace("_", "-")


def check_config(cfg: Any) -> None:
    """Check a RunConfig / DistillConfig (any nested config dataclass).

    Raises:
        ValueError: one line, e.g. ``--train.batch-size must be > 0, got 0``.
    """
    for path, value in _leaves(cfg, ""):
        if isinstance(value, bool) or value is None:
            continue
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ValueError(f"{flag(path)} must be finite, got {value}")
        rule = RULES.get(path)
        if rule is not None and not rule[0](value):
            raise ValueError(f"{flag(path)} {rule[1]}, got {_show(value)}")


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _leaves(obj: Any, prefix: str):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value
