"""Table of the IMM ablations from bench results (``fewstep bench ... --methods imm [--imm-set field=value]``).

Reads ``results.jsonl`` files, groups the ``imm`` rows by dataset and by the options that differ from the
defaults (``imm_options`` in each row), and prints one Markdown table per dataset and metric: a row per
variant and sampler, a column per step count (mean ± standard error over the bench's repeats).

    python benchmarks/scripts/imm_ablation_table.py bench_out/imm-ablation/*/results.jsonl > imm-ablation-table.md
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from fewstep.config import IMMCfg

DEFAULTS = {f: getattr(IMMCfg(), f) for f in IMMCfg.__dataclass_fields__}


def variant(options: dict) -> str:
    """The options of a row that differ from the IMMCfg defaults, as ``field=value`` (``default`` if none)."""
    diff = [f"{k}={v}" for k, v in sorted(options.items()) if k in DEFAULTS and DEFAULTS[k] != v
            and k not in ("sampler", "t_max")]
    return ", ".join(diff) or "default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--metrics", default="energy,precision,mode_coverage",
                    help="comma-separated metrics to tabulate (those present)")
    args = ap.parse_args()
    cells: dict[tuple, dict[int, str]] = defaultdict(dict)
    steps_of: dict[str, set] = defaultdict(set)
    arrows: dict[str, str] = {}
    for path in args.results:
        for line in open(path):
            r = json.loads(line)
            if r["method"] != "imm":
                continue
            v = variant(r.get("imm_options") or {})
            key = (r["dataset"], r["metric"], v, r["sampler"])
            se = r.get("stderr")
            val = f"{r['value']:.4f}" if abs(r["value"]) < 1 else f"{r['value']:.4g}"
            cells[key][r["steps"]] = val + (f" ± {se:.1g}" if se else "")
            steps_of[r["dataset"]].add(r["steps"])
            arrows[r["metric"]] = "↓" if r["lower_is_better"] else "↑"
    for metric in args.metrics.split(","):
        for dataset in sorted(steps_of):
            keys = sorted(k for k in cells if k[0] == dataset and k[1] == metric)
            if not keys:
                continue
            steps = sorted(steps_of[dataset])
            print(f"\n#### {dataset}: `{metric}` {arrows[metric]}\n")
            print("| variant | sampler | " + " | ".join(f"{k} step{'s' if k > 1 else ''}" for k in steps) + " |")
            print("|---|---|" + "---|" * len(steps))
            for k in sorted(keys, key=lambda k: (k[2] != "default", k[2], k[3])):
                print(f"| {k[2]} | {k[3]} | " + " | ".join(cells[k].get(s, "") for s in steps) + " |")


if __name__ == "__main__":
    main()
