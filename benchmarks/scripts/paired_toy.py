"""Few-step students vs the teacher at N NFE on the *same* reference sets: paired differences on a toy suite.

The bench's energy distance of one 4,096-sample set has a standard deviation of ~0.001 on gmm8d, so near the noise
floor a mean over 8 sets (SE ~0.0004) cannot tell a student from the teacher at 64 NFE; this script uses more.
Every model here is scored on the same R reference sets (repeat r: the bench's generator ``seeded(seed, r, 3)``
and reference set r, so the first 8 sets reproduce the bench's cells) and, besides each mean ± SE, the paired
difference model − reference model is reported with its SE over the R sets (which removes the noise the two
share, if any), and each student's acceleration (``benchmarks.md``) against the teacher's curve over the
``--teacher-nfe`` values measured on the same R sets.

    python benchmarks/scripts/paired_toy.py --dataset gmm8d --teacher oracle --teacher-nfe 8,16,64,256,1024 \\
        --sampler ddim --students RUN_A,RUN_B --repeats 32 [--json OUT.jsonl]

``--teacher`` is ``oracle`` (the exact GMM denoiser, gmm8d only) or a trained teacher run folder; the reference
of the paired differences is the teacher at ``--reference-nfe`` (one of ``--teacher-nfe``). Students are
distillation run folders, each sampled with its own number of steps (from its config).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from fewstep.bench.report import acceleration
from fewstep.bench.suites import make_eval
from fewstep.build.datasets import data_shape
from fewstep.build.runs import load_trained
from fewstep.data.source import seeded
from fewstep.samplers import sample, uniform_grid


def teacher_fn(teacher: str, dataset: str, sampler: str, nfe: int):
    """(n, generator) -> samples of the teacher (``oracle`` or a run folder) with ``sampler`` at ``nfe`` steps."""
    if teacher == "oracle":
        if dataset != "gmm8d":
            raise ValueError("the exact oracle exists only for gmm8d")
        from fewstep.data.toys import GMMOracle, make_gmm8d
        from fewstep.presets import get_preset
        from fewstep.processes.gaussian import GaussianProcess
        from fewstep.schedules import get_schedule

        schedule = get_schedule(get_preset("gmm8d").process.schedule)
        oracle, process = GMMOracle(make_gmm8d(), schedule), GaussianProcess(schedule)
        return lambda n, g: sample(oracle, process, (n, 8), sampler=sampler, grid=uniform_grid(nfe), generator=g)
    _, method, nets = load_trained(teacher)
    shape = data_shape(dataset)
    return lambda n, g: method.generate(n, steps=nfe, nets=nets, generator=g, sampler=sampler, shape=shape)


def student_fn(run: str, dataset: str):
    cfg, method, nets = load_trained(run)
    steps = int(cfg.method.steps)
    shape = data_shape(dataset)
    return steps, (lambda n, g: method.generate(n, steps=steps, nets=nets, generator=g, shape=shape))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="gmm8d")
    ap.add_argument("--teacher", default="oracle", help="'oracle' or a trained teacher run folder")
    ap.add_argument("--teacher-nfe", default="8,16,64,256,1024", help="the teacher's curve")
    ap.add_argument("--reference-nfe", type=int, default=64, help="teacher NFE the paired differences refer to")
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--students", required=True, help="comma-separated distillation run folders")
    ap.add_argument("--repeats", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append one JSON line per model here")
    args = ap.parse_args()
    ev = make_eval(args.dataset)
    nfes = [int(n) for n in args.teacher_nfe.split(",")]
    models = [(f"teacher@{nfe} ({args.sampler})", teacher_fn(args.teacher, args.dataset, args.sampler, nfe))
              for nfe in nfes]
    if args.reference_nfe not in nfes:
        raise ValueError(f"--reference-nfe {args.reference_nfe} is not one of --teacher-nfe {nfes}")
    ref_name, n_teacher, steps_of = models[nfes.index(args.reference_nfe)][0], len(models), {}
    for run in args.students.split(","):
        steps, fn = student_fn(run, args.dataset)
        models.append((f"{run} ({steps} steps)", fn))
        steps_of[models[-1][0]] = steps
    values: dict[str, torch.Tensor] = {}
    for name, fn in models:
        vals = [ev.evaluate(fn(ev.n_samples, seeded(args.seed, r, 3)), r, args.seed)[ev.primary]
                for r in range(args.repeats)]
        values[name] = torch.tensor(vals, dtype=torch.float64)
    ref = values[ref_name]
    root = math.sqrt(args.repeats)
    curve = sorted((nfe, float(values[name].mean()), float(values[name].std() / root), args.sampler)
                   for nfe, (name, _) in zip(nfes, models[:n_teacher], strict=True))
    for name, v in values.items():
        d = v - ref
        line = {"dataset": args.dataset, "teacher": args.teacher, "model": name, "metric": ev.primary,
                "repeats": args.repeats, "mean": float(v.mean()), "se": float(v.std() / root),
                "mean_first8": float(v[:8].mean()), "reference": ref_name, "paired_diff": float(d.mean()),
                "paired_diff_se": float(d.std() / root)}
        accel = ""
        if name in steps_of:
            line["acceleration"] = acceleration(curve, line["mean"], line["se"], steps_of[name],
                                                lower_is_better=ev.lower_is_better(ev.primary))[1]
            accel = f" | acceleration {line['acceleration']}"
        print(f"{name:70s} {ev.primary} {line['mean']:+.5f} ± {line['se']:.5f} (first 8: {line['mean_first8']:+.5f})"
              f" | − {ref_name}: {line['paired_diff']:+.5f} ± {line['paired_diff_se']:.5f}{accel}", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
