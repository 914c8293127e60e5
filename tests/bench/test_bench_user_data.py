"""``fewstep bench data``: the bench on a user's own data (teacher, oracle, MM, IMM, IDLM) end to end, quick."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fewstep.cli import main

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_bench_on_a_mixture_file_has_teacher_oracle_and_students(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = {"weights": [0.4, 0.6], "means": [[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]], "covariances": [0.2, 0.3]}
    Path("mix.json").write_text(json.dumps(spec))
    assert main(["bench", "data", "--data.name", "gmm", "--data.root", "mix.json", "--methods",
                 "teacher,oracle,mm-alternating,imm", "--steps", "2", "--teacher-nfe", "1,4", "--quick",
                 "--repeats", "2", "--out", "out"]) == 0
    rows = _rows(Path("out"))
    methods = {(r["method"], r.get("teacher")) for r in rows if r["metric"] == "energy"}
    assert {("data", None), ("teacher", None), ("oracle", None), ("mm-alternating", "trained"),
            ("mm-alternating", "oracle"), ("imm", None)} <= methods
    assert all(r["dataset"] == "data" and r["options"]["data"]["name"] == "gmm" for r in rows)
    assert {"log_density", "mode_weights_tv"} <= {r["metric"] for r in rows}
    oracle16 = [r for r in rows if r["method"] == "oracle" and r["nfe"] == 4 and r["metric"] == "energy"]
    one = [r for r in rows if r["method"] == "oracle" and r["nfe"] == 1 and r["metric"] == "energy"]
    assert oracle16[0]["value"] < one[0]["value"]  # the exact teacher improves with steps


def test_bench_on_token_ids_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("ids.npy", np.random.default_rng(0).integers(0, 6, size=3000))
    assert main(["bench", "data", "--data.name", "tokens", "--data.root", "ids.npy", "--data.length", "8",
                 "--methods", "teacher,idlm", "--processes", "masked", "--steps", "2", "--teacher-nfe", "2",
                 "--quick", "--repeats", "1", "--min-repeats", "1", "--out", "out"]) == 0
    rows = _rows(Path("out"))
    assert {r["method"] for r in rows} == {"data", "teacher", "idlm"}
    assert {"bigram_tv", "entropy"} <= {r["metric"] for r in rows}
    with pytest.raises(SystemExit, match="needs --data.name NAME --data.root PATH"):
        main(["bench", "data", "--methods", "teacher", "--quick", "--out", "o2"])
    with pytest.raises(SystemExit, match="suite 'toy' has fixed datasets"):
        main(["bench", "toy", "--data.name", "gmm", "--data.root", "x.json", "--out", "o3"])
    with pytest.raises(SystemExit, match="does not read --data.seed; its settings are --data.grid"):
        main(["bench", "grid2d", "--data.seed", "2", "--out", "o4"])  # never silently ignored
    with pytest.raises(SystemExit, match="generates text-hmm data"):
        main(["bench", "text-hmm", "--data.name", "tokens", "--data.root", "ids.npy", "--out", "o5"])


def test_bench_on_another_text_hmm_source(tmp_path, monkeypatch):
    """--data.* overrides of a generated suite: another HMM (seed 3, 16 tokens) with the suite's teacher preset,
    scored by its exact likelihood (the same as 'bench data --data.name text-hmm --data.seed 3 ...')."""
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "text-hmm", "--data.seed", "3", "--data.length", "16",
                 "--methods", "teacher", "--processes", "masked", "--teacher-nfe", "4", "--quick", "--repeats", "1",
                 "--min-repeats", "1", "--out", "out"]) == 0
    rows = _rows(Path("out"))
    assert {"oracle_nll", "entropy"} <= {r["metric"] for r in rows}
    assert [p.name for p in Path("out/runs").iterdir()] == ["hmm-mdlm-teacher-hmm-v32-l16-s3-quick"]
    assert rows[0]["options"]["data"]["seed"] == 3 and rows[0]["command"].startswith("fewstep bench text-hmm")


def _fake_mnist(root: Path, n_train: int = 256, n_test: int = 128) -> None:
    """MNIST-format IDX files (28 x 28 uint8) of two shapes of strokes, labels 0/1, under ``root``."""
    import gzip

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 2, n).astype(np.uint8)
        imgs = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(labels):
            r = rng.integers(6, 20)
            if c:
                imgs[i, r:r + 3, 4:24] = 255  # a horizontal bar
            else:
                imgs[i, 4:24, r:r + 3] = 255  # a vertical bar
        with gzip.open(root / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28)) + imgs.tobytes())
        with gzip.open(root / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


@pytest.mark.slow  # about a minute on 2 cores: the image students' warm start and IMM
def test_mnist14_suite_runs_teacher_mm_and_imm(tmp_path, monkeypatch):
    """The mnist14 suite end to end (quick) on MNIST-format files: 14 x 14 teacher, MM and IMM rows, fd_mnist14."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    _fake_mnist(tmp_path / "data")
    monkeypatch.setenv("FEWSTEP_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path / "cache"))
    assert main(["bench", "mnist14", "--methods", "teacher,mm-alternating,imm", "--steps", "1", "--teacher-nfe",
                 "1,4", "--samplers", "ddim", "--quick", "--repeats", "1", "--min-repeats", "1", "--out", "out"]) == 0
    rows = _rows(Path("out"))
    assert {r["method"] for r in rows} == {"data", "teacher", "mm-alternating", "imm"}
    fd = {(r["method"], r["nfe"]): r["value"] for r in rows if r["metric"] == "fd_mnist14"}
    assert fd[("data", 0)] < fd[("teacher", 1)]  # real images beat a 1-step teacher in the classifier's features
    assert Path("out/quality_vs_nfe_mnist14.png").is_file()
