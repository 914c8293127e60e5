"""``fewstep export``: a run's network in another library's format (today: diffusers, for runs whose network is a
diffusers model, i.e. students distilled from ``--teacher diffusers:DIR``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass(frozen=True)
class ExportArgs:
    """Write a run's network as a diffusers folder: OUT/model (save_pretrained, safetensors), OUT/scheduler (a DDIM
    scheduler on the teacher's betas, trailing timesteps) and, for a student, OUT/fewstep_student.json (its k, its
    diffusers timesteps and eta)."""

    run: tyro.conf.Positional[str]
    """Run folder (a student distilled from a diffusers teacher)."""
    format: Literal["diffusers"] = "diffusers"
    out: str | None = None
    """Output folder (default RUN/export-diffusers)."""
    ema: bool = True
    """Export the EMA weights."""


def cmd_export(argv: list[str]) -> int:
    from fewstep.build.export import export_diffusers

    a = tyro.cli(ExportArgs, args=argv, prog="fewstep export")
    out = Path(a.out) if a.out else Path(a.run) / "export-diffusers"
    try:
        export_diffusers(a.run, out, ema=a.ema)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"exported {a.run} -> {out} (load: UNet2DModel.from_pretrained('{out / 'model'}') or the class in its "
          "config.json)")
    return 0
