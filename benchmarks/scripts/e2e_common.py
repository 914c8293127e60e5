"""Shared pieces of the pretrained-teacher end-to-end scripts (``diffusers_digits.py``, ``mdlm_hmm.py``): the
``train`` / ``eval`` command line and the student runs' recorded training time."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse(train: dict, evaluate: dict) -> argparse.Namespace:
    """``train --out DIR [--KEY V ...]`` / ``eval --teacher DIR [--students RUN ...] --out FILE [--KEY V ...]``; the
    dicts give each further option's default (its type too)."""
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--teacher", required=True)
    e.add_argument("--students", nargs="*", default=[])
    e.add_argument("--out", required=True)
    for parser, options in ((t, train), (e, evaluate)):
        for key, default in options.items():
            parser.add_argument("--" + key.replace("_", "-"), type=type(default), default=default)
    return p.parse_args()


def train_seconds(run: str | Path) -> float | None:
    """Training seconds of a run, from the last ``train`` event of its ``log.jsonl``."""
    log = Path(run) / "log.jsonl"
    if not log.is_file():
        return None
    trains = [json.loads(line) for line in log.read_text().splitlines() if '"train"' in line]
    return trains[-1]["train_seconds"] if trains else None


def append_rows(rows: list[dict], out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def save_train_info(out: str | Path, a: argparse.Namespace, seconds: float) -> None:
    """``train_info.json`` beside a trained teacher: its settings, seconds and the command that made it."""
    info = {"iters": a.iters, "batch": a.batch, "lr": a.lr, "train_seconds": seconds, "command": " ".join(sys.argv)}
    (Path(out) / "train_info.json").write_text(json.dumps(info, indent=2))


def row_base(suite: str, dataset: str, process: str, n: int) -> dict:
    """The fields every results row of these scripts shares (commit, date, machine, threads; a plain command)."""
    import torch

    from fewstep.bench.runner import _cpu_name, git_sha

    return {"suite": suite, "device": "cpu", "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d"),
            "host_cpu": _cpu_name(), "threads": torch.get_num_threads(), "dataset": dataset, "process": process,
            "n_samples": n, "options": {}}
