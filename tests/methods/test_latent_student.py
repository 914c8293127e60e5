"""The latent-noise student's two knobs: per-parameter LR multipliers and a non-zero latent-map initialisation.

Why they exist: a zero latent map is a saddle (the output ignores eps, so the expected gradient of the map is
zero); the tests check that saddle, that ``latent_init_std`` leaves it while everything else still starts at the
teacher, and that ``lr_mults`` moves exactly the named parameters faster (Adam's first step is lr * sign(g)).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fewstep.build.runs import load_trained
from fewstep.cli import main
from fewstep.nets.text_dit import TextDiT
from fewstep.train.optim import make_optimizer, set_lr

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class _Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 3)
        self.latent = nn.Linear(3, 3, bias=False)


def test_lr_mults_scale_the_named_parameters_step() -> None:
    torch.manual_seed(0)
    net = _Two()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = make_optimizer(net, "adam", lr=1e-3, eps=1e-12, lr_mults={"latent.weight": 50.0})
    set_lr(opt, 2e-3)  # the trainer's per-step call keeps the multiplier
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([2e-3, 0.1])
    x = torch.randn(16, 3)
    (net.body(x) + net.latent(x)).pow(2).sum().backward()
    opt.step()
    for n, p in net.named_parameters():  # Adam's first step moves every entry by lr * sign(grad)
        step = (p.detach() - before[n]).abs()
        assert torch.allclose(step, torch.full_like(step, 0.1 if n == "latent.weight" else 2e-3), rtol=1e-4), n


def test_lr_mults_keep_the_decay_groups_and_reject_bad_input() -> None:
    net = _Two()
    opt = make_optimizer(net, "adamw", weight_decay=0.1, lr_mults={"latent.weight": 10.0})
    by_key = {(g["weight_decay"], g["lr_mult"]): len(g["params"]) for g in opt.param_groups}
    assert by_key == {(0.1, 1.0): 1, (0.1, 10.0): 1, (0.0, 1.0): 1}  # body.weight | latent.weight | body.bias
    assert opt.param_groups[0]["weight_decay"] == 0.1  # matrices first, as before the multipliers existed
    plain = make_optimizer(net.parameters(), "adamw", weight_decay=0.1)
    assert [len(g["params"]) for g in plain.param_groups] == [2, 1]
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        make_optimizer(net, lr_mults={"nope.weight": 2.0})
    with pytest.raises(ValueError, match="positive finite"):
        make_optimizer(net, lr_mults={"latent.weight": 0.0})
    with pytest.raises(ValueError, match="needs the module"):
        make_optimizer(net.parameters(), lr_mults={"latent.weight": 2.0})


def _latent_grad(net: TextDiT, z: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    net.zero_grad()
    net(z, t, latent=eps).logsumexp(-1).sum().backward()
    return net.latent.weight.grad.detach().clone()


def test_zero_latent_map_is_a_saddle_and_init_std_leaves_it() -> None:
    torch.manual_seed(0)
    z, t = torch.randint(0, 9, (4, 6)), torch.full((4,), 0.5)
    eps = torch.randn(4, 6, 8)
    zero = TextDiT(9, 9, 6, dim=16, depth=1, heads=2, latent_dim=8)
    assert torch.equal(zero(z, t, latent=eps), zero(z, t, latent=-eps))  # the output ignores eps ...
    # ... so the latent map's gradient is odd in eps: its expectation over eps ~ N(0, I) is exactly zero
    assert torch.allclose(_latent_grad(zero, z, t, eps), -_latent_grad(zero, z, t, -eps), atol=1e-6)
    g = _latent_grad(zero, z, t, eps)
    assert g.abs().max() > 1e-4  # (per draw it is noise, not zero)

    torch.manual_seed(0)
    off = TextDiT(9, 9, 6, dim=16, depth=1, heads=2, latent_dim=8, latent_init_std=0.01)
    assert off.latent.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert not torch.allclose(off(z, t, latent=eps), off(z, t, latent=-eps))
    # off the saddle the gradient has an even part: a non-zero mean over +-eps
    even = _latent_grad(off, z, t, eps) + _latent_grad(off, z, t, -eps)
    assert even.abs().max() > 1e-6
    with pytest.raises(ValueError, match="latent_init_std"):
        TextDiT(9, 9, 6, dim=16, depth=1, heads=2, latent_dim=8, latent_init_std=-1.0)


TEACHER = ["--preset", "hmm-mdlm", "--train.total-nimg", "256", "--train.batch-size", "64", "--net.width", "32",
           "--net.depth", "1", "--data.length", "8", "--train.device", "cpu"]


def _distill(teacher: Path, run: Path, *extra: str) -> list[str]:
    return ["distill", "--method", "idlm", "--teacher", str(teacher), "--steps", "2", "--quick", "--run-dir",
            str(run), "--train.device", "cpu", *extra]


def test_latent_knobs_through_the_cli(tmp_path: Path, capsys) -> None:
    teacher = tmp_path / "teacher"
    assert main(["train", *TEACHER, "--run-dir", str(teacher)]) == 0
    _, _, tnets = load_trained(teacher, ema=True)
    teach = tnets["model"].net.state_dict()

    fast = tmp_path / "fast"  # zero init, 100x LR on the latent map
    assert main(_distill(teacher, fast, "--method.latent-dim", "16", "--method.latent-lr-mult", "100")) == 0
    state = torch.load(sorted((fast / "checkpoints").glob("nimg_*"))[-1] / "train_state.pt", weights_only=True)
    groups = state["optimizers"]["student"]["param_groups"]
    assert sorted(g.get("lr_mult", 1.0) for g in groups) == [1.0, 100.0]
    assert [len(g["params"]) for g in groups if g["lr_mult"] == 100.0] == [1]  # the latent map alone
    iters = int(state["nimg"]) // 128
    student = load_trained(fast, ema=False)[2]["student"].net.state_dict()
    # Adam moves an entry by at most ~lr per step: the teacher's weights (lr 1e-5) stay within 2e-5 x iterations,
    # the latent map (from zero, lr 1e-3) goes far beyond that
    assert max((student[k] - teach[k]).abs().max().item() for k in teach) < 2e-5 * iters
    assert student["latent.weight"].abs().max().item() > 1e-4 * iters

    wide = tmp_path / "wide"  # N(0, 0.01) init at the student's own LR
    assert main(_distill(teacher, wide, "--method.latent-dim", "16", "--method.latent-init-std", "0.01",
                         "--method.latent-lr-mult", "1")) == 0
    saved = json.loads((wide / "config.json").read_text())
    assert saved["method"]["latent_init_std"] == 0.01 and saved["method"]["latent_lr_mult"] == 1.0
    student = load_trained(wide, ema=False)[2]["student"].net.state_dict()
    assert student["latent.weight"].std().item() == pytest.approx(0.01, rel=0.2)
    assert max((student[k] - teach[k]).abs().max().item() for k in teach) < 2e-5 * iters
    capsys.readouterr()

    # a latent knob without a latent input is a clear one-line error
    with pytest.raises(SystemExit) as e:
        main(_distill(teacher, tmp_path / "bad", "--method.latent-dim", "0", "--method.latent-lr-mult", "10"))
    assert str(e.value).startswith("error:") and "latent-noise student" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "bad").exists()
