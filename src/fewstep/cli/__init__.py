"""``fewstep`` command line: train | distill | sample | eval | bench | report | demo | info.

Every command's flags come from typed dataclasses through tyro (``fewstep CMD --help``). ``train`` takes a
``--preset NAME`` (``fewstep info`` lists them) whose fields any flag overrides, ``--config RUN/config.json``
to reload a run, and ``--dry-run`` to print the resolved config and exit. Re-running the same command
resumes from the run's latest checkpoint; a changed config is refused unless ``--allow-config-change``.
``distill`` works the same way on a ``DistillConfig`` (``--method``, ``--teacher``, ``--steps`` pick its defaults).

One module per command: ``train``, ``distill``, ``sample``, ``evaluate`` (eval), ``bench`` (bench, report),
``info`` (info, demo); ``common`` holds the shared parsers.
"""

from __future__ import annotations

import sys

from fewstep.cli.bench import cmd_bench, cmd_report
from fewstep.cli.distill import cmd_distill
from fewstep.cli.evaluate import cmd_eval
from fewstep.cli.info import cmd_demo, cmd_info
from fewstep.cli.sample import cmd_sample
from fewstep.cli.train import cmd_train

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
