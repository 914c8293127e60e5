"""Resume that fits practice: a moved run folder or a longer run continues; other changes are refused with every
differing field in one line; a folder without a checkpoint is a fresh run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from _cli import assert_contract, run

TINY = ["train", "--preset", "tiny", "--train.device", "cpu"]


def _weights(run_dir: Path) -> dict:
    from fewstep.train.checkpoint import load_latest

    return load_latest(run_dir).weights["model"]


def test_moved_folder_and_longer_run_continue(tmp_path: Path) -> None:
    assert run([*TINY, "--run-dir", str(tmp_path / "a")])[0] == 0
    shutil.move(tmp_path / "a", tmp_path / "b")
    code, out, err = run([*TINY, "--run-dir", str(tmp_path / "b")])  # run_dir differs from config.json's
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["resumed"], err
    code, out, err = run([*TINY, "--run-dir", str(tmp_path / "b"), "--train.total-nimg", "4096"])
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and summary["resumed"] and summary["nimg"] == 4096, err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["total_nimg"] == 4096


def test_other_changes_are_refused_listing_every_field(tmp_path: Path) -> None:
    assert run([*TINY, "--run-dir", str(tmp_path / "a")])[0] == 0
    before = _weights(tmp_path / "a")
    code, _, err = run([*TINY, "--run-dir", str(tmp_path / "a"), "--train.lr", "0.5", "--net.width", "16"])
    assert code == 1 and "changed: net.width, train.lr" in err
    assert_contract(code, err)
    assert all(torch.equal(before[k], v) for k, v in _weights(tmp_path / "a").items())


def test_invalid_value_writes_nothing_and_a_folder_without_checkpoint_is_fresh(tmp_path: Path) -> None:
    code, _, err = run([*TINY, "--run-dir", str(tmp_path / "a"), "--train.batch-size", "0"])
    assert code != 0 and "--train.batch-size must be > 0, got 0" in err and not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(json.dumps({"left": "over"}))  # e.g. an aborted first try
    code, out, err = run([*TINY, "--run-dir", str(tmp_path / "a")])
    assert code == 0 and not json.loads(out.strip().splitlines()[-1])["resumed"], err


def test_a_run_folder_that_is_a_file_and_an_imm_teacher_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    code, _, err = run([*TINY, "--run-dir", str(tmp_path / "f")])
    assert code == 1 and "the run folder" in err and "is a file" in err
    assert_contract(code, err)
    assert run(["train", "--preset", "imm-checkerboard", "--train.total-nimg", "1024", "--train.batch-size", "256",
                "--train.device", "cpu", "--run-dir", str(tmp_path / "imm")])[0] == 0
    code, _, err = run(["distill", "--teacher", str(tmp_path / "imm"), "--method", "mm-alternating", "--steps", "2"])
    assert code == 1 and "is an IMM run" in err
    assert_contract(code, err)
