"""``fewstep bench`` and ``fewstep report``: run a benchmark suite; re-derive its report."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import tyro

from fewstep.cli.common import parse_pairs, parse_steps
from fewstep.config import DataCfg

_NO_DATA = DataCfg(name="vectors")


@dataclass(frozen=True)
class BenchArgs:
    """Run a benchmark suite (docs/benchmarks.md)."""

    suite: tyro.conf.Positional[Literal["toy", "digits", "mnist", "text-hmm", "grid2d", "text-char", "data",
                                                  "mnist14"]]
    """Suite name (``data``: your own data, --data.name / --data.root; ``fewstep bench speed --help``: the speed
    ratios)."""
    methods: str = "teacher,oracle"
    steps: str = "1,2,4,8"
    """Steps of few-step methods."""
    teacher_nfe: str = "1,2,4,8,16,64,256,1024"
    samplers: str = "ancestral,ddim"
    quick: bool = False
    """Tiny training and sampling: exercises the pipeline; numbers are meaningless."""
    device: str = "auto"
    out: str = "bench_out"
    seed: int = 0
    repeats: int = 8
    min_repeats: int = 2
    """Fewest repeats at high NFE (discrete suites with --repeats 1: in-sample standard errors)."""
    datasets: str | None = None
    """Comma-separated subset of the suite's datasets."""
    runs_dir: str | None = None
    teacher_preset: str | None = None
    """Override teacher presets, e.g. 'digits8x8=digits-unet' (comma-separated dataset=preset pairs; discrete
    suites: 'hmm-v32-l64/masked=PRESET')."""
    train_scale: float = 1.0
    """Multiply the teacher presets' training length."""
    distill_scale: float | None = None
    """Multiply the distillations' length (default: --train-scale)."""
    imm_scale: float | None = None
    """Multiply IMM's training length (default: --train-scale)."""
    distill_set: str | None = None
    """MM option overrides for the distilled students, e.g. 'renoise=fresh' or 'weighting=flat,aux_lr=3e-4'
    (comma-separated field=value; values are JSON or bare words). The run folders are named after them."""
    imm_set: str | None = None
    """IMM option overrides, e.g. 'group_size=8' or 'kernel=rbf,k=10' (comma-separated field=value); the run
    folders are named after them."""
    distill_teachers: str = "trained,oracle"
    """Teachers of the distilled students: the trained teacher and/or (gmm8d only) the exact oracle."""
    distill_seed: int | None = None
    """Training seed of the distilled students (default: the config's)."""
    n_samples: int | None = None
    """Generated samples per repeat (default: the suite's)."""
    processes: str = "masked,uniform"
    """Discrete suites: noise processes whose teachers are trained and sampled."""
    discrete_samplers: str = "ancestral"
    """Discrete suites: teacher samplers (ancestral, greedy)."""
    max_row_evals: int = 1_000_000
    """Discrete suites: cap on network row evaluations per uncached configuration (fewer samples at high NFE)."""
    data: DataCfg = field(default_factory=lambda: _NO_DATA)
    """Suite ``data``: your data source (--data.name images|vectors|gmm|tokens --data.root PATH; docs/data.md).
    Generated suites (text-hmm, grid2d): settings of their source, e.g. --data.seed 3 (run as suite ``data`` on
    the changed source, with the suite's own teacher presets)."""
    student_kernel: Literal["duo", "sample-x"] | None = None
    """Discrete suites: sample the distilled students (uniform process) with this kernel instead of the one
    their run records (sampling only: the same trained students; recorded in every row's ``options``)."""


@dataclass(frozen=True)
class SpeedArgs:
    """fewstep bench speed: samplers, masked sampling, the training step and the student's speed-up as ratios
    against hand-written limits (interleaved arms; docs in fewstep.bench.speed). One CPU thread."""

    out: str = "bench_out/speed"
    repeats: int = 7
    """Interleaved repetitions per ratio (at least 2)."""
    quick: bool = False
    """Tiny sizes: exercises every arm; numbers are meaningless."""
    sections: str = "samplers,masked,trainer,distill,speedup"
    whole_process: bool = True
    """Time whole 'fewstep sample' processes too (minutes: the teacher at 1,024 NFE on 4,096 samples)."""


