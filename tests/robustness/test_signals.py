"""SIGINT / SIGTERM during training: the step finishes, a checkpoint is written, the run stops with one line and
status 130; re-running finishes with the same weights as an uninterrupted run. A second signal stops at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from _cli import assert_contract, run
from _runs import B, same, trainer, weights

from fewstep.data.source import SamplerSource
from fewstep.data.toys import checkerboard_sample
from fewstep.train import Trainer, TrainingInterrupted
from fewstep.train.checkpoint import latest_dir, verify_checkpoint


class _SignalAt(SamplerSource):
    """The checkerboard; fetching the batch at position ``at`` sends ``signals`` to this process (the handler runs
    while that step is under way, like a user's Ctrl-C)."""

    def __init__(self, at: int, signals: tuple[int, ...]) -> None:
        super().__init__(checkerboard_sample, (2,), name="checkerboard2d")
        self.at, self.signals = at, signals

    def batch(self, start: int, size: int, *, seed: int = 0):
        if start == self.at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)
        return super().batch(start, size, seed=seed)


@pytest.fixture(autouse=True)
def _interruptible():
    """Default handlers while a test runs (a test run under ``nohup`` inherits an ignored SIGINT)."""
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                               (signal.SIGTERM, signal.SIG_DFL))}
    yield
    for s, h in old.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_checkpoints_and_the_rerun_matches_an_uninterrupted_run(tmp_path: Path, sig: int) -> None:
    whole = trainer(tmp_path / "whole", 10)
    whole.fit()
    t = trainer(tmp_path / "run", 10, data=_SignalAt(5 * B, (sig,)), ckpt_every_nimg=0)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(sig).name} at 96 samples") as e:
        t.fit()
    assert "\n" not in str(e.value)
    ckpt = latest_dir(tmp_path / "run")
    assert ckpt.name == "nimg_000000096" and verify_checkpoint(ckpt) is None  # the step finished, then saved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    again = trainer(tmp_path / "run", 10, ckpt_every_nimg=0)
    assert again.fit()["resumed"] and same(weights(again), weights(whole))


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    t = trainer(tmp_path / "run", 10, data=_SignalAt(5 * B, (signal.SIGINT, signal.SIGINT)))
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert latest_dir(tmp_path / "run").name == "nimg_000000064"  # the last periodic one, intact
    assert verify_checkpoint(latest_dir(tmp_path / "run")) is None


def test_cli_exits_130_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Trainer._batch

    def batch(self):
        if self.nimg == 1024:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self)

    monkeypatch.setattr(Trainer, "_batch", batch)
    code, _, err = run(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--train.device", "cpu",
                        "--train.ckpt-every-nimg", "0"])
    assert code == 130 and "interrupted by SIGINT at 1,280 samples" in err and "run the same command" in err
    assert_contract(code, err)
    monkeypatch.setattr(Trainer, "_batch", real)
    code, out, err = run(["train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--train.device", "cpu",
                          "--train.ckpt-every-nimg", "0"])
    assert code == 0 and '"resumed": true' in out, err
