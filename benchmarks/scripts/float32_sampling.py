"""The float32-vs-float64 categorical sampling effect in a K-step masked sampler (spec/discrete.md section 0).

A one-stage masked step draws each masked position from Cat([1 - eps] + eps * x_hat) over V + 1 entries
(eps = (alpha_s - alpha_t)/(1 - alpha_t)) by Gumbel-max, as the float32 reference implementations do. With
float32 uniforms (u = k / 2^24) the Gumbel noise g = -log(-log u) is capped at ~16.6, so a token v can beat the
mask only if log((1 - eps)/(eps x_hat_v)) < g_v - g_mask <= ~16.6 + 2.8: tokens far less likely than the mask
entry are starved, more so for larger K (smaller eps). fewstep draws in two float64 stages (Bernoulli reveal,
then Cat(x_hat) by inverse CDF), which is exact.

Computation (no Monte-Carlo noise): token v is revealed at a step with probability
S(Delta_v) = P(g_v - g_mask > Delta_v), Delta_v = log((1 - eps)/(eps x_hat_v)), where S is computed exactly over
the 2^24 float32 uniform atoms (the same float32 arithmetic as the sampler) for Delta >= 8 and by the logistic
law below (where quantisation is negligible). Token-token competition is neglected (total token mass eps << 1;
steps with eps >= 1/2 are taken as exact). Steps are mixed with the probability that a position is revealed at
each (log-linear schedule, uniform grid). ``--check`` compares the computation with direct simulation of the
one-stage float32 Gumbel draw at a size where simulation is feasible.

Reported per (V, K): the cross-entropy E[-log x_hat(v)] of revealed tokens (= H(x_hat) for an exact sampler;
lower = lower temperature) and the mass of tokens with x_hat < 1e-5 actually drawn. x_hat is a Zipf law over V
tokens (a stand-in for a language model's prediction; V = 50,257 is the GPT-2 BPE vocabulary).

    python benchmarks/scripts/float32_sampling.py --out benchmarks/results/float32-sampling.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

U32 = 2 ** 24


def zipf(v: int, s: float = 1.0, q: float = 2.7) -> torch.Tensor:
    """A Zipf-Mandelbrot token law p_i ~ (i + q)^-s over v tokens (float64)."""
    p = (torch.arange(v, dtype=torch.float64) + q) ** -s
    return p / p.sum()


def float32_gumbels() -> torch.Tensor:
    """g(k) = -log(-log(k / 2^24)) for every float32 uniform atom k = 1 .. 2^24 - 1, computed in float32 as a
    sampler does (k = 0 clamps to the smallest normal), sorted ascending, as float64 [2^24]."""
    u = torch.arange(U32, dtype=torch.float32) / U32
    tiny = torch.finfo(torch.float32).tiny
    return (-torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))).double().sort().values


def survival_table(g: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """S(Delta) = P(g_v - g_m > Delta) for iid float32 Gumbels (exact over the atoms), for each Delta."""
    out = torch.empty_like(deltas)
    for i, d in enumerate(deltas.tolist()):
        top = g[g > g[0] + d]  # only atoms that can beat some mask atom
        below = torch.searchsorted(g, top - d, right=False).double()  # #{g_m < g_v - Delta}
        out[i] = below.sum() / U32 / U32
    return out


def step_reveal(p: torch.Tensor, eps: float, table: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """[V] probability that each token is revealed in one step with reveal mass ``eps`` (table None: exact)."""
    if table is None or eps >= 0.5:
        return p * eps
    delta = math.log1p(-eps) - math.log(eps) - p.log()
    d_grid, s_grid = table
    idx = torch.searchsorted(d_grid, delta.clamp(max=float(d_grid[-1]))).clamp(1, d_grid.numel() - 1)
    lo, hi = d_grid[idx - 1], d_grid[idx]
    w = ((delta - lo) / (hi - lo)).clamp(0, 1)
    log_s = s_grid.clamp_min(1e-300).log()
    tab = torch.exp((1 - w) * log_s[idx - 1] + w * log_s[idx])  # log-linear interpolation of S
    tab = torch.where(delta > float(d_grid[-1]), torch.zeros_like(tab), tab)
    return torch.where(delta < float(d_grid[0]), 1.0 / (1.0 + delta.exp()), tab)


def revealed_law(p: torch.Tensor, k: int, table: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Law [V] of the token a position ends with in a K-step one-stage sampler; ``table`` None = exact draws."""
    law = torch.zeros_like(p)
    masked = 1.0
    for i in range(k):
        q = step_reveal(p, 1.0 / (k - i), table)
        law += masked * q
        masked *= 1 - float(q.sum())
    return law / law.sum()


def simulate(p: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    """Direct one-stage float32 Gumbel-max draws over [mask, eps * p]; returns the revealed tokens."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.cat([torch.tensor([math.log1p(-eps)]), (eps * p).log()]).float()
    tiny = torch.finfo(torch.float32).tiny
    out = []
    for _ in range(0, n, 512):
        u = torch.rand((512, logits.numel()), generator=g, dtype=torch.float32)
        win = (logits + -torch.log((-torch.log(u.clamp_min(tiny))).clamp_min(tiny))).argmax(-1)
        out.append(win[win > 0] - 1)
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out/float32-sampling.jsonl")
    ap.add_argument("--steps", default="1,16,64,256,1024")
    ap.add_argument("--check", action="store_true", help="compare with direct simulation (V = 2048, eps = 1/64)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    g = float32_gumbels()
    d_grid = torch.linspace(8.0, 24.0, 321, dtype=torch.float64)
    table = (d_grid, survival_table(g, d_grid))
    if args.check:
        p, eps = zipf(2048), 1 / 256
        draws = simulate(p, eps, 8_000_000, 0)
        pred = step_reveal(p, eps, table)
        pred = pred / pred.sum()
        sim_ce = float(-p.log()[draws].mean())
        print(json.dumps({"check": "V=2048, eps=1/256", "revealed": int(draws.numel()),
                          "simulated_cross_entropy": sim_ce,
                          "simulated_cross_entropy_se": float(p.log()[draws].std()) / math.sqrt(draws.numel()),
                          "computed_cross_entropy": float((pred * -p.log()).sum()),
                          "exact_entropy": float(-(p * p.log()).sum())}), flush=True)
    rows = []
    for v in (32, 2048, 50257):
        p = zipf(v)
        h = float(-(p * p.log()).sum())
        for k in (int(s) for s in args.steps.split(",")):
            for dtype, tab in (("float32 one-stage Gumbel", table), ("float64 two-stage (fewstep)", None)):
                law = revealed_law(p, k, tab)
                rows.append({"vocab": v, "steps": k, "sampling": dtype, "exact_entropy": h,
                             "cross_entropy": float((law * -p.log()).sum()),
                             "exact_tail_mass": float(p[p < 1e-5].sum()), "tail_mass": float(law[p < 1e-5].sum()),
                             "x_hat": "zipf(s=1, q=2.7)", "date": time.strftime("%F")})
                print(json.dumps(rows[-1]), flush=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
