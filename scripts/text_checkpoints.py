"""Quality of a discrete run along its training: every kept checkpoint (or the named ones) sampled at K steps
and scored like ``fewstep bench`` with ``--repeats 1`` (evaluation seed 0, repeat 0, the suite's sample count;
in-sample standard errors). Prints one JSON line per (checkpoint, K).

    python scripts/text_checkpoints.py RUN --suite-data hmm-v32-l64 --steps 4,8 [--checkpoints nimg_000096000,...]

``--suite-data`` is the benchmark name of the data (``hmm-v32-l64``, ``grid2d``, ``tinyshakespeare-l128``).
A run keeps its newest two checkpoints (``Trainer(keep=2)``), so a training-length curve takes runs of
several lengths (e.g. ``--distill-scale 0.5`` and ``1``).
"""

from __future__ import annotations

import argparse
import json

import torch

from fewstep.bench.suites_text import make_text_eval
from fewstep.build import load_trained
from fewstep.data.source import seeded
from fewstep.train.checkpoint import checkpoint_dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--suite-data", required=True)
    ap.add_argument("--steps", default="4,8")
    ap.add_argument("--checkpoints", default=None, help="comma-separated names (default: all kept)")
    ap.add_argument("--n", type=int, default=None, help="samples (default: the suite's)")
    args = ap.parse_args()
    names = args.checkpoints.split(",") if args.checkpoints else [p.name for p in checkpoint_dirs(args.run)]
    ev = make_text_eval(args.suite_data, n_samples=args.n)
    for name in names:
        _, method, nets = load_trained(args.run, checkpoint=name)
        for k in (int(s) for s in args.steps.split(",")):
            x = method.generate(ev.n_samples, steps=k, nets=nets, generator=seeded(0, 0, 3))
            vals = ev.evaluate(x, 0, 0)
            print(json.dumps({"run": args.run, "checkpoint": name, "steps": k,
                              **{m: round(v, 5) for m, v in vals.items()}}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
