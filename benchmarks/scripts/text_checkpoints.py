"""Quality of a discrete run along its training: every kept checkpoint (or the named ones) sampled at K steps
and scored like ``fewstep bench`` with ``--repeats 1`` (evaluation seed 0, repeat 0, the suite's sample count;
in-sample standard errors). Prints one JSON line per (checkpoint, K).

    python benchmarks/scripts/text_checkpoints.py RUN --suite-data hmm-v32-l64 --steps 4,8 \
        [--checkpoints nimg_000096000,...] [--temperature T | --match-entropy H]

``--suite-data`` is the benchmark name of the data (``hmm-v32-l64``, ``grid2d``, ``tinyshakespeare-l128``).
A run keeps its newest two checkpoints (``Trainer(keep=2)``), so a training-length curve takes runs of
several lengths (e.g. ``--distill-scale 0.5`` and ``1``).

``--temperature T`` samples the denoiser at temperature T (``denoisers.categorical.Tempered``).
``--match-entropy H`` picks T per (checkpoint, K) so that the mean per-sample unigram entropy of the samples is H
(e.g. the 1,024-step teacher's), by bisection on log T over samples drawn with *calibration* seeds (1, i, 3),
disjoint from the evaluation seed (0, 0, 3); the evaluation is then one fresh draw, scored as above. The rule
uses entropy only, never the quality metric, so it cannot select T for a better oracle NLL.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from fewstep.bench.suites_text import make_text_eval
from fewstep.build.runs import load_trained
from fewstep.data.source import seeded
from fewstep.metrics.text import unigram_entropy
from fewstep.train.checkpoint import checkpoint_dirs


def match_entropy(method, nets, k: int, n: int, target: float, *, iters: int = 10,
                  bounds: tuple[float, float] = (0.5, 2.0), kernel: str = "duo") -> tuple[float, float]:
    """(T, entropy at T) with mean unigram entropy ~= ``target``, by bisection on log T (entropy rises with T)."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])

    def entropy(log_t: float, i: int) -> float:
        x = method.generate(n, steps=k, nets=nets, generator=seeded(1, i, 3), temperature=math.exp(log_t),
                            kernel=kernel)
        return float(unigram_entropy(x).mean())

    if not entropy(lo, 0) <= target <= entropy(hi, 1):
        raise SystemExit(f"error: target entropy {target} is outside the range reached with T in {bounds}")
    h = float("nan")
    for i in range(iters):
        mid = 0.5 * (lo + hi)
        h = entropy(mid, 2 + i)
        lo, hi = (mid, hi) if h < target else (lo, mid)
    return math.exp(0.5 * (lo + hi)), h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--suite-data", required=True)
    ap.add_argument("--steps", default="4,8")
    ap.add_argument("--checkpoints", default=None, help="comma-separated names (default: all kept)")
    ap.add_argument("--n", type=int, default=None, help="samples (default: the suite's)")
    ap.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    ap.add_argument("--kernel", default="duo", choices=("duo", "sample-x"), help="uniform reverse kernel")
    ap.add_argument("--match-entropy", type=float, default=None,
                    help="calibrate the temperature to this mean unigram entropy on calibration seeds")
    args = ap.parse_args()
    names = args.checkpoints.split(",") if args.checkpoints else [p.name for p in checkpoint_dirs(args.run)]
    ev = make_text_eval(args.suite_data, n_samples=args.n)
    for name in names:
        _, method, nets = load_trained(args.run, checkpoint=name)
        for k in (int(s) for s in args.steps.split(",")):
            temp, calib = args.temperature, None
            if args.match_entropy is not None:
                temp, calib = match_entropy(method, nets, k, ev.n_samples, args.match_entropy,
                                            kernel=args.kernel)
            x = method.generate(ev.n_samples, steps=k, nets=nets, generator=seeded(0, 0, 3), temperature=temp,
                                kernel=args.kernel)
            vals = ev.evaluate(x, 0, 0)
            extra = {} if calib is None else {"calibration_entropy": round(calib, 5)}
            print(json.dumps({"run": args.run, "checkpoint": name, "steps": k, "temperature": round(temp, 5),
                              "kernel": args.kernel,
                              **extra, **{m: round(v, 5) for m, v in vals.items()}}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
