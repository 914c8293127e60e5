"""A training process killed with SIGKILL mid-run resumes on re-run and ends bit-identical to an
uninterrupted run (CPU), and the checkpoint ``latest`` names is always complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from fewstep.train.checkpoint import find_weights, load_weights

ARGS = ["--preset", "tiny", "--train.total-nimg", "409600", "--train.ckpt-every-nimg", "20480",
        "--train.log-every-nimg", "40960"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(run: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fewstep.cli", "train", *ARGS, "--run-dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def _latest_nimg(run: Path) -> int:
    latest = run / "checkpoints" / "latest"
    if not latest.exists():
        return 0
    return int(latest.read_text().strip().rsplit("_", 1)[-1])


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path: Path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    p = _train(ref)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()

    p = _train(run)
    deadline = time.time() + 120
    while _latest_nimg(run) < 3 * 20480 and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    killed_at = _latest_nimg(run)
    assert 0 < killed_at < 409600, "the run should have been killed mid-training"
    # whatever 'latest' names is a complete, loadable checkpoint
    state, meta = load_weights(find_weights(run, "model", ema=True))
    assert state and meta["role"] == "model"

    p = _train(run)  # the same command resumes
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert _latest_nimg(run) == 409600
    for ema in (False, True):
        a, _ = load_weights(find_weights(ref, "model", ema=ema))
        b, _ = load_weights(find_weights(run, "model", ema=ema))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
