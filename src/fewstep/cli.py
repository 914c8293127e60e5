"""``fewstep`` command line: train | distill | sample | eval | bench | report | demo | info.

Every command's flags come from typed dataclasses through tyro (``fewstep CMD --help``). ``train`` takes a
``--preset NAME`` (``fewstep info`` lists them) whose fields any flag overrides, ``--config RUN/config.json``
to reload a run, and ``--dry-run`` to print the resolved config and exit. Re-running the same command
resumes from the run's latest checkpoint; a changed config is refused unless ``--allow-config-change``.
``distill`` works the same way on a ``DistillConfig`` (``--method``, ``--teacher``, ``--steps`` pick its defaults).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tyro

USAGE = """usage: fewstep {train,distill,sample,eval,bench,report,demo,info} [--help]

  train   train a model from a preset (fewstep train --preset toy2d-checkerboard --dry-run)
  distill distill a teacher into a k-step student (fewstep distill --method mm-alternating --teacher RUN|oracle
          --steps 4 --dry-run)
  sample  draw samples from a trained (or distilled) run at several step counts
  eval    metrics of saved samples against a dataset
  bench   run a benchmark suite (toy, digits, mnist, text-hmm, grid2d, text-char) and write results.jsonl,
          report.md, figures
  report  re-derive report.md and figures from a results.jsonl
  demo    train small models on built-in data and write an illustrated report (~30 min on 2 CPU cores)
  info    version, presets, devices
