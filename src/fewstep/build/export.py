"""Export: a run's network in another library's format. Today diffusers: a student distilled from a
``diffusers:DIR`` teacher (its network is a diffusers model) written back as a diffusers folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewstep.build.pretrained import SCHEDULER_FILE
from fewstep.config import ProcessCfg

STUDENT_FILE = "fewstep_student.json"
"""What an exported student writes beside its diffusers folders: the k-step sampler it was distilled for."""


def scheduler_config(process: ProcessCfg, parametrization: str) -> dict[str, Any]:
    """A diffusers ``DDIMScheduler`` config of a ddpm process: trailing spacing (our uniform grid), alpha-bar = 1
    at the end (our t = 0), no clipping (our samplers do not clip)."""
    from fewstep.denoisers.diffusers import PREDICTIONS

    pred = {v: k for k, v in PREDICTIONS.items()}[parametrization]
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": process.train_timesteps,
            "beta_schedule": process.betas, "beta_start": process.beta_start, "beta_end": process.beta_end,
            "prediction_type": pred, "timestep_spacing": "trailing", "set_alpha_to_one": True, "clip_sample": False,
            "steps_offset": 0}


def export_diffusers(run: str | Path, out: str | Path, *, ema: bool = True) -> Path:
    """Write the network of a diffusers-backed run (a student distilled from a ``diffusers:`` teacher) as a
    diffusers folder: ``OUT/model`` (``save_pretrained``, safetensors), ``OUT/scheduler/scheduler_config.json``
    (a DDIM scheduler on the same betas, trailing timesteps) and, for a student, ``OUT/fewstep_student.json``
    (its k, the diffusers timesteps of its grid and its eta). Returns OUT.

    Raises:
        ValueError: the run's network is not a diffusers model (fewstep's own nets have no diffusers class).
    """
    from fewstep.build.runs import load_model

    model = load_model(run, ema=ema)
    cfg = model.config
    if cfg.net.kind != "diffusers":
        raise ValueError(f"{run} has a fewstep {cfg.net.kind} network, not a diffusers one: only runs distilled "
                         "from a diffusers teacher (--teacher diffusers:DIR) export to diffusers")
    net = next(iter(model.nets.values()))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net.net.save_pretrained(str(out / "model"), safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / SCHEDULER_FILE).write_text(json.dumps(scheduler_config(cfg.process,
                                                                                cfg.net.parametrization), indent=2))
    k = model.trained_steps
    if k is not None:
        n = cfg.process.train_timesteps
        steps = [round(n * (1 - i / k)) - 1 for i in range(k)]
        info = {"steps": k, "timesteps": steps, "eta": getattr(cfg.method, "eta", None),
                "sampler": "fewstep's k-step student sampler on these timesteps then t = 0 (alpha-bar = 1)"}
        (out / STUDENT_FILE).write_text(json.dumps(info, indent=2))
    return out
