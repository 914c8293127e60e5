"""``fewstep`` command line: train | distill | sample | export | eval | bench | report | demo | info.

Every command's flags come from typed dataclasses through tyro (``fewstep CMD --help``). ``train`` takes a
``--preset NAME`` (``fewstep info`` lists them) whose fields any flag overrides, ``--config RUN/config.json``
to reload a run, and ``--dry-run`` to print the resolved config and exit. Re-running the same command
resumes from the run's latest checkpoint; a changed config is refused unless ``--allow-config-change``.
``distill`` works the same way on a ``DistillConfig`` (``--method``, ``--teacher``, ``--steps`` pick its defaults).

One module per command: ``train``, ``distill``, ``sample``, ``export``, ``evaluate`` (eval), ``bench`` (bench, report),
``info`` (info, demo); ``common`` holds the shared parsers.
"""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: fewstep {train,distill,sample,export,eval,bench,report,demo,info} [--help]

  train   train a model from a preset (fewstep train --preset toy2d-checkerboard --dry-run)
  distill distill a teacher into a k-step student (fewstep distill --method mm-alternating --teacher RUN|oracle
          --steps 4 --dry-run)
  sample  draw samples from a trained (or distilled) run, or a diffusers teacher, at several step counts
  export  write a run's network in another library's format (a student of a diffusers teacher -> diffusers)
  eval    metrics of saved samples against a dataset
  bench   run a benchmark suite (toy, digits, mnist, text-hmm, grid2d, text-char) and write results.jsonl,
          report.md, figures
  report  re-derive report.md and figures from a results.jsonl
  demo    a teacher, an MM student and an IMM model on built-in data, an illustrated report (minutes;
          --full: every suite, ~30 min on 2 CPU cores)
  info    version, presets, devices
"""

COMMANDS = {"train": "train:cmd_train", "distill": "distill:cmd_distill", "sample": "sample:cmd_sample",
            "export": "export:cmd_export",
            "eval": "evaluate:cmd_eval", "bench": "bench:cmd_bench", "report": "bench:cmd_report",
            "demo": "info:cmd_demo", "info": "info:cmd_info"}
"""Command -> ``module:function`` under ``fewstep.cli``, imported when the command runs (a command loads only
its own dependencies: ``fewstep sample`` never imports the bench, the trainers or plotting before it needs them)."""


def command(name: str):
    """The function of command ``name`` (imported now); None if there is no such command."""
    if name not in COMMANDS:
        return None
    module, func = COMMANDS[name].split(":")
    return getattr(importlib.import_module(f"fewstep.cli.{module}"), func)


def default_threads() -> int:
    """CPU threads for torch when ``--threads`` is not given: torch's default (the cores), less the load that other
    processes already put on the machine (1-minute load average), at least 1. On a busy 2-core machine this is 1:
    two threads then stall at every barrier (a tiny run measured 20x slower than with one thread)."""
    import os

    import torch

    cores = torch.get_num_threads()
    try:
        busy = int(round(os.getloadavg()[0]))
    except OSError:  # not available on this platform
        busy = 0
    return max(1, min(cores, (os.cpu_count() or cores) - busy))


def _threads(argv: list[str], *, default: bool) -> list[str]:
    """Apply ``--threads N`` (anywhere on the line; default ``default_threads()``, or $OMP_NUM_THREADS when set)
    and return the other arguments."""
    import os

    import torch

    n = None
    if "--threads" in argv:
        i = argv.index("--threads")
        if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
            raise ValueError("--threads needs a positive integer")
        n, argv = int(argv[i + 1]), argv[:i] + argv[i + 2:]
    elif default and not os.environ.get("OMP_NUM_THREADS") and argv and argv[0] in COMMANDS:
        n = default_threads()
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return argv


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure is one line on stderr starting ``error:`` and exit status 1 (no traceback;
    ``--debug`` anywhere on the line shows it); Ctrl-C outside training (which checkpoints and exits 130 itself)
    exits 130 with one line. ``--threads N`` sets torch's CPU threads (default: ``default_threads``). A command line
    also keeps freed host memory with the process (``fewstep.build.allocator``; ``FEWSTEP_MALLOC=default`` opts out)."""
    console = argv is None  # the default thread count applies to a real command line, not to in-process calls
    if console:  # freed activations stay with the process: no page faults per forward (fewstep.build.allocator)
        from fewstep.build.allocator import tune_host_allocator

        tune_host_allocator()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        argv = _threads(argv, default=console)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    cmd = command(argv[0])
    if cmd is None:
        print(f"error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return cmd(argv[1:]) or 0
    except SystemExit:
        raise
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        code = getattr(e, "exit_code", 1)
        if code == 1:
            message += f" ({type(e).__name__}; --debug shows the traceback)"
        print(f"error: {message}", file=sys.stderr)
        return code
