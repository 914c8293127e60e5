"""``fewstep train``: train (or resume) a teacher or from-scratch run from a preset or a config."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import tyro

from fewstep.cli.common import finite_json, jsonable


def cmd_train(argv: list[str]) -> int:
    from fewstep.config import METHOD_CFGS, RunConfig, load_config, to_dict
    from fewstep.presets import PRESETS, get_preset

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--config", default=None)
    pre.add_argument("--dry-run", action="store_true")
    pre.add_argument("--allow-config-change", action="store_true")
    pre.add_argument("--method", default=None, choices=sorted(METHOD_CFGS))
    known, rest = pre.parse_known_args(argv)
    if known.preset and known.config:
        raise SystemExit("error: pass either --preset or --config, not both")
    try:
        base = load_config(known.config) if known.config else get_preset(known.preset or "toy2d-checkerboard")
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if known.method and base.method.name != known.method:  # switch method, keep data/process/net/train
        base = replace(base, method=METHOD_CFGS[known.method]())
    desc = ("Train a model. Extra flags: --preset NAME (one of " + ", ".join(sorted(PRESETS)) +
            "), --method " + "|".join(sorted(METHOD_CFGS)) + " (default: the preset's), --config RUN/config.json, "
            "--dry-run, --allow-config-change.")
    cfg = tyro.cli(RunConfig, default=base, args=rest, prog="fewstep train", description=desc,
                   config=(tyro.conf.AvoidSubcommands,))
    from fewstep.build.models import resolve_label_dropout
    from fewstep.build.trainers import build_trainer
    from fewstep.validation import check_config

    try:
        check_config(cfg)
        cfg = resolve_label_dropout(cfg)  # the number config.json will hold
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if known.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    try:
        trainer = build_trainer(cfg, allow_config_change=known.allow_config_change)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    summary = trainer.fit()
    print(json.dumps(finite_json({"run_dir": cfg.run_dir, **{k: v for k, v in summary.items() if jsonable(v)}})))
    return 0
