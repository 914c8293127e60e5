"""``fewstep distill`` and the MM bench providers end to end on tiny configs (seconds, one thread)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fewstep.bench.runner import BenchOptions, run_bench
from fewstep.build.runs import DistilledStudent, load_trained
from fewstep.cli import main
from fewstep.config import DISTILL_TRAIN, DistillConfig, load_any_config, to_dict
from fewstep.methods.mm import MM_OPTIM

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TINY = ["--train.total-nimg", "1024", "--train.batch-size", "256", "--train.warmup-nimg", "256",
        "--train.ckpt-every-nimg", "512", "--train.log-every-nimg", "512"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_distill_defaults_are_mm_optim():
    assert DISTILL_TRAIN.optimizer == MM_OPTIM["optimizer"] and tuple(DISTILL_TRAIN.betas) == MM_OPTIM["betas"]
    assert DISTILL_TRAIN.eps == MM_OPTIM["eps"] and DISTILL_TRAIN.ema_halflife_nimg == 0
    assert DISTILL_TRAIN.lr == 1e-4 and DISTILL_TRAIN.lr_decay == "linear" and DISTILL_TRAIN.warmup_nimg > 0


def test_dry_run_prints_resolved_config(capsys):
    assert main(["distill", "--method", "mm-instant", "--teacher", "oracle", "--steps", "2", "--dry-run",
                 "--train.lr", "3e-5", "--method.renoise", "fresh"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["teacher"] == "oracle" and cfg["data"]["name"] == "gmm8d"
    m = cfg["method"]
    assert (m["name"], m["mode"], m["steps"], m["renoise"]) == ("mm", "instant", 2, "fresh")
    assert m["weighting"] == "edm"  # resolved: the teacher's training weighting
    assert cfg["train"]["lr"] == 3e-5 and cfg["train"]["betas"] == [0.0, 0.99] and cfg["train"]["eps"] == 1e-12
    assert cfg["run_dir"] == "runs/gmm8d-oracle-mm-instant-k2"


@pytest.mark.parametrize("args, message", [
    (["--teacher", "oracle", "--preset", "tiny"], "Gaussian mixtures only"),
    (["--teacher", "oracle", "--data.name", "spiral2d"], "Gaussian mixtures only"),
    (["--steps", "2"], "--teacher"),
    (["--teacher", "oracle", "--method", "mm-foo"], "unknown distillation method"),
    (["--teacher", "oracle", "--steps", "1,2"], "one student per --steps"),
])
def test_clear_errors(args, message):
    with pytest.raises(SystemExit) as e:
        main(["distill", *args, "--dry-run"])
    assert message in str(e.value) and str(e.value).startswith("error:")


def test_distill_resume_sample_from_tiny_teacher(tmp_path: Path, capsys):
    teacher, run = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", "--preset", "tiny", "--run-dir", str(teacher)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit, match="belongs to a distillation run|not a distillation run|no config"):
        main(["distill", "--config", str(teacher), "--dry-run"])
    cmd = ["distill", "--method", "mm-alternating", "--teacher", str(teacher), "--steps", "2", "--run-dir", str(run),
           *TINY]
    assert main(cmd) == 0
    first = last_json(capsys)
    assert first["nimg"] == 1024 and not first["resumed"] and "student/moment_gap" in first["logs"]
    saved = json.loads((run / "config.json").read_text())
    assert saved["teacher"] == str(teacher) and saved["net"]["width"] == 32 and saved["method"]["steps"] == 2
    assert main(cmd) == 0  # re-running resumes a finished run: nothing to do
    again = last_json(capsys)
    assert again["resumed"] and again["nimg"] == first["nimg"]
    with pytest.raises(SystemExit, match="config"):  # a changed config is refused
        main([*cmd, "--train.lr", "0.5"])
    with pytest.raises(SystemExit, match="come from the teacher"):  # the student copies its teacher's net
        main([*cmd, "--net.width", "64", "--dry-run"])
    assert main(["distill", "--config", str(run / "config.json"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == saved
    with pytest.raises(SystemExit, match="distill --config"):  # train refuses a distillation config
        main(["train", "--config", str(run), "--dry-run"])

    cfg, sampler, nets = load_trained(run)
    assert isinstance(cfg, DistillConfig) and isinstance(sampler, DistilledStudent) and sampler.k == 2
    assert set(nets) == {"student"}
    assert main(["sample", "--run", str(run), "--n", "64", "--device", "cpu"]) == 0  # default: the student's k
    assert sorted(p.name for p in (run / "samples").glob("*.safetensors")) == ["samples_student_2.safetensors"]
    x = load_file(run / "samples" / "samples_student_2.safetensors")["x"]
    assert x.shape == (64, 2) and bool(x.isfinite().all())
    assert main(["sample", "--run", str(run), "--n", "16", "--steps", "1", "--device", "cpu"]) == 0
    assert "distilled for 2 steps" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="its own 2-step sampler"):  # never silently ignored
        main(["sample", "--run", str(run), "--n", "16", "--sampler", "ddim", "--device", "cpu"])

    inst = tmp_path / "instant"
    assert main(["distill", "--method", "mm-instant", "--teacher", str(teacher), "--steps", "1", "--run-dir",
                 str(inst), *TINY]) == 0
    assert "g_norm" in last_json(capsys)["logs"]  # one phase: no prefix
    assert load_any_config(inst).method.mode == "instant"


def test_oracle_distill_caches_regressed_net(tmp_path: Path, capsys):
    run = tmp_path / "oracle"
    cmd = ["distill", "--teacher", "oracle", "--steps", "2", "--quick", "--run-dir", str(run),
           "--net.width", "32", "--net.depth", "1", "--method.oracle-regress-steps", "20", *TINY]
    assert main(cmd) == 0
    cache = run / "teacher_regressed.safetensors"
    assert cache.is_file() and last_json(capsys)["nimg"] == 1024
    stamp = cache.stat().st_mtime_ns
    assert main([*cmd, "--train.total-nimg", "1536", "--allow-config-change"]) == 0  # resumes, reuses the cache
    assert last_json(capsys)["nimg"] == 1536 and cache.stat().st_mtime_ns == stamp
    cfg = load_any_config(run)
    assert cfg.net.width == 32 and to_dict(cfg)["method"]["oracle_regress_steps"] == 20


def test_quick_bench_mm_rows(tmp_path: Path):
    opts = BenchOptions(suite="toy", methods=("mm-alternating",), datasets=("gmm8d",), quick=True, steps=(1, 2),
                        teacher_nfe=(1,), device="cpu", out=str(tmp_path))
    rows = [r for r in run_bench(opts, log=lambda s: None) if r["method"] != "data"]
    assert {(r["teacher"], r["steps"]) for r in rows} == {("trained", 1), ("trained", 2), ("oracle", 1), ("oracle", 2)}
    for r in rows:
        assert r["method"] == "mm-alternating" and r["sampler"] == "student" and r["nfe"] == r["steps"]
        assert r["process"] == "gaussian" and r["train_seconds"] > 0
    assert all(r["init_seconds"] >= 0 for r in rows if r["teacher"] == "oracle")
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert "gmm8d-oracle-quick-mm-alternating-k2" in runs and "gmm8d-teacher-quick-mm-alternating-k1" in runs


def test_instant_resume_restores_the_preconditioner(tmp_path: Path, capsys):
    """A run resumed from its mid-way checkpoint ends bit-identical to an uninterrupted one: the EMA
    preconditioner (outside every network) travels in the checkpoint's train_state."""
    teacher = tmp_path / "teacher"
    assert main(["train", "--preset", "tiny", "--run-dir", str(teacher)]) == 0
    finals = []
    for name, interrupt in (("straight", False), ("resumed", True)):
        run = tmp_path / name
        cmd = ["distill", "--method", "mm-instant", "--teacher", str(teacher), "--steps", "2", "--run-dir",
               str(run), *TINY]
        assert main(cmd) == 0
        ckpts = run / "checkpoints"
        if interrupt:  # as if killed right after the 512-sample checkpoint: drop the final one
            mid = sorted(p.name for p in ckpts.glob("nimg_*"))[0]
            assert mid == "nimg_000000512"
            state = torch.load(ckpts / mid / "train_state.pt", weights_only=True)
            assert state["method_state"]["precond"]["count"] == 2  # 512 samples / batch 256
            shutil.rmtree(ckpts / "nimg_000001024")
            (ckpts / "latest").write_text(mid)
            assert main(cmd) == 0
            assert last_json(capsys)["resumed"]
        finals.append(load_file(ckpts / "nimg_000001024" / "student.safetensors"))
    capsys.readouterr()
    assert finals[0].keys() == finals[1].keys()
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


