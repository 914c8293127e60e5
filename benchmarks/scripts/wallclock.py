"""Wall clock of few-step students vs their teacher on one device: samples/s and training time.

For each (teacher run, student run) pair, times the student's own k-step sampler and the teacher's ancestral
sampler at ``--teacher-nfe`` (default 1024) drawing ``--n`` samples, ``--reps`` times after one warm-up draw
(median), on the same device with the same thread count, and reads both runs' training seconds from their
logs. Run it on an otherwise idle machine. Prints a Markdown table and appends JSON lines to ``--jsonl``.

    .venv/bin/python benchmarks/scripts/wallclock.py --pair bench_out/toy/runs/gmm8d-teacher \\
        bench_out/toy/runs/gmm8d-teacher-mm-alternating-k8 --jsonl benchmarks/results/mm-wallclock.jsonl
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fewstep.bench.runner import device_name, git_sha
from fewstep.build.datasets import data_shape
from fewstep.build.runs import load_trained
from fewstep.data.source import seeded


def train_seconds(run: Path) -> float:
    """The last ``train_seconds`` in a run's log.jsonl (the whole run, resumes included)."""
    secs = [json.loads(line).get("train_seconds") for line in (run / "log.jsonl").read_text().splitlines()]
    return float([s for s in secs if s is not None][-1])


def time_draw(draw, reps: int) -> float:
    draw(seeded(0, 0, 99))  # warm-up
    out = []
    for r in range(reps):
        t0 = time.perf_counter()
        draw(seeded(0, r, 98))
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, action="append", required=True, metavar=("TEACHER_RUN", "STUDENT_RUN"))
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--teacher-nfe", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jsonl", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"device {device_name(dev)}, {torch.get_num_threads()} threads, n = {args.n}")
    print("| dataset | model | NFE | samples/s | seconds per draw | train seconds |")
    print("|---|---|---|---|---|---|")
    for teacher_run, student_run in args.pair:
        measure_pair(Path(teacher_run), Path(student_run), args, dev)


def measure_pair(teacher_run: Path, student_run: Path, args: argparse.Namespace, dev: torch.device) -> None:
    """Time the teacher at ``args.teacher_nfe`` and the student at its k; print (and append) one row each."""
    tcfg, teacher, tnets = load_trained(teacher_run, device=str(dev))
    scfg, student, snets = load_trained(student_run, device=str(dev))
    shape, k = data_shape(tcfg.data.name), student.k

    def draw_teacher(g: torch.Generator) -> torch.Tensor:
        return teacher.generate(args.n, steps=args.teacher_nfe, nets=tnets, generator=g, sampler="ancestral",
                                shape=shape, device=dev)

    def draw_student(g: torch.Generator) -> torch.Tensor:
        return student.generate(args.n, steps=k, nets=snets, generator=g, shape=shape, device=dev)

    for name, nfe, run, draw in (("teacher ancestral", args.teacher_nfe, teacher_run, draw_teacher),
                                 (f"student {scfg.method.mode} k={k}", k, student_run, draw_student)):
        secs = time_draw(draw, args.reps)
        tsec = train_seconds(run)
        print(f"| {tcfg.data.name} | {name} | {nfe} | {args.n / secs:.4g} | {secs:.3g} | {tsec:.0f} |")
        if args.jsonl:
            rec = {"dataset": tcfg.data.name, "model": name, "run": str(run), "nfe": nfe, "n": args.n,
                   "seconds": secs, "samples_per_second": args.n / secs, "train_seconds": tsec,
                   "device": device_name(dev), "threads": torch.get_num_threads(), "host": platform.node(),
                   "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d")}
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")

if __name__ == "__main__":
    main()
