"""``fewstep eval``: the benchmark metrics of saved samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass(frozen=True)
class EvalArgs:
    """Metrics of saved samples (a .safetensors file with key 'x') against a benchmark dataset."""

    samples: str
    """Path to samples written by 'fewstep sample'."""
    dataset: Literal["gmm8d", "checkerboard2d", "spiral2d", "digits8x8"]
    seed: int = 0


def cmd_eval(argv: list[str]) -> int:
    from safetensors.torch import load_file

    from fewstep.bench.suites import make_eval

    a = tyro.cli(EvalArgs, args=argv, prog="fewstep eval")
    if not Path(a.samples).exists():
        raise SystemExit(f"error: no samples file at {a.samples} (write one with 'fewstep sample')")
    x = load_file(a.samples)["x"]
    ev = make_eval(a.dataset)
    if tuple(x.shape[1:]) != ev.shape:
        raise SystemExit(f"error: samples have shape {tuple(x.shape[1:])}, {a.dataset} needs {ev.shape}")
    if a.dataset != "digits8x8":
        ev.n_samples = max(x.shape[0], 2)
    print(json.dumps({"dataset": a.dataset, "n_samples": int(x.shape[0]), **ev.evaluate(x, 0, a.seed)}))
    return 0
