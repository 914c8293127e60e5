"""Trainer: resume determinism, re-run no-op, config guard, crash safety, precision, EMA and LR schedules."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from fewstep.data.source import SamplerSource, TensorSource
from fewstep.data.toys import checkerboard_sample
from fewstep.denoisers import GaussianDenoiser
from fewstep.methods import GaussianDiffusion
from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.nets import MLP
from fewstep.processes import GaussianProcess
from fewstep.schedules import CosineSchedule
from fewstep.train import EMA, ConfigMismatchError, NonFiniteError, Trainer, lr_at
from fewstep.train import checkpoint as ckpt_mod
from fewstep.train.checkpoint import checkpoint_dirs, latest_dir, load_latest
from fewstep.train.logging import read_jsonl, status_line

B = 16  # global batch of the small runs


def _diffusion(seed: int = 0) -> GaussianDiffusion:
    torch.manual_seed(seed)
    return GaussianDiffusion(GaussianDenoiser(MLP(2, width=32, depth=1), GaussianProcess(CosineSchedule())))


def _data() -> SamplerSource:
    return SamplerSource(checkerboard_sample, (2,), name="checkerboard2d")


def _trainer(run_dir: Path, iters: int, *, seed: int = 0, init: int = 0, **kw: object) -> Trainer:
    opts: dict = dict(lr=1e-2, warmup_nimg=3 * B, ema_halflife_nimg=4 * B, ema_rampup=0.5,
                      ckpt_every_nimg=100 * B, log_every_nimg=2 * B, progress=False)
    opts.update(kw)
    return Trainer(_diffusion(init), _data(), run_dir=run_dir, seed=seed, total_nimg=iters * B, batch_size=B,
                   **opts)


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for role in a.nets:
        for (k, x), y in zip(a.nets[role].state_dict().items(), b.nets[role].state_dict().values()):
            assert torch.equal(x, y), f"weights differ: {role}.{k}"
        for (k, x), y in zip(a.ema[role].state_dict().items(), b.ema[role].state_dict().values()):
            assert torch.equal(x, y), f"EMA differs: {role}.{k}"
        sa, sb = a.optimizers[role].state_dict(), b.optimizers[role].state_dict()
        assert sa["param_groups"] == sb["param_groups"]
        for i, state in sa["state"].items():
            for k, v in state.items():
                assert torch.equal(v, sb["state"][i][k]), f"optimizer state differs: {role}[{i}].{k}"


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "a", 10)
    straight.fit()
    _trainer(tmp_path / "b", 5).fit()
    resumed = _trainer(tmp_path / "b", 10, init=123)  # different init: the checkpoint must win
    summary = resumed.fit()
    assert summary["resumed"] and resumed.nimg == straight.nimg == 10 * B
    _assert_same_state(straight, resumed)
    rows = [r for r in read_jsonl(tmp_path / "b" / "log.jsonl") if r["event"] == "train"]
    assert rows[-1]["nimg"] == 10 * B and math.isfinite(rows[-1]["loss"])


def test_rerun_of_finished_run_is_noop(tmp_path: Path) -> None:
    first = _trainer(tmp_path, 4)
    first.fit()
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = _trainer(tmp_path, 4, init=7)
    summary = again.fit()
    assert summary["nimg"] == 4 * B and summary["logs"] == {}
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == files
    _assert_same_state(first, again)


def test_changed_config_is_refused_unless_allowed(tmp_path: Path) -> None:
    _trainer(tmp_path, 2, config={"net": {"width": 32}}).fit()
    with pytest.raises(ConfigMismatchError, match=r"changed: net\.width.*allow_config_change"):
        _trainer(tmp_path, 4, config={"net": {"width": 64}}).fit()
    out = _trainer(tmp_path, 4, config={"net": {"width": 64}}, allow_config_change=True).fit()
    assert out["nimg"] == 4 * B
    assert json.loads((tmp_path / "config.json").read_text()) == {"net": {"width": 64}}
    # the default config records trajectory-defining hyper-parameters, e.g. the learning rate
    _trainer(tmp_path / "d", 2).fit()
    with pytest.raises(ConfigMismatchError, match="lr"):
        _trainer(tmp_path / "d", 2, lr=3e-3).fit()


def test_field_added_at_its_default_is_not_a_change(tmp_path: Path) -> None:
    """An older run's config.json lacks a field a newer version added: at its default it resumes (and the file
    gains the field); at any other value it is a change."""
    defaults = {"net": {"width": 32, "heads": 4}}
    _trainer(tmp_path, 2, config={"net": {"width": 32}}).fit()
    out = _trainer(tmp_path, 4, config={"net": {"width": 32, "heads": 4}}, config_defaults=defaults).fit()
    assert out["nimg"] == 4 * B
    assert json.loads((tmp_path / "config.json").read_text()) == {"net": {"width": 32, "heads": 4}}
    _trainer(tmp_path / "b", 2, config={"net": {"width": 32}}).fit()
    with pytest.raises(ConfigMismatchError, match=r"changed: net\.heads"):
        _trainer(tmp_path / "b", 4, config={"net": {"width": 32, "heads": 8}}, config_defaults=defaults).fit()
    with pytest.raises(ConfigMismatchError, match=r"changed: net\.heads"):  # no defaults known: a change
        _trainer(tmp_path / "b", 4, config={"net": {"width": 32, "heads": 4}}).fit()


def test_defaults_like_follows_the_actual_method() -> None:
    from fewstep.config import MDLMCfg, RunConfig, defaults_like, to_dict

    cfg = RunConfig(method=MDLMCfg())
    d = defaults_like(cfg)
    assert d["method"] == to_dict(MDLMCfg()) and d["train"] == to_dict(cfg.train)
    assert d["net"] == to_dict(cfg.net)


def test_crash_during_save_keeps_latest_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _trainer(tmp_path / "ref", 6, ckpt_every_nimg=3 * B)
    reference.fit()
    real = ckpt_mod.save_weights
    calls = {"n": 0}

    def flaky(path: Path, *args: object, **kw: object) -> Path:
        calls["n"] += 1
        if calls["n"] == 4:  # second checkpoint: model.safetensors written, model.ema.safetensors fails
            raise RuntimeError("disk full")
        return real(path, *args, **kw)

    monkeypatch.setattr(ckpt_mod, "save_weights", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        _trainer(tmp_path / "run", 6, ckpt_every_nimg=3 * B).fit()
    monkeypatch.setattr(ckpt_mod, "save_weights", real)
    root = tmp_path / "run" / "checkpoints"
    assert latest_dir(tmp_path / "run").name == f"nimg_{3 * B:09d}"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no partial directory left
    assert load_latest(tmp_path / "run").nimg == 3 * B
    resumed = _trainer(tmp_path / "run", 6, ckpt_every_nimg=3 * B)
    assert resumed.fit()["resumed"]
    _assert_same_state(reference, resumed)


def test_max_seconds_stops_with_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    stopped = _trainer(tmp_path, 6, max_seconds=1e-9)
    out = stopped.fit()
    assert out["nimg"] == B and load_latest(tmp_path).nimg == B
    assert load_latest(tmp_path).train_state["train_seconds"] == pytest.approx(stopped.train_seconds)
    finished = _trainer(tmp_path, 6)
    finished.fit()
    assert finished.nimg == 6 * B and finished.train_seconds >= stopped.train_seconds


def test_evaluators_see_ema_nets_and_are_logged(tmp_path: Path) -> None:
    seen = []

    def evaluator(method: Method, nets: dict[str, nn.Module], nimg: int) -> dict[str, float]:
        seen.append((nimg, sorted(nets), nets["model"].training))
        return {"param_sum": float(sum(p.sum() for p in nets["model"].parameters()))}

    out = _trainer(tmp_path, 4, eval_every_nimg=2 * B, evaluators=[evaluator]).fit()
    assert seen == [(2 * B, ["model"], False), (4 * B, ["model"], False)]
    evals = [r for r in read_jsonl(tmp_path / "log.jsonl") if r["event"] == "eval"]
    assert [r["nimg"] for r in evals] == [2 * B, 4 * B] and out["eval"]["param_sum"] == evals[-1]["param_sum"]
    env = json.loads((tmp_path / "env.json").read_text())
    assert {"torch", "numpy", "python", "git_sha", "hostname", "device"} <= set(env)


# ------------------------------------------------------------------------------------ tiny test methods
class _Probe(Method):
    """Regression of sin(3x) with two roles in two phases; records dtypes and autocast state."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)
        self.teacher = nn.Linear(2, 2)
        self.seen: list[tuple[str, torch.dtype, bool, bool]] = []

    def trainable(self) -> dict[str, nn.Module]:
        return {"a": self.a, "b": self.b}

    def frozen(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def phases(self) -> tuple[Phase, ...]:
        return (Phase("pa", ("a",)), Phase("pb", ("b",), every=2))

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        y = nets["a"](x) + nets["b"](x) + nets["teacher"](x)
        teacher_grad = nets["teacher"].weight.requires_grad
        self.seen.append((phase, y.dtype, torch.is_autocast_enabled("cpu"), teacher_grad))
        loss = ((y - torch.sin(3 * x)) ** 2).mean()
        return LossOutput(loss, {"loss": loss.detach()})

    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, **options: object) -> Tensor:
        raise NotImplementedError


