"""The compute device of a run."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available; use --train.device cpu")
    return torch.device(name)


def seeded_init(make, seed: int):
    """Call ``make()`` (which initialises networks) with the torch RNG seeded from ``seed``, restoring the
    global RNG state afterwards: the same config always starts from the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()
