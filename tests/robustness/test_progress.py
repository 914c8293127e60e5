"""Progress without a terminal: a first log line within seconds, then at a steady time interval; --threads."""

from __future__ import annotations

from pathlib import Path

import torch
from _cli import run
from _runs import trainer

from fewstep.train.logging import read_jsonl


class _Slow:
    """Wraps a data source so that each batch takes ``delay`` seconds (a slow model, in miniature)."""

    def __init__(self, source, delay: float) -> None:
        self.source, self.delay, self.name = source, delay, "slow"

    def batch(self, start: int, size: int, *, seed: int = 0):
        import time

        time.sleep(self.delay)
        return self.source.batch(start, size, seed=seed)


def test_time_based_log_lines_without_sample_interval(tmp_path: Path, capsys) -> None:
    from fewstep.data.source import SamplerSource
    from fewstep.data.toys import checkerboard_sample

    data = _Slow(SamplerSource(checkerboard_sample, (2,), name="checkerboard2d"), 0.05)
    t = trainer(tmp_path / "run", 30, data=data, log_every_nimg=0, log_every_seconds=0.4, progress=True)
    t.fit()
    times = [r["train_seconds"] for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["event"] == "train"]
    assert len(times) >= 3  # 1.5 s of training: lines every 0.4 s (and the last one) although nimg never crossed
    assert times[0] < 1.0 and all(b - a < 1.0 for a, b in zip(times, times[1:]))
    assert capsys.readouterr().out.count("nimg") >= 3  # and printed (no terminal: plain lines)


def test_threads_flag(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        code, _, err = run(["--threads", "1", "train", "--preset", "tiny", "--dry-run"])
        assert code == 0 and torch.get_num_threads() == 1, err
        code, _, err = run(["train", "--threads", "0", "--dry-run"])
        assert code == 2 and "--threads needs a positive integer" in err
    finally:
        torch.set_num_threads(before)
