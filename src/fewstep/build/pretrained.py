"""Pretrained teachers from other libraries: a diffusers folder as a fewstep teacher run (``diffusers:DIR``).

``diffusers_run_config(DIR)`` reads the model's ``config.json`` and its scheduler config into the ``RunConfig``
a fewstep teacher of the same function would have: process ``ddpm`` with the scheduler's betas (``DDPMSchedule``),
net kind ``diffusers`` carrying the model config (so a student rebuilds without the teacher folder), and image data
of the model's shape. ``load_diffusers_teacher`` adds the weights (safetensors only, local files only).
``build.export`` writes a student back as a diffusers folder.

Accepted layouts of DIR: a model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) with
``scheduler_config.json`` beside it or in ``DIR/scheduler``; or a pipeline folder (``model_index.json``) with the
model in ``unet/`` or ``transformer/`` and ``scheduler/scheduler_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewstep.config import DataCfg, DiffusionCfg, NetCfg, ProcessCfg, RunConfig

PREFIX = "diffusers:"
"""``--teacher diffusers:DIR``: a diffusers folder instead of a fewstep run."""

MODEL_FILE = "diffusion_pytorch_model.safetensors"
SCHEDULER_FILE = "scheduler_config.json"


def is_diffusers(teacher: str | Path) -> bool:
    """Whether a teacher / run argument names a diffusers folder (``diffusers:DIR``)."""
    return str(teacher).startswith(PREFIX)


def diffusers_dir(teacher: str | Path) -> Path:
    """The folder of ``diffusers:DIR``."""
    return Path(str(teacher)[len(PREFIX):] if is_diffusers(teacher) else teacher)


def find_parts(folder: str | Path) -> tuple[Path, Path]:
    """(model folder, scheduler config file) of a diffusers folder in one of the accepted layouts.

    Raises:
        FileNotFoundError: one line saying what is missing and what the folder should hold.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no diffusers folder at {root}: pass a local save_pretrained folder (nothing is "
                                "downloaded; fetch a Hub model once with huggingface-cli download)")
    model = root
    if not (root / "config.json").is_file():
        model = next((root / sub for sub in ("unet", "transformer") if (root / sub / "config.json").is_file()), root)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{root} holds no diffusers model: expected config.json (a model folder) or "
                                "unet/ or transformer/ (a pipeline folder)")
    if not (model / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{model} has no {MODEL_FILE}: save the model with save_pretrained(..., "
                                "safe_serialization=True) (pickled .bin weights are not loaded)")
    for cand in (root / SCHEDULER_FILE, root / "scheduler" / SCHEDULER_FILE, model / SCHEDULER_FILE):
        if cand.is_file():
            return model, cand
    raise FileNotFoundError(f"{root} has no {SCHEDULER_FILE} (beside the model or in scheduler/): the teacher's "
                            "noise schedule comes from it (scheduler.save_pretrained(DIR))")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def process_from_scheduler(sched: dict[str, Any], path: Path | str = "scheduler_config.json") -> tuple[ProcessCfg, str]:
    """(ProcessCfg, parametrisation) of a diffusers scheduler config (DDPM / DDIM / any scheduler with
    ``beta_schedule``): one-line errors for what has no exact continuous-time counterpart here."""
    from fewstep.denoisers.diffusers import PREDICTIONS
    from fewstep.schedules import DDPM_BETAS

    if sched.get("trained_betas") is not None:
        raise ValueError(f"{path}: explicit trained_betas are not supported (use a named beta_schedule)")
    if sched.get("rescale_betas_zero_snr"):
        raise ValueError(f"{path}: rescale_betas_zero_snr (alpha-bar = 0 at the last timestep) is not supported")
    betas = sched.get("beta_schedule", "linear")
    if betas not in DDPM_BETAS:
        raise ValueError(f"{path}: beta_schedule {betas!r} is not supported; supported: {', '.join(DDPM_BETAS)}")
    pred = sched.get("prediction_type", "epsilon")
    if pred not in PREDICTIONS:
        raise ValueError(f"{path}: prediction_type {pred!r} is not supported; supported: {', '.join(PREDICTIONS)}")
    n = int(sched.get("num_train_timesteps", 1000))
    proc = ProcessCfg(schedule="ddpm", sigma_data=1.0, t_min=1.0 / n, betas=betas,
                      beta_start=float(sched.get("beta_start", 1e-4)), beta_end=float(sched.get("beta_end", 0.02)),
                      train_timesteps=n, steps_offset=int(sched.get("steps_offset", 0)))
    return proc, PREDICTIONS[pred]


def model_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json without diffusers' bookkeeping keys (version, source path): its identity."""
    from fewstep.denoisers.diffusers import check_model_config

    raw = _read_json(model_dir / "config.json")
    cfg = {k: v for k, v in raw.items() if not k.startswith("_") or k == "_class_name"}
    try:
        check_model_config(cfg)
    except ValueError as e:
        raise ValueError(f"{model_dir / 'config.json'}: {e}") from None
    return cfg


def diffusers_run_config(teacher: str | Path) -> RunConfig:
    """The teacher ``RunConfig`` of a diffusers folder (``diffusers:DIR`` or DIR).

    data: ``images`` of the model's shape without a file (a diffusers folder does not say what it was trained on;
    distilling needs ``--data.*``); method: a diffusion teacher trained without label dropout (the null label of a
    class-conditional model is unknown, so guidance is refused)."""
    from fewstep.denoisers.diffusers import model_classes, model_shape

    model_dir, sched_path = find_parts(diffusers_dir(teacher))
    mcfg = model_config(model_dir)
    process, param = process_from_scheduler(_read_json(sched_path), sched_path)
    classes = model_classes(mcfg)
    net = NetCfg(kind="diffusers", parametrization=param, num_classes=classes,
                 diffusers=json.dumps(mcfg, sort_keys=True))
    data = DataCfg(name="images", shape=model_shape(mcfg), classes=classes)
    return RunConfig(data=data, process=process, net=net, method=DiffusionCfg(label_dropout=0.0),
                     run_dir=str(diffusers_dir(teacher)))


def load_diffusers_teacher(teacher: str | Path, *, device: str = "cpu"):
    """(RunConfig, GaussianDiffusion, {"model": DiffusersDenoiser}) of a diffusers folder: the same triple as
    ``build.runs.load_trained`` of a fewstep teacher run, weights from the folder's safetensors, eval mode."""
    from fewstep.build.models import build_diffusion

    cfg = diffusers_run_config(teacher)
    model_dir, _ = find_parts(diffusers_dir(teacher))
    method = build_diffusion(cfg, tuple(cfg.data.shape))
    denoiser = method.trainable()["model"]
    from safetensors.torch import load_file

    state = load_file(str(model_dir / MODEL_FILE))
    missing, unexpected = denoiser.net.load_state_dict(state, strict=False)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        what = "missing from" if missing else "unexpected in"
        raise ValueError(f"{model_dir / MODEL_FILE}: tensor {first!r} is {what} the weights for the model its "
                         f"config.json describes ({len(missing)} missing, {len(unexpected)} unexpected)")
    return cfg, method, {"model": denoiser.to(device).eval().requires_grad_(False)}
