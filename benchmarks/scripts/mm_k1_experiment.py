"""k = 1 / k = 2 Moment Matching on gmm8d from the exact oracle, with and without the teacher-ODE warm start.

Builds every student exactly as ``fewstep distill --teacher oracle`` does (``build_distillation``: net regressed
on the oracle, student and auxiliary copied from it, optional warm start, then alternating MM), shortened by
the flags below. Reports, per (k, warm start), the energy distance to fresh data (n vs n samples, mean +- SE
over repeats) and the mode coverage / mode-weight TV of the student right after its initialisation and after
MM, plus the teacher's ancestral and DDIM samplers at k steps for reference.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scripts/mm_k1_experiment.py --out /tmp/mmk1
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from fewstep.build.datasets import data_shape
from fewstep.build.distill import build_distillation, oracle_net
from fewstep.build.distill_config import ORACLE, distill_config, resolve_distill
from fewstep.data.source import seeded
from fewstep.data.toys import GMMOracle, make_gmm8d
from fewstep.metrics.toys import energy_distance, mean_and_stderr, mode_coverage, mode_weights_tv
from fewstep.samplers import sample, sample_student, student_grid, uniform_grid


def evaluate(gen_fn, gmm, n: int, repeats: int) -> dict:
    eds, cov, tv = [], [], []
    for r in range(repeats):
        x = gen_fn(n, seeded(7, r, 1))
        y = gmm.sample(n, generator=seeded(7, r, 2))
        eds.append(energy_distance(x, y))
        cov.append(mode_coverage(gmm, x))
        tv.append(mode_weights_tv(gmm, x))
    m, se = mean_and_stderr(eds)
    return {"ed": m, "ed_se": se, "coverage": min(cov), "tv": sum(tv) / len(tv)}


def student_sampler(student, process, shape, k: int, n: int, g: torch.Generator):
    return sample_student(student.eval(), process, (n, *shape), grid=student_grid(k), generator=g)


def flatten_t1(net, gmm, steps: int, generator: torch.Generator) -> None:
    """Stress control: keep regressing ``net`` on the oracle with half of every batch at t = 1, so that its
    output at t = 1 becomes (nearly) the constant E[x] of the exact teacher: the k = 1 saddle of spec section 8."""
    oracle = GMMOracle(gmm, net.process.schedule)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    for _ in range(steps):
        x = gmm.sample(512, generator=generator)
        t = torch.rand(512, generator=generator, dtype=torch.float64).clamp_min(1e-4)
        t[:256] = 1.0
        z = net.process.add_noise(x, t, noise=torch.randn(x.shape, generator=generator, dtype=torch.float64))
        loss = (net(z.float(), t.float()) - oracle(z, t).float()).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/mm_k1_experiment")
    ap.add_argument("--ks", default="1,2")
    ap.add_argument("--warm", default="0,auto", help="comma list of warm_start_steps (auto: the default)")
    ap.add_argument("--regress-steps", type=int, default=2000, help="oracle regression steps (build: 10000)")
    ap.add_argument("--iters", type=int, default=300, help="MM iterations at batch 512 (build: 1000)")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--flatten-t1", type=int, default=0,
                    help="stress control: steps pushing the regressed init's t = 1 output to the constant E[x]")
    ap.add_argument("--set", action="append", default=[], help="extra MMCfg field=value (JSON value)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gmm = make_gmm8d()
    cache = out / "regressed.safetensors"
    shape = data_shape("gmm8d")
    rows = []
    for k in (int(v) for v in args.ks.split(",")):
        base = distill_config(ORACLE, steps=k)
        if not rows:  # the teacher's k-step samplers, for reference
            net, secs = oracle_net(resolve_distill(replace(base, method=replace(
                base.method, oracle_regress_steps=args.regress_steps))), cache)
            print(f"regressed init: {args.regress_steps} steps, {secs:.1f} s")
            if args.flatten_t1:
                from fewstep.train.checkpoint import load_weights, save_weights

                state, meta = load_weights(cache)
                flatten_t1(net, gmm, args.flatten_t1, seeded(7, 0, 3))
                cache = out / f"regressed-flat{args.flatten_t1}.safetensors"
                save_weights(cache, net.state_dict(), metadata=meta)
            with torch.no_grad():
                z = torch.randn(4096, 8, generator=seeded(7, 0, 4))
                spread = float(net(z, torch.ones(4096)).std(0).mean())
            print(f"init: per-dim std over z of its output at t = 1: {spread:.4f} (exact teacher: 0)")
        oracle = GMMOracle(gmm, net.process.schedule)
        for sampler in ("ancestral", "ddim"):
            teacher_k = partial(sample, oracle, net.process, sampler=sampler, grid=uniform_grid(k))
            r = evaluate(lambda n, g, f=teacher_k: f((n, *shape), generator=g), gmm, args.n, args.repeats)
            rows.append({"k": k, "model": f"oracle-teacher {sampler}@{k}", **r})
            print(json.dumps(rows[-1]))
        for warm in args.warm.split(","):
            extra = {kv.split("=", 1)[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
            m = replace(base.method, oracle_regress_steps=args.regress_steps,
                        warm_start_steps=None if warm == "auto" else int(warm), **extra)
            run = out / f"k{k}-warm{warm}"
            shutil.rmtree(run, ignore_errors=True)
            t = replace(base.train, total_nimg=args.iters * 512, warmup_nimg=min(base.train.warmup_nimg,
                                                                                  args.iters * 512 // 10),
                        ckpt_every_nimg=args.iters * 512, log_every_nimg=args.iters * 512, device="cpu")
            cfg = replace(base, method=m, train=t, run_dir=str(run))
            t0 = time.perf_counter()
            trainer = build_distillation(resolve_distill(cfg), progress=False, regress_cache=cache)
            build_s = time.perf_counter() - t0
            gen = partial(student_sampler, trainer.method.student, trainer.method.process, shape, k)
            r0 = evaluate(gen, gmm, args.n, args.repeats)  # the initialisation (warm-started or not)
            t0 = time.perf_counter()
            trainer.fit()
            fit_s = time.perf_counter() - t0
            r1 = evaluate(gen, gmm, args.n, args.repeats)
            rows.append({"k": k, "model": f"MM k={k} warm_start={warm}", "settings": args.set,
                         "warm_start_steps": resolve_distill(cfg).method.warm_start_steps, "init": r0,
                         "after_mm": r1, "build_s": round(build_s, 1),
                         "warm_start_s": round(trainer.warm_start_seconds, 1), "mm_s": round(fit_s, 1)})
            print(json.dumps(rows[-1]))
    (out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
