"""Why IMM samples change with the number of steps: quality per sampler and step count, plus each map's own error.

For a trained IMM run, prints for the pushforward and restart samplers at 1, 2, 4, 8, 16 steps the suite metrics
(mean of 2 x 4,096 samples) and, on ``checkerboard2d``, the within-cell standard deviation (data: 1/sqrt(12) =
0.289; smaller = under-dispersed inside the squares). Then, for the pushforward grids, the error of every single
map f_{t_{i+1}, t_i} applied to *true* x_{t_i} (energy distance to true x_{t_{i+1}}): if these are small while the
chained pushforward is worse, the maps compound each other's errors.

    python benchmarks/scripts/imm_steps_diagnosis.py RUN_DIR [--steps 1,2,4,8,16] [--repeats 8] [--no-maps] [--grid edm]
    python benchmarks/scripts/imm_steps_diagnosis.py TEACHER_RUN --samplers ancestral --steps 1024 --repeats 8 --no-maps

The second form scores a Gaussian teacher run on the same sets (e.g. one trained with a non-preset width, which
``fewstep bench`` cannot name). Each cell also prints the SE of the primary metric over the R sets.

With ``--repeats R`` every cell is the mean over R sample sets (the bench uses 8 with the same generators and
reference sets), and each step count is also compared with 2 steps *paired* over the R sets: the mean and SE of
metric(k) - metric(2) on the same reference sets, which removes the reference noise that dominates the SE of
each cell (for "does quality get worse with more steps").
"""

from __future__ import annotations

import argparse

import torch

from fewstep.bench.suites import make_eval
from fewstep.build.datasets import build_data, data_shape
from fewstep.build.runs import load_trained
from fewstep.data.source import seeded
from fewstep.metrics.toys import energy_distance
from fewstep.processes.base import bcast
from fewstep.samplers.imm import imm_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--steps", default="1,2,4,8,16")
    ap.add_argument("--n", type=int, default=None, help="samples per set (default: the suite's, as the bench)")
    ap.add_argument("--grid", choices=("uniform", "edm"), default="uniform",
                    help="the spec's grid (uniform in t; eta = 1.4 mid-point at 2 steps) or EDM rho = 7 in eta")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-maps", action="store_true", help="skip the single-map errors")
    ap.add_argument("--samplers", default="pushforward,restart",
                    help="comma-separated; a Gaussian teacher run takes its own (ancestral, ddim, ...) with --no-maps")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    cfg, m, nets = load_trained(args.run, ema=True)
    ev, shape, name = make_eval(cfg.data.name), data_shape(cfg.data.name), cfg.data.name
    reps, n_gen = args.repeats, args.n or ev.n_samples
    by_sampler: dict[str, dict[int, torch.Tensor]] = {}
    for sampler in args.samplers.split(","):
        cells, primary = [], {}
        by_sampler[sampler] = primary
        for k in steps:
            vals = []
            for r in range(reps):
                x = m.generate(n_gen, steps=k, nets=nets, generator=seeded(0, r, 3), shape=shape, sampler=sampler,
                               grid=args.grid)
                v = ev.evaluate(x, r, 0)
                if name == "checkerboard2d":
                    v["cell_std"] = float((x - x.floor() - 0.5).std(0).mean())
                vals.append(v)
            primary[k] = torch.tensor([v[ev.primary] for v in vals], dtype=torch.float64)
            se = f" (se {primary[k].std() / reps ** 0.5:.5f})" if reps > 1 else ""
            cells.append(f"{k}: " + " ".join(f"{key}={sum(v[key] for v in vals) / reps:.5f}" for key in vals[0]) + se)
        print(f"{sampler:12s}", " | ".join(cells), flush=True)
        if 2 in primary and reps > 1:
            diffs = [(k, primary[k] - primary[2]) for k in steps if k != 2]
            print(f"{sampler:12s} {ev.primary}(k) - {ev.primary}(2), paired over {reps} sets:",
                  " | ".join(f"{k}: {d.mean():+.5f} ± {d.std() / reps ** 0.5:.5f}" for k, d in diffs), flush=True)
    if len(by_sampler) > 1 and all(2 in p for p in by_sampler.values()) and reps > 1:
        # best sampler at each step count against the best 2-step cell, paired over the same R reference sets
        best2_name = min(by_sampler, key=lambda s: float(by_sampler[s][2].mean()))
        best2 = by_sampler[best2_name][2]
        cells = []
        for k in steps:
            name_k = min(by_sampler, key=lambda s: float(by_sampler[s][k].mean()))
            d = by_sampler[name_k][k] - best2
            cells.append(f"{k} ({name_k}): {d.mean():+.5f} ± {d.std() / reps ** 0.5:.5f}")
        print(f"best sampler {ev.primary}(k) - best {ev.primary}(2) ({best2_name}), paired over {reps} sets:",
              " | ".join(cells), flush=True)
    if args.no_maps:
        return
    data, fmap, n = build_data(cfg.data), nets["model"], n_gen
    g = torch.Generator().manual_seed(0)

    def x_at(t: float, pos: int) -> torch.Tensor:
        x = data.batch(pos, n, seed=1)["x"].double()
        o = m.schedule(torch.full((n,), t, dtype=torch.float64))
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
        return bcast(o.alpha, x) * x + bcast(o.sigma * fmap.sigma_d, x) * eps

    for k in steps:
        grid = imm_grid(k, m.schedule, t_max=m.t_max, t_min=m.t_min, two_step=m.two_step)
        errs = []
        for i in range(k):
            t, s = float(grid[i]), float(grid[i + 1])
            with torch.no_grad():
                y = fmap(x_at(t, 0), torch.full((n,), s, dtype=torch.float64), torch.full((n,), t, dtype=torch.float64))
            errs.append(energy_distance(y.double().reshape(n, -1), x_at(s, n).reshape(n, -1)))
        print(f"single-map energy from true x_t, {k} steps:", " ".join(f"{e:.4f}" for e in errs), flush=True)


if __name__ == "__main__":
    main()