def _probe_trainer(run_dir: Path, iters: int, **kw: object) -> Trainer:
    data = TensorSource(torch.randn(64, 2, generator=torch.Generator().manual_seed(0)))
    opts: dict = dict(ema_halflife_nimg=0, log_every_nimg=B, ckpt_every_nimg=0, progress=False)
    opts.update(kw)
    return Trainer(_Probe(), data, run_dir=run_dir, seed=0, total_nimg=iters * B, batch_size=B, **opts)


def test_bf16_precision_runs_fp32_on_cpu(tmp_path: Path) -> None:
    trainer = _probe_trainer(tmp_path, 2, precision="bf16")
    trainer.fit()
    assert trainer.method.seen and all(d == torch.float32 and not ac for _, d, ac, _ in trainer.method.seen)
    assert not any(grad for *_, grad in trainer.method.seen)  # frozen role: no grad
    assert trainer.method.teacher.weight.grad is None
    with pytest.raises(ValueError, match="precision"):
        _probe_trainer(tmp_path / "x", 1, precision="fp16")


def test_phases_every_and_per_role_optimizer(tmp_path: Path) -> None:
    trainer = _probe_trainer(tmp_path, 3, per_role_optim={"b": {"lr": 0.5, "betas": [0.5, 0.9]}})
    before_b = trainer.nets["b"].weight.detach().clone()
    logs = trainer.fit()["logs"]
    assert [p for p, *_ in trainer.method.seen] == ["pa", "pb", "pa", "pa", "pb"]
    assert trainer.optimizers["b"].param_groups[0]["lr"] == 0.5
    assert trainer.optimizers["b"].param_groups[0]["betas"] == (0.5, 0.9)
    assert trainer.optimizers["a"].param_groups[0]["lr"] == 1e-3
    assert int(trainer.optimizers["b"].state_dict()["state"][0]["step"]) == 2  # stepped on iterations 0, 2
    assert int(trainer.optimizers["a"].state_dict()["state"][0]["step"]) == 3
    assert not torch.equal(before_b, trainer.nets["b"].weight)
    assert {"pa/loss", "pb/loss", "grad_norm/a", "lr/b"} <= set(logs)
    with pytest.raises(ValueError, match="unknown roles"):
        _probe_trainer(tmp_path / "x", 1, per_role_optim={"c": {"lr": 1.0}})
    with pytest.raises(ValueError, match="per-role optimizer setting"):
        _probe_trainer(tmp_path / "y", 1, per_role_optim={"a": {"momentum": 1.0}})


