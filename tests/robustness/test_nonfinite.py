"""Non-finite guard: a NaN batch is skipped and counted; a streak of max_nonfinite_steps stops the run with a
non-zero exit, and the last good checkpoint stays intact and the latest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _cli import assert_contract, run
from _runs import B, trainer

from fewstep.data.source import SamplerSource
from fewstep.data.toys import checkerboard_sample
from fewstep.train import NonFiniteError
from fewstep.train.checkpoint import latest_dir, load_latest, verify_checkpoint


class _NaNAfter(SamplerSource):
    """The checkerboard, with NaN batches at positions in ``bad`` (a range of nimg)."""

    def __init__(self, bad: range) -> None:
        super().__init__(checkerboard_sample, (2,), name="checkerboard2d")
        self.bad = bad

    def batch(self, start: int, size: int, *, seed: int = 0):
        out = super().batch(start, size, seed=seed)
        if start in self.bad:
            out["x"] = torch.full_like(out["x"], float("nan"))
        return out


def test_a_nan_batch_is_skipped_and_counted(tmp_path: Path) -> None:
    t = trainer(tmp_path / "run", 8, data=_NaNAfter(range(3 * B, 4 * B)))
    t.fit()
    assert t.nonfinite_steps == 1
    assert all(bool(p.isfinite().all()) for n in t.nets.values() for p in n.parameters())
    assert load_latest(tmp_path / "run").train_state["nonfinite_steps"] == 1


def test_a_streak_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    t = trainer(tmp_path / "run", 40, data=_NaNAfter(range(10 * B, 10**9)), max_nonfinite_steps=5)
    with pytest.raises(NonFiniteError, match=r"5 steps in a row .*nimg_000000128 is kept") as e:
        t.fit()
    assert "\n" not in str(e.value)
    good = latest_dir(tmp_path / "run")
    assert good.name == "nimg_000000128" and verify_checkpoint(good) is None  # saved before the NaNs, intact
    assert all(bool(v.isfinite().all()) for v in load_latest(tmp_path / "run").weights["model"].values())


def test_cli_lr_1e6_exits_nonzero_with_one_line_and_writes_no_nan_checkpoint(tmp_path: Path) -> None:
    code, out, err = run(["train", "--preset", "tiny", "--train.lr", "1e6", "--run-dir", str(tmp_path / "r"),
                          "--train.device", "cpu"])
    assert code == 1 and "non-finite" in err
    assert_contract(code, err)
    assert latest_dir(tmp_path / "r") is None  # no checkpoint of NaN (or exploded) weights
