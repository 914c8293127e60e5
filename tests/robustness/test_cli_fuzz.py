"""Property-based fuzzing of CLI values (hypothesis): every outcome of train / sample / distill / eval is either
success or one ``error:`` line with a non-zero status, never a traceback, and an invalid training run writes
nothing (so the corrected command is not refused as a changed config)."""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path

import pytest
from _cli import assert_contract, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

INTS = st.one_of(st.integers(-3, 600), st.sampled_from([0, -1, -5]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, -1.0, 1e6, 1e-12, math.nan, math.inf]))
TRAIN_FIELDS = {
    "--train.batch-size": INTS, "--train.total-nimg": st.integers(-3, 1024), "--train.lr": FLOATS,
    "--train.ema-halflife-nimg": INTS, "--train.grad-clip": FLOATS, "--train.warmup-nimg": INTS,
    "--train.eps": FLOATS, "--net.width": st.integers(-2, 48), "--net.depth": st.integers(-2, 3),
    "--process.sigma-data": FLOATS, "--train.seed": INTS,
}
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _args(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in (k, str(v))]


@FUZZ
@given(st.sets(st.sampled_from(sorted(TRAIN_FIELDS)), min_size=1, max_size=3).flatmap(
    lambda keys: st.fixed_dictionaries({k: TRAIN_FIELDS[k] for k in sorted(keys)})))
def test_train_values(values: dict) -> None:
    run_dir = Path(tempfile.mkdtemp()) / "run"
    try:
        code, _, err = run(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--train.device", "cpu",
                            "--train.ckpt-every-nimg", "0", *_args(values)])
        assert_contract(code, err)
        if code != 0 and "non-finite" not in err:  # refused before training: nothing written
            assert not (run_dir / "config.json").exists(), err
    finally:
        shutil.rmtree(run_dir.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    code, _, err = run(["train", "--preset", "tiny", "--run-dir", str(run_dir), "--train.device", "cpu"])
    assert code == 0, err
    return run_dir


STEPS = st.sampled_from(["0", "-1", "1,2", "abc", "4", "1,,2", ",", "3"])


@FUZZ
@given(n=st.integers(-3, 40), steps=STEPS, seed=st.integers(-2, 5), temperature=FLOATS,
       sampler=st.sampled_from([None, "ddim", "pushforward", "greedy"]))
def test_sample_values(tiny_run: Path, n: int, steps: str, seed: int, temperature: float, sampler) -> None:
    out = Path(tempfile.mkdtemp())
    try:
        extra = ["--sampler", sampler] if sampler else []
        code, _, err = run(["sample", "--run", str(tiny_run), "--n", str(n), "--steps", steps, "--seed", str(seed),
                            "--temperature", str(temperature), "--out", str(out), "--device", "cpu", *extra])
        assert_contract(code, err)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@FUZZ
@given(steps=STEPS, lr=FLOATS, batch=INTS, method=st.sampled_from(["mm-alternating", "mm-instant", "idlm", "x"]))
def test_distill_values(steps: str, lr: float, batch: int, method: str) -> None:
    code, _, err = run(["distill", "--teacher", "oracle", "--method", method, "--steps", steps, "--train.lr",
                        str(lr), "--train.batch-size", str(batch), "--dry-run"])
    assert_contract(code, err)


@FUZZ
@given(n=st.integers(-3, 64), samples=st.sampled_from(["absent.safetensors", "garbage", "config"]),
       dataset=st.sampled_from(["gmm8d", "checkerboard2d", "digits8x8"]))
def test_eval_values(tiny_run: Path, n: int, samples: str, dataset: str) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "garbage").write_bytes(b"\x00not safetensors")
        path = tiny_run / "config.json" if samples == "config" else folder / samples
        code, _, err = run(["eval", "--samples", str(path), "--dataset", dataset, "--n", str(n)])
        assert_contract(code, err)
        assert code != 0  # none of these is a samples file
        code, _, err = run(["eval", "--run", str(tiny_run), "--steps", "2", "--n", str(n), "--dataset", dataset])
        assert_contract(code, err)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
