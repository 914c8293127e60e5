"""Runs a benchmark suite: trains (or resumes) the models, samples every (method, sampler, steps) with fixed
evaluation seeds, computes the suite's metrics against fresh reference data and writes ``results.jsonl``
rows in the schema of docs/benchmarks.md, sample figures, ``quality_vs_nfe_<dataset>.png`` and ``report.md``.

Methods plug in through ``PROVIDERS``: a provider yields ``ModelEntry`` objects (one per sampler and step
count) for a dataset; later methods (MM, IMM) register their own providers here.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from fewstep.bench.context import PROVIDERS, BenchContext, BenchOptions, ModelEntry
from fewstep.bench.suites import SUITES, DatasetEval, make_eval
from fewstep.config import to_dict
from fewstep.data.source import seeded


def git_sha() -> str:
    """HEAD of the repository holding this code, '-dirty' appended when it has uncommitted changes."""
    if os.environ.get("FEWSTEP_GIT_SHA"):  # copies of the tree without .git (e.g. a remote GPU machine)
        return os.environ["FEWSTEP_GIT_SHA"]
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        out = sha.stdout.strip() or "unknown"
        return out + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "cpu"


MODEL_OPTIONS = ("quick", "teacher_presets", "train_scale", "distill_scale", "imm_scale", "distill_set", "imm_set",
                 "distill_seed", "evaluator_steps", "student_kernel", "data")
"""The bench options that change a trained model or its metric (not just which rows are measured or how many
samples): every results row records those set away from their defaults in its ``options`` field."""


def options_record(opts: BenchOptions) -> dict:
    """``{option: value}`` of the ``MODEL_OPTIONS`` that differ from ``BenchOptions``' defaults (JSON-able);
    ``{}`` for a plain command, so a table can be filtered to what a user gets without flags."""
    default = BenchOptions(suite=opts.suite)
    out = {}
    for name in MODEL_OPTIONS:
        value = getattr(opts, name)
        if value != getattr(default, name):
            if name == "data":
                value = {k: v for k, v in to_dict(value).items() if k in ("name", "root", "digest", "length",
                                                                          "standardize", "resize", "seed")}
            out[name] = dict(value) if name in ("distill_set", "imm_set", "teacher_presets") else value
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def repeats_for(opts: BenchOptions, nfe: int) -> int:
    if opts.quick:
        return 1
    return int(max(opts.min_repeats, min(opts.repeats, opts.repeat_budget // max(nfe, 1))))


def _aggregate(per_repeat: list[dict[str, float]]) -> dict[str, tuple[float, float | None]]:
    """Mean and standard error over repeats; with a single repeat, the evaluator's in-sample ``<metric>__se``."""
    out = {}
    for k in per_repeat[0]:
        if k.endswith("__se"):
            continue
        vals = torch.tensor([d[k] for d in per_repeat], dtype=torch.float64)
        se = float(vals.std() / math.sqrt(len(vals))) if len(vals) > 1 else per_repeat[0].get(k + "__se")
        out[k] = (float(vals.mean()), se)
    return out


def _rows(ev: DatasetEval, base: dict, agg: dict[str, tuple[float, float | None]]) -> list[dict]:
    return [{**base, "metric": k, "value": v, "stderr": se, "lower_is_better": ev.lower_is_better(k)}
            for k, (v, se) in agg.items()]


def evaluate_entry(ev: DatasetEval, entry: ModelEntry, ctx: BenchContext, base: dict,
                   figure_dir: Path | None) -> list[dict]:
    """Sample ``entry`` over its repeats, compute metrics, return schema rows (and save a sample figure)."""
    opts = ctx.options
    reps = repeats_for(opts, entry.nfe)
    n = entry.n_samples or ev.n_samples
    per, secs = [], 0.0
    for r in range(reps):
        gen = seeded(opts.seed, r, 3)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = entry.generate(n, gen)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        secs += time.perf_counter() - t0
        x = x.detach().cpu()
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"{entry.method}/{entry.sampler}@{entry.steps} produced non-finite samples")
        per.append(ev.evaluate(x, r, opts.seed))
        if r == 0 and figure_dir is not None:
            from fewstep.bench.plots import save_samples

            label = f"{entry.method}-{entry.teacher}" if entry.teacher else f"{entry.method}-{entry.sampler}"
            if entry.process != "gaussian":
                label = f"{entry.method}-{entry.process}-{entry.sampler}"
            path = figure_dir / f"samples_{ev.name}_{label}_{entry.steps}.png"
            title = f"{ev.name}: {label}, {entry.steps} steps"
            if hasattr(ev, "save_samples"):
                ev.save_samples(x, path, title)
            else:
                save_samples(x, path, title=title)
    row = {**base, "method": entry.method, "process": entry.process, "teacher": entry.teacher,
           "steps": entry.steps, "sampler": entry.sampler, "nfe": entry.nfe, "n_samples": n * reps,
           "repeats": reps, "train_seconds": entry.train_seconds, "sample_seconds": secs,
           "samples_per_second": n * reps / secs if secs > 0 else None, **getattr(ev, "row_extra", {}),
           **entry.extra}
    return _rows(ev, row, _aggregate(per))


