"""The Python API: train, distill, load, sample and evaluate, for every method, in a few lines.

Example (a toy teacher, a 4-step Moment Matching student, both sampled and scored)::

    import fewstep
    teacher = fewstep.train("toy2d-checkerboard", run_dir="runs/cb", total_nimg=200_000)
    student = fewstep.distill("runs/cb", method="mm-alternating", steps=4, total_nimg=100_000)
    x = student.sample(4096)                         # float64 [4096, 2], 4 network evaluations
    print(fewstep.evaluate(x, "checkerboard2d"))     # {"energy": ..., "precision": ...}

Every call is the same code path as the CLI: ``train`` is ``fewstep train``, ``distill`` is ``fewstep distill``
(the same defaults, resolved by the same policy and written to the run's config.json), and a re-run with the
same arguments resumes or reuses the run. ``load`` rebuilds any run folder; ``TrainedModel.sample`` is the one
sampling path of every model (the bench and ``fewstep sample`` call it too).
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import torch
from torch import Tensor

from fewstep.build.distill import build_distillation
from fewstep.build.distill_config import DISTILL_METHODS, distill_config, resolve_distill
from fewstep.build.runs import TrainedModel, load_model
from fewstep.build.trainers import build_trainer
from fewstep.config import METHOD_CFGS, DistillConfig, RunConfig, TrainCfg
from fewstep.presets import get_preset

__all__ = ["TrainedModel", "distill", "evaluate", "load", "train"]


def _split(options: dict, method_cls: type) -> tuple[dict, dict]:
    """Keyword options -> (TrainCfg overrides, method-config overrides); an unknown name is a one-line error."""
    train_names = {f.name for f in fields(TrainCfg)}
    method_names = {f.name for f in fields(method_cls)} - {"name"}
    bad = set(options) - train_names - method_names
    if bad:
        raise TypeError(f"unknown options {sorted(bad)}: pass TrainCfg fields ({', '.join(sorted(train_names))}) or "
                        f"{method_cls.__name__} fields ({', '.join(sorted(method_names))})")
    train = {k: v for k, v in options.items() if k in train_names}
    return train, {k: v for k, v in options.items() if k not in train_names}


def train(config: str | RunConfig = "toy2d-checkerboard", *, run_dir: str | Path | None = None,
          method: str | None = None, data: dict | None = None, net: dict | None = None, progress: bool = True,
          **options: object) -> TrainedModel:
    """Train (or resume, or reuse) a teacher or from-scratch run and return it ready to sample.

    Args:
        config: a preset name (``fewstep info`` lists them, e.g. ``toy2d-checkerboard``, ``digits``,
            ``hmm-mdlm``, ``imm-checkerboard``) or a full ``RunConfig``.
        run_dir: the run folder (default: the preset's).
        method: switch the preset's method (``diffusion``, ``imm``, ``mdlm``, ``uniform``), keeping its data,
            process, net and training settings.
        data: ``DataCfg`` fields to override, e.g. your own file: ``{"name": "vectors", "root": "x.npy"}``
            (``images``, ``vectors``, ``gmm``, ``tokens``; docs/data.md).
        net: ``NetCfg`` fields to override, e.g. ``{"num_classes": 10}``.
        options: ``TrainCfg`` fields (``total_nimg``, ``batch_size``, ``lr``, ``device``, ``seed``, ...) and
            fields of the method config (e.g. ``weighting`` for diffusion, ``group_size`` for IMM).

    Returns:
        The trained run as a :class:`TrainedModel` (EMA weights, on the run's device).
    """
    cfg = get_preset(config) if isinstance(config, str) else config
    if method is not None and cfg.method.name != method:
        if method not in METHOD_CFGS:
            raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHOD_CFGS)}")
        cfg = replace(cfg, method=METHOD_CFGS[method]())
    train_opts, method_opts = _split(options, type(cfg.method))
    cfg = replace(cfg, train=replace(cfg.train, **train_opts), method=replace(cfg.method, **method_opts),
                  data=replace(cfg.data, **(data or {})), net=replace(cfg.net, **(net or {})),
                  run_dir=str(run_dir) if run_dir is not None else cfg.run_dir)
    trainer = build_trainer(cfg, progress=progress)
    trainer.fit()
    return load_model(cfg.run_dir, device=trainer.device)


def distill(teacher: str | Path, *, method: str = "mm-alternating", steps: int = 4,
            run_dir: str | Path | None = None, data: dict | None = None, progress: bool = True,
            **options: object) -> TrainedModel:
    """Distill a trained teacher run into a ``steps``-step student (or resume / reuse the run).

    Args:
        teacher: a teacher run folder (``train``) or ``"oracle"`` (the exact gmm8d denoiser, MM only).
        method: ``mm-alternating`` / ``mm-instant`` (Gaussian teachers), ``idlm`` / ``dmmd`` (discrete ones).
        steps: the student's number of sampling steps k.
        run_dir: the run folder (default ``runs/<teacher>-<method>-k<steps>``).
        data: the oracle's mixture (``teacher="oracle"`` only; default gmm8d), e.g.
            ``{"name": "gmm", "root": "mixture.json"}``: a trained teacher brings its own data.
        options: ``TrainCfg`` fields (``total_nimg``, ``lr``, ``device``, ``seed``, ...) and fields of the
            method config (``MMCfg``, ``IDLMCfg`` or ``DMMDCfg``, e.g. ``guidance``, ``kernel``); fields left
            out keep the measured defaults of ``fewstep.policy``.

    Returns:
        The student as a :class:`TrainedModel`; ``sample(n)`` runs its k-step sampler.
    """
    if method not in DISTILL_METHODS:
        raise ValueError(f"unknown distillation method {method!r}; choose one of {sorted(DISTILL_METHODS)}")
    cfg: DistillConfig = distill_config(str(teacher), method=method, steps=steps,
                                        run_dir=str(run_dir) if run_dir is not None else None)
    if data is not None:
        if str(teacher) != "oracle":
            raise ValueError("data= applies to teacher='oracle' only: a trained teacher brings its own data")
        cfg = replace(cfg, data=replace(cfg.data, **data))
    train_opts, method_opts = _split(options, type(cfg.method))
    cfg = resolve_distill(replace(cfg, train=replace(cfg.train, **train_opts),
                                  method=replace(cfg.method, **method_opts)))
    trainer = build_distillation(cfg, progress=progress)
    trainer.fit()
    return load_model(cfg.run_dir, device=trainer.device)


def load(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
         checkpoint: str | None = None) -> TrainedModel:
    """A trained run folder (teacher, IMM or distilled student) rebuilt from its config.json, ready to sample.

    ``checkpoint`` names an older checkpoint of the run (e.g. ``"nimg_000192000"``); ``ema=False`` loads the
    raw instead of the EMA weights."""
    return load_model(run_dir, ema=ema, device=device, checkpoint=checkpoint)


def evaluate(samples: Tensor, dataset: str, *, seed: int = 0) -> dict[str, float]:
    """The benchmark metrics of ``samples`` [n, *shape] against fresh reference data of ``dataset``.

    ``gmm8d`` / ``checkerboard2d`` / ``spiral2d``: energy distance, precision (and GMM mode coverage);
    ``digits8x8``: fd_digits, class entropy and confidence; token suites (``hmm-v32-l64``, ``grid2d``):
    exact-oracle NLL or table TV with entropy. Same evaluators as ``fewstep bench`` and ``fewstep eval``."""
    from fewstep.bench.suites import make_eval

    ev = make_eval(dataset)
    if tuple(samples.shape[1:]) != tuple(ev.shape):
        raise ValueError(f"samples have shape {tuple(samples.shape[1:])}, {dataset} needs {tuple(ev.shape)}")
    if dataset != "digits8x8":
        ev.n_samples = max(int(samples.shape[0]), 2)
    return ev.evaluate(samples.cpu(), 0, seed)
