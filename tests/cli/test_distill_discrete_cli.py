"""``fewstep distill --method idlm|dmmd`` end to end on a tiny text-hmm masked teacher (in-process CLI, seconds,
one thread): train -> distill (both methods) -> sample -> resume, and clear one-line errors for mismatched
teacher / method pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fewstep.build.runs import load_trained
from fewstep.cli import main
from fewstep.config import DistillConfig, load_any_config, to_dict
from fewstep.presets import get_preset

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB, LENGTH = 32, 8  # the hmm-mdlm preset's vocabulary; a short sequence for speed
TEACHER = ["--preset", "hmm-mdlm", "--train.total-nimg", "512", "--train.batch-size", "64", "--net.width", "32",
           "--net.depth", "1", "--data.length", str(LENGTH), "--train.device", "cpu"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("discrete") / "teacher"
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *TEACHER, "--run-dir", str(run)]) == 0
    finally:
        torch.set_num_threads(prev)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"]["name"] == "mdlm" and cfg["data"]["vocab"] == VOCAB and cfg["data"]["length"] == LENGTH
    return run


@pytest.mark.parametrize("method", ["idlm", "dmmd"])
def test_distill_sample_and_resume(teacher_dir: Path, tmp_path: Path, capsys, method: str):
    run = tmp_path / method
    cmd = ["distill", "--method", method, "--teacher", str(teacher_dir), "--steps", "4", "--quick", "--run-dir",
           str(run), "--train.device", "cpu"]
    assert main(cmd) == 0
    first = last_json(capsys)
    assert first["run_dir"] == str(run) and not first["resumed"] and first["nimg"] > 0
    logs = first["logs"]
    key = "student/idlm_gap" if method == "idlm" else "student/gen"
    assert key in logs and "aux/loss" in logs
    assert all(isinstance(v, (int, float)) and v == v for v in logs.values() if isinstance(v, (int, float)))

    saved = load_any_config(run)
    assert isinstance(saved, DistillConfig) and saved.method.name == method and saved.method.steps == 4
    assert saved.teacher == str(teacher_dir) and saved.data.length == LENGTH and saved.net.width == 32
    assert saved.discrete is not None and saved.discrete.name == "mdlm"

    cfg, sampler, nets = load_trained(run)
    assert set(nets) == {"student"} and sampler.k == 4
    # masked students get the latent-noise input by default: D-MMD (spec section 4) and IDLM (fewstep.policy)
    assert nets["student"].latent_dim == 64
    if method == "idlm":
        assert (saved.method.latent_dim, saved.method.latent_init_std, saved.method.latent_lr_mult) == (64, 0.0, 1.0)

    assert main(["sample", "--run", str(run), "--steps", "1,4", "--n", "16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "steps=1:" in out and "steps=4:" in out
    names = sorted(p.name for p in (run / "samples").glob("*.safetensors"))
    assert names == ["samples_student_1.safetensors", "samples_student_4.safetensors"]
    for k in (1, 4):
        x = load_file(run / "samples" / f"samples_student_{k}.safetensors")["x"]
        assert x.dtype == torch.int64 and x.shape == (16, LENGTH)
        assert int(x.min()) >= 0 and int(x.max()) < VOCAB  # real tokens only: no mask left
    # the same seed gives the same samples (a pure function of the seeded generator)
    again = tmp_path / "again"
    assert main(["sample", "--run", str(run), "--steps", "4", "--n", "16", "--device", "cpu", "--out",
                 str(again)]) == 0
    capsys.readouterr()
    assert torch.equal(load_file(again / "samples_student_4.safetensors")["x"],
                       load_file(run / "samples" / "samples_student_4.safetensors")["x"])

    # re-running the same command resumes the finished run: nothing to do, no error
    assert main(cmd) == 0
    resumed = last_json(capsys)
    assert resumed["resumed"] and resumed["nimg"] == first["nimg"]
    # a dry run prints the resolved config, equal to the saved one
    assert main([*cmd, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == to_dict(saved)


def test_discrete_method_on_a_gaussian_teacher_is_a_clear_error(tmp_path: Path):
    gauss = tmp_path / "gauss"
    gauss.mkdir()
    (gauss / "config.json").write_text(json.dumps(to_dict(get_preset("tiny"))))
    for method in ("idlm", "dmmd"):
        with pytest.raises(SystemExit) as e:
            main(["distill", "--method", method, "--teacher", str(gauss), "--steps", "4", "--run-dir",
                  str(tmp_path / method)])
        msg = str(e.value)
        assert msg.startswith("error:") and "\n" not in msg and "discrete teacher" in msg and "mm-" in msg
        assert not (tmp_path / method).exists()


@pytest.mark.parametrize("method", ["idlm", "dmmd"])
def test_discrete_method_needs_a_trained_teacher(tmp_path: Path, method: str):
    for extra in (["--teacher", "oracle"], ["--teacher", str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as e:
            main(["distill", "--method", method, *extra, "--steps", "4", "--dry-run"])
        assert str(e.value).startswith("error:") and "\n" not in str(e.value)


def test_mm_method_on_a_discrete_teacher_is_a_clear_error(teacher_dir: Path, tmp_path: Path):
    with pytest.raises(SystemExit) as e:
        main(["distill", "--method", "mm-alternating", "--teacher", str(teacher_dir), "--steps", "2", "--run-dir",
              str(tmp_path / "mm"), "--dry-run"])
    assert str(e.value).startswith("error:") and "idlm" in str(e.value)