def data_rows(ev: DatasetEval, ctx: BenchContext, base: dict) -> list[dict]:
    """Noise-floor rows: fresh true samples evaluated like a model."""
    reps = 1 if ctx.options.quick else ctx.options.repeats
    per = [ev.evaluate(ev.data_samples(ev.n_samples, r, ctx.options.seed), r, ctx.options.seed)
           for r in range(reps)]
    row = {**base, "method": "data", "process": getattr(ev, "process", "gaussian"), "teacher": None, "steps": 0,
           "sampler": "data", "nfe": 0, "n_samples": ev.n_samples * reps, "repeats": reps, "train_seconds": None,
           "sample_seconds": 0.0, **getattr(ev, "row_extra", {})}
    return _rows(ev, row, _aggregate(per))


def run_bench(opts: BenchOptions, *, log: Callable[[str], None] = print) -> list[dict]:
    """Run a suite end to end; returns all rows (also written to OUT/results.jsonl)."""
    import fewstep.bench.providers  # noqa: F401  (registers the built-in providers)
    import fewstep.bench.providers_distill_discrete  # noqa: F401  (idlm, idlm-latent, dmmd)
    import fewstep.bench.providers_imm  # noqa: F401  (imm)
    import fewstep.bench.providers_mm  # noqa: F401  (mm-alternating, mm-instant)
    from fewstep.bench.report import write_report
    from fewstep.build.device import resolve_device

    if opts.suite not in SUITES:
        raise ValueError(f"unknown suite {opts.suite!r}; choose one of {sorted(SUITES)}")
    unknown = [m for m in opts.methods if m not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(PROVIDERS)}")
    if not opts.distill_teachers or set(opts.distill_teachers) - {"trained", "oracle"}:
        raise ValueError(f"distill teachers must be 'trained' and/or 'oracle', got {opts.distill_teachers}")
    datasets = opts.datasets or SUITES[opts.suite]
    bad = [d for d in datasets if d not in SUITES[opts.suite]]
    if bad:
        raise ValueError(f"datasets {bad} are not in suite {opts.suite!r} ({SUITES[opts.suite]})")
    if opts.suite == "data":
        if opts.data is None or (opts.data.root is None and opts.data.name not in ("text-hmm", "grid2d")):
            raise ValueError("suite data needs --data.name NAME --data.root PATH (your own data; docs/data.md), or "
                             "a generated source: --data.name text-hmm|grid2d with its --data.seed / ... ")
        from fewstep.build.datasets import resolve_data

        opts = replace(opts, data=resolve_data(opts.data))  # its shape, vocabulary and content hash, once
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(opts.device)
    runs_dir = Path(opts.runs_dir) if opts.runs_dir else out / "runs"
    base = {"suite": opts.suite, "seed": opts.seed, "device": device_name(device), "quick": opts.quick,
            "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d"), "host_cpu": _cpu_name(), "command": opts.command,
            "options": options_record(opts)}
    rows: list[dict] = []
    results = out / "results.jsonl"
    results.write_text("")
    for dataset in datasets:
        steps = 50 if opts.quick else opts.evaluator_steps
        n = _quick_n(dataset) if opts.quick else opts.n_samples
        if dataset == "data":
            from fewstep.bench.suites_user import make_data_eval

            ev = make_data_eval(opts.data, n_samples=n, **({"evaluator_steps": steps} if steps else {}))
        else:
            ev = make_eval(dataset, n_samples=n, **({"evaluator_steps": steps} if steps else {}))
        ctx = BenchContext(options=opts, dataset=dataset, device=device, runs_dir=runs_dir,
                           cache={"eval_n": ev.n_samples})
        new = data_rows(ev, ctx, {**base, "dataset": dataset})
        _append(results, new)
        for method in opts.methods:
            for entry in PROVIDERS[method](ctx):
                t0 = time.perf_counter()
                got = evaluate_entry(ev, entry, ctx, {**base, "dataset": dataset}, out)
                _append(results, got)  # row by row: an interrupted run keeps what it measured
                new += got
                prim = [r for r in got if r["metric"] == ev.primary][-1]
                log(f"[bench] {dataset} {entry.method}/{entry.sampler} steps={entry.steps} nfe={entry.nfe}: "
                    f"{ev.primary}={prim['value']:.5f} ({time.perf_counter() - t0:.1f}s)")
        rows += new
    write_report(rows, out, command=opts.command)
    log(f"[bench] wrote {results}, {out / 'report.md'} and figures in {out}")
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _quick_n(dataset: str) -> int:
    return {"digits8x8": 256, "mnist14": 256, "hmm-v32-l64": 256, "tinyshakespeare-l128": 32,
            "grid2d": 2000}.get(dataset, 1024)


def with_defaults(opts: BenchOptions) -> BenchOptions:
    """Shrink step lists for --quick."""
    if not opts.quick:
        return opts
    return replace(opts, teacher_nfe=tuple(n for n in opts.teacher_nfe if n <= 16) or (1,))