def cmd_speed(argv: list[str]) -> int:
    from fewstep.bench.speed import SpeedOptions, run_speed

    a = tyro.cli(SpeedArgs, args=argv, prog="fewstep bench speed")
    sections = tuple(x for x in a.sections.split(",") if x)
    known = SpeedOptions().sections
    if a.repeats < 2 or not sections or any(x not in known for x in sections):
        raise SystemExit(f"error: --repeats must be >= 2 and --sections a comma-separated subset of {','.join(known)}")
    run_speed(SpeedOptions(out=a.out, repeats=a.repeats, quick=a.quick, whole_process=a.whole_process,
                           sections=sections, command="fewstep bench speed " + shlex.join(argv)))
    return 0


def cmd_bench(argv: list[str]) -> int:
    from fewstep.bench.runner import BenchOptions, run_bench, with_defaults

    if argv and argv[0] == "speed":
        return cmd_speed(argv[1:])
    a = tyro.cli(BenchArgs, args=argv, prog="fewstep bench")
    suite, data, presets = a.suite, a.data if a.suite == "data" else None, parse_pairs(a.teacher_preset)
    overrides = {f.name: getattr(a.data, f.name) for f in fields(DataCfg)
                 if getattr(a.data, f.name) != getattr(_NO_DATA, f.name)}
    if a.suite != "data" and overrides:
        from fewstep.bench.suites import suite_on_data

        try:
            data, suite_presets = suite_on_data(a.suite, overrides)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        suite, presets = "data", (*suite_presets, *presets)
    opts = BenchOptions(
        suite=suite, methods=tuple(m for m in a.methods.split(",") if m), steps=parse_steps(a.steps),
        teacher_nfe=parse_steps(a.teacher_nfe), samplers=tuple(a.samplers.split(",")), quick=a.quick,
        device=a.device, out=a.out, seed=a.seed, repeats=a.repeats, min_repeats=min(a.min_repeats, a.repeats),
        datasets=tuple(a.datasets.split(",")) if a.datasets else None, runs_dir=a.runs_dir,
        teacher_presets=presets, train_scale=a.train_scale, distill_scale=a.distill_scale,
        imm_scale=a.imm_scale,
        distill_set=parse_pairs(a.distill_set, "field=value"), imm_set=parse_pairs(a.imm_set, "field=value"),
        distill_seed=a.distill_seed,
        distill_teachers=tuple(t for t in a.distill_teachers.split(",") if t), n_samples=a.n_samples,
        processes=tuple(p for p in a.processes.split(",") if p),
        discrete_samplers=tuple(p for p in a.discrete_samplers.split(",") if p), max_row_evals=a.max_row_evals,
        student_kernel=a.student_kernel, data=data,
        command="fewstep bench " + shlex.join(argv))
    try:
        run_bench(with_defaults(opts))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


@dataclass(frozen=True)
class ReportArgs:
    """Re-derive report.md and the quality-vs-NFE figures from a results.jsonl (e.g. benchmarks/results/)."""

    results: str
    """A results.jsonl written by 'fewstep bench'."""
    out: str
    """Output folder for report.md and figures."""


def cmd_report(argv: list[str]) -> int:
    from fewstep.bench.report import write_report

    a = tyro.cli(ReportArgs, args=argv, prog="fewstep report")
    path = Path(a.results)
    if not path.exists():
        raise SystemExit(f"error: no results file at {path}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    Path(a.out).mkdir(parents=True, exist_ok=True)
    print(write_report(rows, Path(a.out), command=rows[0].get("command", "") if rows else ""))
    return 0
