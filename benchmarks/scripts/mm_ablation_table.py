"""Table of the Moment Matching re-noising ablation (conditional posterior vs fresh noise) from bench results.

Reads ``results.jsonl`` files written by ``fewstep bench ... --methods mm-alternating [--distill-set
renoise=fresh] --distill-seed S`` and prints, per dataset, k and metric, the mean over training seeds (± the
standard error across seeds) of each re-noising rule, the per-seed values, and the difference fresh - posterior
with its standard error (seeds paired by their seed number).

    python benchmarks/scripts/mm_ablation_table.py bench_out/ablation/*/results.jsonl \
        > benchmarks/results/mm-ablation-table.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def _mean_se(vals: list[float]) -> tuple[float, float | None]:
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    var = sum((v - m) ** 2 for v in vals) / (len(vals) - 1)
    return m, math.sqrt(var / len(vals))


def _fmt(m: float, se: float | None) -> str:
    return f"{m:.4g}" if se is None else f"{m:.4g} ± {se:.2g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    args = ap.parse_args()
    # (dataset, teacher, k, metric, renoise) -> {seed: value}
    table: dict[tuple, dict[int, float]] = defaultdict(dict)
    better: dict[str, bool] = {}
    for path in args.results:
        for line in open(path):
            r = json.loads(line)
            if not r["method"].startswith("mm-"):
                continue
            renoise = (r.get("distill_options") or {}).get("renoise", "posterior")
            key = (r["dataset"], r["method"], r["teacher"], r["steps"], r["metric"], renoise)
            table[key][int(r.get("distill_seed", 0))] = r["value"]
            better[r["metric"]] = r["lower_is_better"]
    groups = sorted({k[:5] for k in table})
    print("| dataset | method | teacher | k | metric | posterior (mean ± SE over seeds) | fresh | "
          "fresh − posterior (paired) | posterior per seed | fresh per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in groups:
        post, fresh = table.get((*g, "posterior"), {}), table.get((*g, "fresh"), {})
        if not post or not fresh:
            continue
        paired = [fresh[s] - post[s] for s in sorted(set(post) & set(fresh))]
        arrow = "↓" if better[g[4]] else "↑"
        print(f"| {g[0]} | {g[1]} | {g[2]} | {g[3]} | {g[4]} {arrow} | {_fmt(*_mean_se(list(post.values())))} | "
              f"{_fmt(*_mean_se(list(fresh.values())))} | {_fmt(*_mean_se(paired)) if paired else ''} | "
              f"{', '.join(f'{post[s]:.4g}' for s in sorted(post))} | "
              f"{', '.join(f'{fresh[s]:.4g}' for s in sorted(fresh))} |")


if __name__ == "__main__":
    main()
