"""``fewstep info`` and ``fewstep demo``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass(frozen=True)
class DemoArgs:
    """Train small models on built-in data, sample them at several step counts and write a report (the main job;
    --full: every suite)."""

    out: str = "demo_out"
    device: str = "auto"
    quick: bool = False
    """Seconds instead of minutes (for tests)."""
    full: bool = False
    """The tour of every suite (about half an hour on 2 cores) instead of the main job (a few minutes)."""


def cmd_demo(argv: list[str]) -> int:
    from fewstep.demo import run_demo

    a = tyro.cli(DemoArgs, args=argv, prog="fewstep demo")
    report = run_demo(Path(a.out), device=a.device, quick=a.quick, full=a.full)
    print(f"[demo] report: {report.resolve()}")
    return 0


def cmd_info(argv: list[str]) -> int:
    import torch

    import fewstep
    from fewstep.presets import PRESETS

    print(f"fewstep {fewstep.__version__}, torch {torch.__version__}, "
          f"cuda: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    for name, cfg in PRESETS.items():
        print(f"  preset {name:20s} data={cfg.data.name:15s} net={cfg.net.kind} nimg={cfg.train.total_nimg}")
    return 0