def test_gradient_accumulation_matches_full_batch(tmp_path: Path) -> None:
    full = _probe_trainer(tmp_path / "full", 3, grad_clip=0.0)
    full.fit()
    accum = _probe_trainer(tmp_path / "accum", 3, grad_clip=0.0, micro_batch=B // 4)
    accum.fit()
    assert accum.accum == 4
    for role in full.nets:
        for x, y in zip(full.nets[role].parameters(), accum.nets[role].parameters()):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_nonfinite_steps_are_skipped_and_never_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN losses: no optimizer step (the weights stay as they were) and, as the run ends on such steps, no
    checkpoint (more in tests/robustness/test_nonfinite.py)."""
    trainer = _probe_trainer(tmp_path, 2)
    before = {r: [p.detach().clone() for p in n.parameters()] for r, n in trainer.nets.items()}
    original = _Probe.loss

    def nan_loss(self: _Probe, *args: object, **kw: object) -> LossOutput:
        out = original(self, *args, **kw)
        return LossOutput(out.loss * float("nan"), out.logs)

    monkeypatch.setattr(_Probe, "loss", nan_loss)
    with pytest.raises(NonFiniteError, match="2 skipped steps"):
        trainer.fit()
    assert latest_dir(tmp_path) is None
    for role, net in trainer.nets.items():
        for x, y in zip(before[role], net.parameters()):
            assert torch.equal(x, y)


def test_batch_not_divisible_by_micro_batch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="micro_batch"):
        _probe_trainer(tmp_path, 1, micro_batch=5)


# --------------------------------------------------------------------------------------------- EMA / LR
def test_ema_beta_formula_and_halflife_zero() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 3)
    ema = EMA(net, halflife_nimg=100)
    start = ema.module.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    beta = ema.update(net, batch_nimg=10, nimg=10)
    assert beta == pytest.approx(0.5 ** (10 / 100))
    torch.testing.assert_close(ema.module.weight, beta * start + (1 - beta) * net.weight)
    assert not ema.module.training and not ema.module.weight.requires_grad
    assert EMA(net, 100, rampup_ratio=0.5).beta(10, nimg=40) == pytest.approx(0.5 ** (10 / 20))
    copy = EMA(nn.Linear(3, 3), halflife_nimg=0)
    copy.update(net, batch_nimg=10, nimg=10)
    assert torch.equal(copy.module.weight, net.weight) and torch.equal(copy.module.bias, net.bias)


def test_lr_schedule_values() -> None:
    kw = dict(base_lr=1.0, warmup_nimg=100, total_nimg=1100)
    assert lr_at(50, **kw) == pytest.approx(0.5)
    assert lr_at(100, **kw) == lr_at(5000, **kw) == 1.0
    assert lr_at(600, decay="linear", **kw) == pytest.approx(0.5)
    assert lr_at(600, decay="linear", final_ratio=0.1, **kw) == pytest.approx(0.55)
    assert lr_at(350, decay="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(600, decay="cosine", **kw) == pytest.approx(0.5)
    assert lr_at(1100, decay="cosine", final_ratio=0.1, **kw) == pytest.approx(0.1)
    assert lr_at(9999, decay="linear", final_ratio=0.1, **kw) == pytest.approx(0.1)
    assert lr_at(50, decay="cosine", **kw) == pytest.approx(0.5)  # warm-up first
    with pytest.raises(ValueError, match="decay"):
        lr_at(1, decay="step", **kw)


def test_status_line_format() -> None:
    line = status_line(12800, {"loss": 0.123}, lr=1e-3, sec_per_kimg=0.42, elapsed=83)
    assert line == "nimg 12.8k  loss 0.123  lr 0.001  sec/kimg 0.42  elapsed 00:01:23"


def test_checkpoints_are_pruned(tmp_path: Path) -> None:
    _trainer(tmp_path, 6, ckpt_every_nimg=B, keep=2).fit()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == [f"nimg_{5 * B:09d}", f"nimg_{6 * B:09d}"]
