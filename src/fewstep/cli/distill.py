"""``fewstep distill``: distill a teacher into a k-step student (MM, IDLM, D-MMD)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import tyro

from fewstep.cli.common import finite_json, jsonable, parse_steps


def cmd_distill(argv: list[str]) -> int:
    from fewstep.build.distill_config import DISTILL_METHODS, distill_config, resolve_distill
    from fewstep.config import DistillConfig, load_any_config, to_dict
    from fewstep.presets import quick_distill
    from fewstep.validation import check_config

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--method", "--teacher", "--preset", "--config"):
        pre.add_argument(flag, default=None)
    pre.add_argument("--steps", default=None)
    for flag in ("--dry-run", "--quick", "--allow-config-change"):
        pre.add_argument(flag, action="store_true")
    known, rest = pre.parse_known_args(argv)
    steps = None
    if known.steps is not None:
        steps = parse_steps(known.steps)
        if len(steps) != 1:
            raise SystemExit(f"error: distill trains one student per --steps K, got {known.steps!r}")
    help_only = any(a in ("-h", "--help") for a in rest)
    try:
        if known.config:
            if known.preset or known.quick:
                raise ValueError("--preset and --quick pick the defaults of a new run; --config reloads one as saved")
            base = load_any_config(known.config)
            if not isinstance(base, DistillConfig):
                raise ValueError(f"{known.config} is not a distillation run (use 'fewstep train --config')")
            m = base.method
            if known.method:
                if known.method not in DISTILL_METHODS:
                    raise ValueError(f"unknown --method {known.method!r}; choose one of {sorted(DISTILL_METHODS)}")
                if (m.name == "mm") != known.method.startswith("mm-") or (m.name != "mm" and m.name != known.method):
                    raise ValueError(f"--method {known.method} does not match the saved run's method {m.name}")
                if m.name == "mm":
                    m = replace(m, mode=DISTILL_METHODS[known.method])
            base = replace(base, teacher=known.teacher or base.teacher,
                           method=replace(m, steps=steps[0] if steps else m.steps))
        elif known.teacher or not help_only:
            if not known.teacher:
                raise ValueError("pass --teacher RUN_DIR (a run written by 'fewstep train'), --teacher oracle, or a "
                                 "pretrained folder: --teacher diffusers:DIR | mdlm:DIR | duo:DIR")
            base = distill_config(known.teacher, method=known.method or "mm-alternating",
                                  steps=steps[0] if steps else 4, preset=known.preset)
            if known.quick:
                base = replace(quick_distill(base), run_dir=base.run_dir + "-quick")
        else:
            base = DistillConfig()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    desc = ("Distill a teacher into a k-step student. Extra flags: --method " + "|".join(DISTILL_METHODS) +
            " (mm-* for Gaussian teachers, idlm|dmmd for discrete ones), --teacher "
            "RUN_DIR|oracle|diffusers:DIR|mdlm:DIR|duo:DIR (another library's folder: pass its data with --data.*), "
            "--steps K, "
            "--preset NAME (oracle only; default gmm8d), --config "
            "RUN/config.json, --quick (seconds; numbers meaningless), --dry-run, --allow-config-change. "
            "Re-running the same command resumes.")
    cfg = tyro.cli(DistillConfig, default=base, args=rest, prog="fewstep distill", description=desc,
                   config=(tyro.conf.AvoidSubcommands,))
    try:
        check_config(cfg)
        cfg = resolve_distill(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if known.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from fewstep.build.distill import build_distillation
    from fewstep.train.trainer import ConfigMismatchError

    try:
        trainer = build_distillation(cfg, allow_config_change=known.allow_config_change)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        summary = trainer.fit()
    except ConfigMismatchError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(finite_json({"run_dir": cfg.run_dir, **{k: v for k, v in summary.items() if jsonable(v)}})))
    return 0
