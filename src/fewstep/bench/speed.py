"""``fewstep bench speed``: where users wait, as ratios against hand-written limits on the same model and batch.

Every ratio is measured with interleaved arms: each repetition runs every arm once, in turn, after one warm-up
call of each; a row's ``value`` is the mean of the per-repetition ratios and ``stderr`` its standard error, and
``seconds`` holds each arm's median. Networks keep their random initial weights (the cost of a forward does not
depend on the values). Rows (``suite: "speed"``, metric names below, ``target`` where issue 28 sets one):

- ``sampler_vs_forwards`` per sampler, model and batch (64, 4,096): the sampler / the same number of bare
  denoiser calls on a fixed input in the same 1,024-row chunks (ancestral, DDIM, Euler, Heun, the MM student's
  k-step sampler, IMM pushforward / restart on the IMM map). Targets 1.10 at 64 and 1.03 at 4,096.
  ``chunked_forward`` (batch 4,096): a forward in 1,024-row chunks / one 4,096-row forward.
- ``masked_vs_limit`` (text-hmm masked net, L = 64, K = 4L and 16L): the masked sampler / its NFE limit, the
  same row evaluations as full-batch forwards (``network_calls`` and ``nfe`` recorded). Target 1.05.
- ``trainer_vs_loop``: ``Trainer.fit`` seconds per step / a minimal loop (same method, nets, fused Adam, clipping,
  EMA; one generator, no logs or checkpoints). Target 1.03.
- ``distill_vs_teacher_step`` per method: seconds per sample of a distillation iteration / of a teacher training
  step at the same batch (both ``Trainer.fit`` runs of 30 iterations, interleaved, three repetitions).
- ``student_speedup`` (digits, 4,096 samples): teacher at 1,024 NFE / the k = 8 student, in process and as a
  whole ``fewstep sample`` process (``scope``); the NFE ratio is 128. Target (whole process) >= 60.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

BATCHES = (64, 4096)
CHUNK = 1024


@dataclass(frozen=True)
class SpeedOptions:
    """Options of ``fewstep bench speed``."""

    out: str = "bench_out/speed"
    repeats: int = 7
    quick: bool = False
    """Tiny sizes and two repetitions: exercises every arm; numbers are meaningless."""
    whole_process: bool = True
    """Also time whole ``fewstep sample`` processes (student vs teacher at 1,024 NFE)."""
    sections: tuple[str, ...] = ("samplers", "masked", "trainer", "distill", "speedup")
    command: str = ""


def interleaved(arms: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of every arm per repetition, arms run in turn within a repetition (after one warm-up call each)."""
    for fn in arms.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float | None]:
    """Mean and standard error of the per-repetition ratios num / den."""
    r = [a / b for a, b in zip(times[num], times[den])]
    se = statistics.stdev(r) / math.sqrt(len(r)) if len(r) > 1 else None
    return statistics.fmean(r), se


def _row(metric: str, value: float, stderr: float | None, *, times: dict | None = None, target: float | None = None,
         lower: bool = True, **fields) -> dict:
    row = {"metric": metric, "value": value, "stderr": stderr, "lower_is_better": lower, "target": target}
    if times is not None:
        row["seconds"] = {k: statistics.median(v) for k, v in times.items()}
    return {**fields, **row}


def _forwards(den, z: torch.Tensor, t: torch.Tensor, calls: int, chunk: int | None) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            for _ in range(calls):
                for i in range(0, z.shape[0], chunk or z.shape[0]):
                    den(z[i:i + (chunk or z.shape[0])], t[i:i + (chunk or z.shape[0])])
    return run


