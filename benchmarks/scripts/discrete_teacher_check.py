"""Check a discrete teacher before distilling it (spec/discrete.md section 9): its held-out NELBO per token
(Monte Carlo over t and z_t, with a standard error) next to the source's entropy rate, on fresh data.

For ``text-hmm`` the source value is the exact NLL per token of fresh true sequences (forward algorithm); for
``text-char`` the validation split is used and there is no exact source value.

    python benchmarks/scripts/discrete_teacher_check.py bench_out/text/runs/hmm-mdlm-teacher [--n 4096] [--draws 4]
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from fewstep.build.runs import load_trained
from fewstep.data.source import seeded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--draws", type=int, default=4, help="(t, z_t) draws per sequence")
    args = ap.parse_args()
    cfg, method, nets = load_trained(args.run)
    data = cfg.data
    out = {"run": args.run, "dataset": data.name, "process": method.process.kind}
    if data.name == "text-hmm":
        from fewstep.build.datasets import make_hmm_for

        hmm = make_hmm_for(data)
        x = hmm.sample(args.n, data.length, generator=seeded(123, 0, 5))
        src = -hmm.log_prob(x) / data.length
        out["source_nll_per_token"] = float(src.mean())
        out["source_nll_se"] = float(src.std() / math.sqrt(args.n))
    elif data.name == "text-char":
        from fewstep.build.datasets import char_data

        _, val, _ = char_data(data)
        starts = torch.arange(0, val.numel() - data.length, data.length)[: args.n]
        x = torch.stack([val[s:s + data.length] for s in starts.tolist()])
    else:
        raise SystemExit(f"no held-out data recipe for {data.name}")
    vals = []
    with torch.no_grad():
        for d in range(args.draws):
            for i in range(0, x.shape[0], 256):
                g = seeded(7, d, i)
                vals.append(float(method.loss("main", {"x": x[i:i + 256]}, nets, g).loss) * x[i:i + 256].shape[0])
    per_token = sum(vals) / (args.draws * x.shape[0])
    # SE from the spread of batch means (each value is a batch sum)
    means = torch.tensor(vals, dtype=torch.float64) / 256
    out["nelbo_per_token"] = per_token
    out["nelbo_se"] = float(means.std() / math.sqrt(len(vals)))
    out["sequences"], out["draws"] = int(x.shape[0]), args.draws
    print(json.dumps(out))


if __name__ == "__main__":
    main()