def test_bench_distill_options_name_runs_and_reject_bad_fields(tmp_path: Path):
    from fewstep.bench.context import BenchContext
    from fewstep.bench.providers_mm import distill_overrides, mm_config

    assert distill_overrides((("renoise", "fresh"), ("aux_lr", "3e-4"))) == ({"renoise": "fresh", "aux_lr": 3e-4}, {})
    assert distill_overrides((("train.ema_halflife_nimg", "25600"),)) == ({}, {"ema_halflife_nimg": 25600})
    with pytest.raises(ValueError, match="not a settable Train option"):
        distill_overrides((("train.total_nimg", "5"),))  # the length is --distill-scale's
    with pytest.raises(ValueError, match="not a settable MM option"):
        distill_overrides((("steps", "3"),))
    with pytest.raises(ValueError, match="not a settable MM option"):
        distill_overrides((("renosie", "fresh"),))
    opts = BenchOptions(suite="toy", distill_set=(("renoise", "fresh"),), distill_seed=2, distill_scale=0.5)
    ctx = BenchContext(options=opts, dataset="gmm8d", device=torch.device("cpu"), runs_dir=tmp_path)
    cfg = mm_config(ctx, "mm-alternating", 4, "oracle")
    assert cfg.method.renoise == "fresh" and cfg.train.seed == 2
    assert cfg.train.total_nimg == DISTILL_TRAIN.total_nimg // 2
    assert Path(cfg.run_dir).name == "gmm8d-oracle-d0.5-renoise=fresh-seed2-mm-alternating-k4"
    opts = BenchOptions(suite="toy", distill_set=(("train.ema_halflife_nimg", "25600"),))
    cfg = mm_config(BenchContext(options=opts, dataset="gmm8d", device=torch.device("cpu"), runs_dir=tmp_path),
                    "mm-alternating", 8, "oracle")
    assert cfg.train.ema_halflife_nimg == 25600
    assert Path(cfg.run_dir).name == "gmm8d-oracle-train.ema_halflife_nimg=25600-mm-alternating-k8"
    with pytest.raises(ValueError, match="distill teachers"):
        run_bench(BenchOptions(suite="toy", distill_teachers=("teacher",), out=str(tmp_path / "b")))