"""


def _parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise SystemExit(f"error: steps must be comma-separated integers, got {text!r}") from e
    if not steps or min(steps) < 1:
        raise SystemExit(f"error: steps must be positive integers, got {text!r}")
    return steps


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
    from fewstep.build import build_trainer, resolve_label_dropout

    try:
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
    print(json.dumps({"run_dir": cfg.run_dir, **{k: v for k, v in summary.items() if _jsonable(v)}}))
    return 0


def _jsonable(v: object) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def cmd_distill(argv: list[str]) -> int:
    from fewstep.build import DISTILL_METHODS, distill_config, resolve_distill
    from fewstep.config import DistillConfig, load_any_config, to_dict
    from fewstep.presets import quick_distill

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--method", "--teacher", "--preset", "--config"):
        pre.add_argument(flag, default=None)
    pre.add_argument("--steps", default=None)
    for flag in ("--dry-run", "--quick", "--allow-config-change"):
        pre.add_argument(flag, action="store_true")
    known, rest = pre.parse_known_args(argv)
    steps = None
    if known.steps is not None:
        steps = _parse_steps(known.steps)
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
                raise ValueError("pass --teacher RUN_DIR (a run written by 'fewstep train') or --teacher oracle")
            base = distill_config(known.teacher, method=known.method or "mm-alternating",
                                  steps=steps[0] if steps else 4, preset=known.preset)
            if known.quick:
                base = replace(quick_distill(base), run_dir=base.run_dir + "-quick")
        else:
            base = DistillConfig()
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    desc = ("Distill a teacher into a k-step student. Extra flags: --method " + "|".join(DISTILL_METHODS) +
            " (mm-* for Gaussian teachers, idlm|dmmd for discrete ones), --teacher RUN_DIR|oracle, --steps K, "
            "--preset NAME (oracle only; default gmm8d), --config "
            "RUN/config.json, --quick (seconds; numbers meaningless), --dry-run, --allow-config-change. "
            "Re-running the same command resumes.")
    cfg = tyro.cli(DistillConfig, default=base, args=rest, prog="fewstep distill", description=desc,
                   config=(tyro.conf.AvoidSubcommands,))
    try:
        cfg = resolve_distill(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if known.dry_run:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from fewstep.build import build_distillation
    from fewstep.train.trainer import ConfigMismatchError

    try:
        trainer = build_distillation(cfg, allow_config_change=known.allow_config_change)
    except (ValueError, FileNotFoundError, RuntimeError, TypeError) as e:
        raise SystemExit(f"error: {e}") from None
    try:
        summary = trainer.fit()
    except ConfigMismatchError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps({"run_dir": cfg.run_dir, **{k: v for k, v in summary.items() if _jsonable(v)}}))
    return 0


@dataclass(frozen=True)
class SampleArgs:
    """Draw samples from a trained run; writes OUT/samples_<steps>.safetensors and .png per step count."""

    run: str
    """Run folder written by 'fewstep train'."""
    steps: str | None = None
    """Comma-separated step counts (default 1,2,4,8,16,64; for a distilled student its own k)."""
    sampler: Literal["ancestral", "ddim", "euler", "heun", "pushforward", "restart", "greedy"] | None = None
    """Teacher samplers (default ancestral) or IMM's pushforward / restart (default: the run's); discrete
    teachers: ancestral or greedy (greedy last step)."""
    grid: Literal["uniform", "edm", "logsnr"] = "uniform"
    n: int = 1024
    """Samples per step count."""
    seed: int = 0
    out: str | None = None
    """Output folder (default RUN/samples)."""
    device: str = "auto"
    ema: bool = True
    """Use the EMA weights."""
    checkpoint: str | None = None
    """An older checkpoint of the run to sample (a folder name under RUN/checkpoints, e.g. nimg_000192000)."""
    temperature: float = 1.0
    """Discrete runs (teachers and students): sampling temperature of the denoiser (> 1: more entropy)."""
    guidance: float | None = None
    """IMM runs of a class-conditional model trained with label dropout: classifier-free guidance scale w of the
    network output; samples then get the balanced labels i mod num_classes."""


def cmd_sample(argv: list[str]) -> int:
    import time

    import torch
    from safetensors.torch import save_file

    from fewstep.bench.plots import save_samples
    from fewstep.build import data_shape, load_trained, resolve_device
    from fewstep.data.source import seeded

    a = tyro.cli(SampleArgs, args=argv, prog="fewstep sample")
    device = resolve_device(a.device)
    try:
        cfg, method, nets = load_trained(a.run, ema=a.ema, device=str(device), checkpoint=a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    from fewstep.build_discrete import is_token_data

    if not (a.temperature > 0 and a.temperature < float("inf")):
        raise SystemExit(f"error: --temperature must be a positive finite number, got {a.temperature}")
    if is_token_data(cfg.data):
        if a.guidance is not None:
            raise SystemExit("error: --guidance applies to IMM runs only")
        return _sample_tokens(a, cfg, method, nets, device)
    if a.temperature != 1.0:
        raise SystemExit("error: --temperature applies to discrete runs (token data) only")
    student_k = getattr(method, "k", None) if getattr(method, "sampler", None) == "student" else None
    steps = _parse_steps(a.steps or (str(student_k) if student_k else "1,2,4,8,16,64"))
    imm_samplers = ("pushforward", "restart")
    imm = getattr(method, "sampler", None) in imm_samplers
    sampler = "student" if student_k else a.sampler or (method.sampler if imm else "ancestral")
    if imm != (sampler in imm_samplers) and not student_k:
        kinds = "IMM: pushforward or restart" if imm else "a diffusion teacher: ancestral, ddim, ..."
        raise SystemExit(f"error: sampler {sampler!r} does not apply to this run ({kinds})")
    if student_k and any(k != student_k for k in steps):
        print(f"note: this student was distilled for {student_k} steps; other step counts run its sampler on a "
              "grid it was not trained for", file=sys.stderr)
    guide: dict = {}
    if a.guidance is not None:
        if not imm:
            raise SystemExit("error: --guidance applies to IMM runs (a distilled student's guidance is set when "
                             "distilling: --method.guidance)")
        try:
            method.check_guidance()
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        labels = torch.arange(a.n, device=device) % method.num_classes
        guide = {"guidance": a.guidance, "cond": labels}
    out = Path(a.out) if a.out else Path(a.run) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for k in steps:
        t0 = time.perf_counter()
        x = method.generate(a.n, steps=k, nets=nets, generator=seeded(a.seed, k), sampler=sampler,
                            grid=a.grid, shape=data_shape(cfg.data.name), device=device, **guide)
        dt = time.perf_counter() - t0
        path = out / f"samples_{k}.safetensors"
        tensors = {"x": x.float().cpu().contiguous()}
        meta = {"steps": str(k), "sampler": sampler, "seed": str(a.seed), "run": a.run}
        if guide:
            tensors["label"] = guide["cond"].cpu().contiguous()
            meta["guidance"] = str(a.guidance)
        save_file(tensors, str(path), metadata=meta)
        save_samples(x.cpu(), out / f"samples_{k}.png", title=f"{cfg.data.name}: {sampler}, {k} steps")
        print(f"steps={k}: {a.n} samples in {dt:.2f}s -> {path}")
    return 0


def _sample_tokens(a: SampleArgs, cfg, method, nets, device) -> int:
    """``fewstep sample`` of a discrete run: int64 tokens (.safetensors) and a .txt (decoded for text-char)."""
    import time

    from safetensors.torch import save_file

    from fewstep.data.source import seeded

    sampler = a.sampler or "ancestral"
    if sampler not in ("ancestral", "greedy"):
        raise SystemExit(f"error: sampler {sampler!r} does not apply to a discrete teacher (ancestral or greedy)")
    decode = None
    if cfg.data.name == "text-char":
        from fewstep.build_discrete import char_data

        decode = char_data(cfg.data)[2].decode
    elif cfg.data.name == "text-bpe":
        from fewstep.data.text import gpt2_encoding

        enc = gpt2_encoding()

        def decode(x):
            return [enc.decode([t for t in r.tolist() if t < enc.n_vocab]) for r in x]
    out = Path(a.out) if a.out else Path(a.run) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for k in _parse_steps(a.steps or "1,4,16,64,256,1024"):
        t0 = time.perf_counter()
        x, stats = method.generate(a.n, steps=k, nets=nets, generator=seeded(a.seed, k),
                                   final="greedy" if sampler == "greedy" else "ancestral", device=device,
                                   return_stats=True, temperature=a.temperature)
        dt = time.perf_counter() - t0
        path = out / f"samples_{k}.safetensors"
        save_file({"x": x.cpu().contiguous()}, str(path),
                  metadata={"steps": str(k), "sampler": sampler, "seed": str(a.seed), "run": a.run,
                            "nfe_spent": str(stats["nfe"]), "temperature": str(a.temperature)})
        rows = decode(x[:32]) if decode else [" ".join(map(str, r.tolist())) for r in x[:32]]
        (out / f"samples_{k}.txt").write_text("\n\n".join(rows) + "\n")
        print(f"steps={k}: {a.n} samples in {dt:.2f}s ({stats['nfe']:.1f} network evaluations per sample) -> {path}")
    return 0


@dataclass(frozen=True)
class EvalArgs:
    """Metrics of saved samples (a .safetensors file with key 'x') against a benchmark dataset."""

    samples: str
    """Path to samples written by 'fewstep sample'."""
    dataset: Literal["gmm8d", "checkerboard2d", "spiral2d", "digits8x8"]
    seed: int = 0


def cmd_eval(argv: list[str]) -> int:
    from safetensors.torch import load_file

    from fewstep.bench.suites import make_eval

    a = tyro.cli(EvalArgs, args=argv, prog="fewstep eval")
    if not Path(a.samples).exists():
        raise SystemExit(f"error: no samples file at {a.samples} (write one with 'fewstep sample')")
    x = load_file(a.samples)["x"]
    ev = make_eval(a.dataset)
    if tuple(x.shape[1:]) != ev.shape:
        raise SystemExit(f"error: samples have shape {tuple(x.shape[1:])}, {a.dataset} needs {ev.shape}")
    if a.dataset != "digits8x8":
        ev.n_samples = max(x.shape[0], 2)
    print(json.dumps({"dataset": a.dataset, "n_samples": int(x.shape[0]), **ev.evaluate(x, 0, a.seed)}))
    return 0


@dataclass(frozen=True)
class BenchArgs:
    """Run a benchmark suite (spec/benchmarks.md)."""

    suite: tyro.conf.Positional[Literal["toy", "digits", "mnist", "text-hmm", "grid2d", "text-char"]]
    """Suite name."""
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
    student_kernel: Literal["duo", "sample-x"] | None = None
    """Discrete suites: sample the distilled students (uniform process) with this kernel instead of the one
    their run records (sampling only: the same trained students; recorded in every row's ``options``)."""


def cmd_bench(argv: list[str]) -> int:
    from fewstep.bench.runner import BenchOptions, run_bench, with_defaults

    a = tyro.cli(BenchArgs, args=argv, prog="fewstep bench")
    opts = BenchOptions(
        suite=a.suite, methods=tuple(m for m in a.methods.split(",") if m), steps=_parse_steps(a.steps),
        teacher_nfe=_parse_steps(a.teacher_nfe), samplers=tuple(a.samplers.split(",")), quick=a.quick,
        device=a.device, out=a.out, seed=a.seed, repeats=a.repeats, min_repeats=min(a.min_repeats, a.repeats),
        datasets=tuple(a.datasets.split(",")) if a.datasets else None, runs_dir=a.runs_dir,
        teacher_presets=_pairs(a.teacher_preset), train_scale=a.train_scale, distill_scale=a.distill_scale,
        distill_set=_pairs(a.distill_set, "field=value"), imm_set=_pairs(a.imm_set, "field=value"),
        distill_seed=a.distill_seed,
        distill_teachers=tuple(t for t in a.distill_teachers.split(",") if t), n_samples=a.n_samples,
        processes=tuple(p for p in a.processes.split(",") if p),
        discrete_samplers=tuple(p for p in a.discrete_samplers.split(",") if p), max_row_evals=a.max_row_evals,
        student_kernel=a.student_kernel, command="fewstep bench " + shlex.join(argv))
    try:
        run_bench(with_defaults(opts))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return 0


def _pairs(text: str | None, what: str = "dataset=preset") -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):  # split on commas outside brackets: t_band=[0.05,0.95],aux_every=2
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    try:
        return tuple((k, v) for k, v in (p.split("=", 1) for p in parts))
    except ValueError:
        raise SystemExit(f"error: expected {what} pairs, got {text!r}") from None


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


@dataclass(frozen=True)
class DemoArgs:
    """Train small models on built-in data, sample them at several step counts and write a report."""

    out: str = "demo_out"
    device: str = "auto"
    quick: bool = False
    """Seconds instead of minutes (for tests)."""


def cmd_demo(argv: list[str]) -> int:
    from fewstep.demo import run_demo

    a = tyro.cli(DemoArgs, args=argv, prog="fewstep demo")
    report = run_demo(Path(a.out), device=a.device, quick=a.quick)
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


COMMANDS = {"train": cmd_train, "distill": cmd_distill, "sample": cmd_sample, "eval": cmd_eval, "bench": cmd_bench,
            "report": cmd_report, "demo": cmd_demo, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    return cmd(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