def sampler_rows(opts: SpeedOptions) -> list[dict]:
    """``sampler_vs_forwards`` (and ``chunked_forward``) on the gmm8d MLP and the digits U-Net."""
    from fewstep.build.models import build_denoiser, build_imm
    from fewstep.presets import get_preset
    from fewstep.samplers.gaussian import SAMPLERS

    rows = []
    for dataset, preset, imm_preset, shape in (("gmm8d", "gmm8d", "imm-gmm8d", (8,)),
                                                ("digits8x8", "digits", "imm-digits", (1, 8, 8))):
        torch.manual_seed(0)
        den = build_denoiser(get_preset(preset), shape).eval().requires_grad_(False)
        fmap = build_imm(get_preset(imm_preset), shape).fmap.eval().requires_grad_(False)
        for batch in BATCHES:
            steps = (4 if opts.quick else 16) if batch == 64 else (2 if opts.quick else 4)
            n = batch if not opts.quick else min(batch, 256)
            z = torch.randn(n, *shape)
            t = torch.full((n,), 0.5)
            s = torch.full((n,), 0.2)
            arms = _sampler_arms(den, fmap, (n, *shape), steps, z, s, t)
            reps = opts.repeats * (5 if dataset == "gmm8d" else 1)  # milliseconds per arm: more repetitions
            times = interleaved(arms, reps)
            base = {"dataset": dataset, "batch": n, "steps": steps}
            for name in (*SAMPLERS, "student", "imm_pushforward", "imm_restart"):
                nfe = 2 * steps - 1 if name == "heun" else steps
                ref = "imm_forwards" if name.startswith("imm") else f"forwards_{nfe}"
                rows.append(_row("sampler_vs_forwards", *ratio(times, name, ref), times={name: times[name],
                                 ref: times[ref]}, target=1.10 if batch == 64 else 1.03, method="sampler",
                                 sampler=name, nfe=nfe, **base))
            if n > CHUNK:
                rows.append(_row("chunked_forward", *ratio(times, f"forwards_{steps}", "forwards_unchunked"),
                                 times={k: times[k] for k in (f"forwards_{steps}", "forwards_unchunked")},
                                 method="network", sampler="forward", nfe=steps, **base))
    return rows


def _sampler_arms(den, fmap, shape: tuple[int, ...], steps: int, z: torch.Tensor, s: torch.Tensor,
                  t: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The arms of one (model, batch): bare forwards (``steps`` and 2 ``steps`` - 1 calls), every Gaussian sampler, the
    student sampler, IMM's forwards and samplers; with an unchunked forward when the batch exceeds a chunk."""
    from fewstep.samplers import gaussian as G
    from fewstep.samplers.grids import uniform_grid
    from fewstep.samplers.imm import sample_imm
    from fewstep.samplers.student import sample_student

    proc, grid = den.process, uniform_grid(steps)
    imm_grid = torch.linspace(0.994, 0.002, steps + 1, dtype=torch.float64)

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    arms: dict[str, Callable[[], object]] = {f"forwards_{k}": _forwards(den, z, t, k, CHUNK)
                                             for k in (steps, 2 * steps - 1)}
    for name in G.SAMPLERS:
        arms[name] = partial(lambda name: G.sample(den, proc, shape, grid=grid, generator=gen(), sampler=name), name)
    arms["student"] = lambda: sample_student(den, proc, shape, grid=grid, generator=gen())
    arms["imm_forwards"] = lambda: _imm_forwards(fmap, z, s, t, steps)
    for name in ("pushforward", "restart"):
        arms[f"imm_{name}"] = partial(lambda name: sample_imm(fmap, shape, grid=imm_grid, generator=gen(),
                                                              sampler=name), name)
    if shape[0] > CHUNK:
        arms["forwards_unchunked"] = _forwards(den, z, t, steps, None)
    return arms


def _imm_forwards(fmap, z: torch.Tensor, s: torch.Tensor, t: torch.Tensor, calls: int) -> None:
    with torch.no_grad():
        for _ in range(calls):
            for i in range(0, z.shape[0], CHUNK):
                fmap(z[i:i + CHUNK].double(), s[i:i + CHUNK], t[i:i + CHUNK], None)


def masked_rows(opts: SpeedOptions) -> list[dict]:
    """``masked_vs_limit`` of the masked sampler on the text-hmm teacher's network (time-free, L = 64)."""
    from fewstep.build.datasets import resolve_data
    from fewstep.build.models import build_token_denoiser
    from fewstep.presets import get_preset
    from fewstep.samplers.discrete import sample_masked
    from fewstep.samplers.grids import uniform_grid

    cfg = get_preset("hmm-mdlm")
    cfg = replace(cfg, data=resolve_data(cfg.data))
    torch.manual_seed(0)
    den = build_token_denoiser(cfg).eval().requires_grad_(False)
    length = cfg.data.length
    n = 8 if opts.quick else 256
    rows = []
    for k in ((length // 4,) if opts.quick else (4 * length, 16 * length)):
        grid = uniform_grid(k)
        _, stats = sample_masked(den, (n, length), grid=grid, generator=torch.Generator().manual_seed(0))
        row_evals = stats["row_evals"]
        z = torch.full((n, length), den.process.mask_id, dtype=torch.long)
        z[:, ::2] = 3
        t = torch.zeros(n)

        def limit(z=z, t=t, row_evals=row_evals) -> None:  # the same rows as full-batch forwards
            with torch.no_grad():
                for _ in range(row_evals // n):
                    den(z, t)
                if row_evals % n:
                    den(z[:row_evals % n], t[:row_evals % n])

        times = interleaved({"sampler": lambda grid=grid: sample_masked(
            den, (n, length), grid=grid, generator=torch.Generator().manual_seed(0)), "limit": limit}, opts.repeats)
        rows.append(_row("masked_vs_limit", *ratio(times, "sampler", "limit"), times=times, target=1.05,
                         dataset="hmm-v32-l64", method="sampler", sampler="masked", steps=k, nfe=stats["nfe"],
                         batch=n, network_calls=stats["steps_with_call"], row_evals=row_evals))
    return rows


def _minimal_loop(method, data, cfg, iters: int) -> Callable[[], None]:
    """A hand-written loop doing the Trainer's work per step: loss, backward, clipping, fused Adam, EMA."""
    from fewstep.train.ema import EMA
    from fewstep.train.optim import make_optimizer

    nets = method.trainable()
    t = cfg.train
    opts = {r: make_optimizer(net, t.optimizer, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
            for r, net in nets.items()}
    emas = {r: EMA(net, t.ema_halflife_nimg) for r, net in nets.items()}
    allnets = {**nets, **method.frozen()}
    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        for it in range(iters):
            batch = data.batch(it * t.batch_size, t.batch_size, seed=t.seed)
            for phase in method.phases():
                for r in phase.trains:
                    opts[r].zero_grad(set_to_none=True)
                method.loss(phase.name, batch, allnets, gen).loss.backward()
                for r in phase.trains:
                    torch.nn.utils.clip_grad_norm_(nets[r].parameters(), t.grad_clip)
                    opts[r].step()
                    emas[r].update(nets[r], t.batch_size, (it + 1) * t.batch_size)
    return run


def trainer_rows(opts: SpeedOptions, tmp: Path) -> list[dict]:
    """``trainer_vs_loop`` on the gmm8d and digits teacher presets."""
    from fewstep.build.datasets import build_data, resolve_data
    from fewstep.build.models import build_method
    from fewstep.build.trainers import build_trainer
    from fewstep.presets import get_preset

    rows = []
    for dataset, preset, iters in (("gmm8d", "gmm8d", 4 if opts.quick else 300),
                                   ("digits8x8", "digits", 1 if opts.quick else 40)):
        cfg = get_preset(preset)
        b = cfg.train.batch_size
        count = {"n": 0}

        def trainer(cfg=cfg, iters=iters, b=b, count=count, preset=preset) -> float:
            count["n"] += 1
            c = replace(cfg, run_dir=str(tmp / f"trainer-{preset}-{count['n']}"),
                        train=replace(cfg.train, total_nimg=iters * b, ckpt_every_nimg=0, log_every_nimg=0,
                                      ckpt_every_seconds=0, log_every_seconds=0, device="cpu"))
            return build_trainer(c, progress=False).fit()["train_seconds"]

        rcfg = replace(cfg, data=resolve_data(cfg.data))
        data = build_data(rcfg.data)
        torch.manual_seed(0)
        loop = _minimal_loop(build_method(rcfg, data.shape), data, rcfg, iters)
        loop()  # warm-up
        trainer()
        times: dict[str, list[float]] = {"trainer": [], "loop": []}
        for _ in range(opts.repeats):
            times["trainer"].append(trainer())
            t0 = time.perf_counter()
            loop()
            times["loop"].append(time.perf_counter() - t0)
        rows.append(_row("trainer_vs_loop", *ratio(times, "trainer", "loop"), times=times, target=1.03,
                         dataset=dataset, method="teacher", sampler="train", steps=iters, batch=b))
    return rows


def distill_rows(opts: SpeedOptions, tmp: Path, teacher_run: Path) -> list[dict]:
    """``distill_vs_teacher_step``: seconds per sample of MM distillation iterations / of the teacher's own training
    steps at the same batch size, both ``Trainer.fit`` runs of the same length in this process, interleaved (the
    students without the warm start, a one-time pre-phase the policy adds at k <= 4 on images)."""
    from fewstep.build.distill import build_distillation
    from fewstep.build.distill_config import distill_config, resolve_distill, teacher_config
    from fewstep.build.trainers import build_trainer

    iters = 3 if opts.quick else 30
    fits: dict[str, Callable[[int], float]] = {}
    batch = 0
    for method in ("mm-alternating", "mm-instant"):
        cfg = distill_config(str(teacher_run), method=method, steps=4)
        batch = cfg.train.batch_size
        cfg = replace(cfg, method=replace(cfg.method, warm_start_steps=0))  # a one-time pre-phase, not an iteration
        cfg = resolve_distill(replace(cfg, run_dir=str(tmp / f"distill-{method}"), train=replace(
            cfg.train, total_nimg=iters * batch, ckpt_every_nimg=0, log_every_nimg=0,
            ckpt_every_seconds=0, log_every_seconds=0, device="cpu")))
        fits[method] = lambda n, cfg=cfg, method=method: build_distillation(
            replace(cfg, run_dir=str(tmp / f"distill-{method}-{n}")), progress=False).fit()["train_seconds"]
    tcfg = teacher_config(str(teacher_run))
    tcfg = replace(tcfg, train=replace(tcfg.train, batch_size=batch, total_nimg=iters * batch, ckpt_every_nimg=0,
                                       log_every_nimg=0, ckpt_every_seconds=0, log_every_seconds=0, device="cpu"))
    fits["teacher"] = lambda n: build_trainer(replace(tcfg, run_dir=str(tmp / f"teacher-step-{n}")),
                                              progress=False).fit()["train_seconds"]
    count = {"n": 0}

    def arm(name: str) -> Callable[[], float]:
        def run() -> float:
            count["n"] += 1
            return fits[name](count["n"])
        return run

    times = interleaved({k: arm(k) for k in fits}, 1 if opts.quick else 3)
    return [_row("distill_vs_teacher_step", *ratio(times, method, "teacher"), times={method: times[method],
                 "teacher": times["teacher"]}, dataset="digits8x8", method=method, sampler="train", steps=4,
                 batch=batch) for method in ("mm-alternating", "mm-instant")]


def _fewstep(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fewstep", "--threads", "1", *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def _digits_teacher(tmp: Path) -> Path:
    """A digits teacher run (two training steps: a forward's cost does not depend on the weights)."""
    teacher = tmp / "teacher"
    if not teacher.exists():
        _fewstep("train", "--preset", "digits", "--run-dir", str(teacher), "--train.total-nimg", "512")
    return teacher


def speedup_rows(opts: SpeedOptions, tmp: Path) -> list[dict]:
    """``student_speedup`` of a k = 8 MM student vs its teacher at 1,024 NFE (digits, 4,096 samples), in process and
    as whole ``fewstep sample`` processes."""
    from fewstep.build.runs import load_model

    teacher, student = _digits_teacher(tmp), tmp / "student"
    nfe, k = (16, 2) if opts.quick else (1024, 8)
    n = 256 if opts.quick else 4096
    _fewstep("distill", "--method", "mm-alternating", "--teacher", str(teacher), "--steps", str(k), "--run-dir",
             str(student), "--train.total-nimg", "512")
    tm, sm = load_model(teacher), load_model(student)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    times = {"teacher": [], "student": []}
    reps = 1 if not opts.quick else 2  # the teacher arm is minutes long: one interleaved repetition
    sm.sample(n, generator=gen())
    for _ in range(reps):
        t0 = time.perf_counter()
        tm.sample(n, steps=nfe, generator=gen())
        times["teacher"].append(time.perf_counter() - t0)
        for _ in range(3):  # the student's median of three
            t0 = time.perf_counter()
            sm.sample(n, generator=gen())
            times["student"].append(time.perf_counter() - t0)
    inproc = statistics.median(times["teacher"]) / statistics.median(times["student"])
    base = {"dataset": "digits8x8", "method": "mm-alternating", "sampler": "student", "steps": k, "batch": n,
            "nfe_ratio": nfe / k}
    rows = [_row("student_speedup", inproc, None, times=times, lower=False, scope="in-process", **base)]
    if opts.whole_process:
        out = tmp / "samples"
        ptimes = {"teacher": [], "student": []}
        for _ in range(reps):
            ptimes["teacher"].append(_fewstep("sample", "--run", str(teacher), "--steps", str(nfe), "--n", str(n),
                                              "--out", str(out)))
            for _ in range(3):
                ptimes["student"].append(_fewstep("sample", "--run", str(student), "--n", str(n), "--out", str(out)))
        whole = statistics.median(ptimes["teacher"]) / statistics.median(ptimes["student"])
        rows.append(_row("student_speedup", whole, None, times=ptimes, target=60.0, lower=False,
                         scope="whole-process", **base))
    return rows


def run_speed(opts: SpeedOptions, *, log: Callable[[str], None] = print) -> list[dict]:
    """Run the sections of ``opts``; write OUT/results.jsonl and OUT/report.md; return the rows."""
    from fewstep.bench.runner import _cpu_name, git_sha

    torch.set_num_threads(1 if not opts.quick else torch.get_num_threads())
    base = {"suite": "speed", "seed": 0, "device": "cpu", "quick": opts.quick, "git_sha": git_sha(),
            "date": time.strftime("%Y-%m-%d"), "host_cpu": _cpu_name(), "threads": torch.get_num_threads(),
            "command": opts.command, "options": {"repeats": opts.repeats} if opts.repeats != 7 else {}}
    rows: list[dict] = []
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        steps = [("samplers", lambda: sampler_rows(opts)), ("masked", lambda: masked_rows(opts)),
                 ("trainer", lambda: trainer_rows(opts, tmp)), ("speedup", lambda: speedup_rows(opts, tmp)),
                 ("distill", lambda: distill_rows(opts, tmp, _digits_teacher(tmp)))]
        for name, fn in steps:
            if name in opts.sections:
                t0 = time.perf_counter()
                new = fn()
                rows += new
                log(f"[speed] {name}: {len(new)} rows ({time.perf_counter() - t0:.0f}s)")
    rows = [{**base, **r} for r in rows]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "report.md").write_text(speed_report(rows))
    log(f"[speed] wrote {out / 'results.jsonl'} and {out / 'report.md'}")
    return rows


def speed_report(rows: list[dict]) -> str:
    """A markdown table of speed rows: metric, where, value ± SE, target and whether it is met."""
    if not rows:
        return "# fewstep bench speed\n\n(no rows)\n"
    r0 = rows[0]
    lines = ["# fewstep bench speed", "", f"- date: {r0['date']}; cpu: {r0['host_cpu']}, {r0['threads']} thread(s); "
             f"git: `{r0['git_sha']}`; quick: {r0['quick']}", f"- command: `{r0['command']}`", "",
             "| metric | dataset | arm | batch | steps / NFE | value | target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        se = f" ± {r['stderr']:.3f}" if r.get("stderr") is not None else ""
        arm = r["sampler"] if r["metric"] != "student_speedup" else r["scope"]
        if r["metric"] == "distill_vs_teacher_step":
            arm = r["method"]
        target = r.get("target")
        met = "" if target is None else ("yes" if (r["value"] <= target if r["lower_is_better"]
                                                   else r["value"] >= target) else "**no**")
        nfe = r.get("nfe", r.get("steps"))
        nfe = f"{nfe:.1f}" if isinstance(nfe, float) else nfe
        lines.append(f"| {r['metric']} | {r['dataset']} | {arm} | {r.get('batch', '')} | {nfe} | "
                     f"{r['value']:.3f}{se} | {'' if target is None else target} | {met} |")
    return "\n".join(lines) + "\n"
