"""Label dropout (the null label of classifier-free guidance) in teacher and IMM training, the refusal of guidance
without it, and IMM's guidance of the network output."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from _shared import F64, gen, gmm2d
from fewstep.build.distill_config import check_guidance_teacher, resolve_distill
from fewstep.build.models import resolve_label_dropout
from fewstep.build.runs import load_trained
from fewstep.cli import main
from fewstep.config import DistillConfig, IMMCfg, MMCfg, NetCfg, RunConfig, load_config, to_dict
from fewstep.data.toys import GMM, GMMOracle
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.denoisers.imm import IMMMap, map_coefficients
from fewstep.methods.diffusion import GaussianDiffusion, drop_labels
from fewstep.methods.imm import InductiveMomentMatching
from fewstep.nets.mlp import MLP
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers.imm import imm_grid, sample_imm
from fewstep.schedules import CosineSchedule, FlowSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")
K = 3  # classes of gmm2d (its components)


# ------------------------------------------------------------------------------ teacher: the null branch
def _train_teacher(p: float, steps: int = 400, seed: int = 0) -> GaussianDenoiser:
    """A conditional MLP teacher on gmm2d (component = class) with label dropout p, plain Adam."""
    gmm, proc = gmm2d(), GaussianProcess(CosineSchedule(), sigma_data=1.5)
    torch.manual_seed(seed)
    net = GaussianDenoiser(MLP(2, width=64, depth=2, num_classes=K), proc)
    m = GaussianDiffusion(net, conditional=True, num_classes=K, label_dropout=p)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = gen(seed + 1)
    for _ in range(steps):
        x, y = gmm.sample(256, generator=g, return_labels=True)
        loss = m.loss("main", {"x": x.float(), "label": y}, {"model": net}, g).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _rel_err(net: GaussianDenoiser, label: int, oracle: nn.Module) -> float:
    """E||D(z, t, label) - oracle(z, t)||^2 / E||oracle(z, t)||^2 over noisy gmm2d data, t ~ U(0.2, 0.8)."""
    g, n, sched = gen(123), 2048, net.process.schedule
    x = gmm2d().sample(n, generator=g)
    t = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=F64)
    o = sched(t)
    z = o.alpha[:, None] * x + o.sigma[:, None] * torch.randn(n, 2, generator=g, dtype=F64)
    with torch.no_grad():
        ref = oracle(z, t)
        d = net(z.float(), t.float(), cond=torch.full((n,), label)).double()
    return float(((d - ref) ** 2).sum(1).mean() / (ref**2).sum(1).mean())


def test_null_branch_learns_the_unconditional_denoiser():
    """With label dropout the null label's output is the exact unconditional denoiser (the oracle of the whole
    mixture); without it the null row is untrained and far off. Observed (400 Adam steps, seeds 0-3): relative
    error 0.007-0.013 with p = 0.2, 0.58-0.97 with p = 0."""
    gmm = gmm2d()
    sched = CosineSchedule()
    with_dropout, without = _train_teacher(0.2), _train_teacher(0.0)
    uncond = GMMOracle(gmm, sched)
    err_with, err_without = _rel_err(with_dropout, K, uncond), _rel_err(without, K, uncond)
    print(f"null-branch relative error: label_dropout 0.2 {err_with:.4f}, label_dropout 0 {err_without:.4f}")
    assert err_with < 0.05
    assert err_without > 0.3 and err_without > 10 * err_with
    # the conditional branch still learns its component (oracle of that component alone)
    comp = GMMOracle(GMM(torch.ones(1, dtype=F64), gmm.means[:1], gmm.covs[:1]), sched)
    assert _rel_err(with_dropout, 0, comp) < 0.15


# ------------------------------------------------------------------------------ dropout draws
class _Spy(nn.Module):
    """A denoiser recording its inputs; returns a differentiable function of z."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def forward(self, z, t, cond=None):
        self.calls.append((z.detach().clone(), t.detach().clone(), None if cond is None else cond.clone()))
        return self.w * z


def _diffusion(p: float | None) -> GaussianDiffusion:
    den = GaussianDenoiser(MLP(2, width=8, depth=1, num_classes=K), GaussianProcess(CosineSchedule()))
    if p is None:  # the old constructor (no label dropout arguments)
        return GaussianDiffusion(den, conditional=True)
    return GaussianDiffusion(den, conditional=True, num_classes=K, label_dropout=p)


def test_drop_labels_fraction_and_identity():
    n, p = 20_000, 0.1
    labels = torch.arange(n) % K
    out = drop_labels(labels, p, K, gen(0))
    dropped = out == K
    bound = 5 * math.sqrt(n * p * (1 - p))  # 5 binomial standard deviations
    assert abs(int(dropped.sum()) - n * p) < bound
    assert torch.equal(out[~dropped], labels[~dropped]) and out.dtype == labels.dtype
    assert torch.equal(drop_labels(labels, p, K, gen(0)), out)  # deterministic given the generator
    g = gen(1)
    before = g.get_state()
    assert drop_labels(labels, 0.0, K, g) is labels and torch.equal(g.get_state(), before)  # p = 0 draws nothing


def test_teacher_loss_drops_labels_after_times_and_noise():
    n, p = 4096, 0.25
    x, y = torch.randn(n, 2, generator=gen(2)), torch.arange(n) % K
    runs = {}
    for name, prob in (("old", None), ("zero", 0.0), ("drop", p)):
        spy, g = _Spy(), gen(3)
        loss = _diffusion(prob).loss("main", {"x": x, "label": y}, {"model": spy}, g).loss
        runs[name] = (loss, spy.calls[0], g.get_state())
    (l_old, (z_old, t_old, c_old), s_old), (l_zero, (z0, t0, c0), s_zero) = runs["old"], runs["zero"]
    assert torch.equal(l_old, l_zero) and torch.equal(s_old, s_zero)  # p = 0: bit-identical, same draws
    assert torch.equal(z_old, z0) and torch.equal(t_old, t0) and torch.equal(c_old, c0) and torch.equal(c0, y)
    _, (z1, t1, c1), _ = runs["drop"]
    assert torch.equal(z1, z0) and torch.equal(t1, t0)  # the dropout draws come after times and noise
    dropped = c1 == K
    assert abs(int(dropped.sum()) - n * p) < 5 * math.sqrt(n * p * (1 - p))
    assert torch.equal(c1[~dropped], y[~dropped])
    assert _diffusion(p).config()["label_dropout"] == p


def test_label_dropout_needs_classes():
    den = GaussianDenoiser(MLP(2, width=8, depth=1), GaussianProcess(CosineSchedule()))
    with pytest.raises(ValueError, match="class-conditional"):
        GaussianDiffusion(den, label_dropout=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        _diffusion(1.0)


# ------------------------------------------------------------------------------ config resolution
def test_auto_label_dropout_is_resolved():
    cond = RunConfig(net=NetCfg(num_classes=K))
    assert resolve_label_dropout(cond).method.label_dropout == 0.1
    assert resolve_label_dropout(RunConfig()).method.label_dropout == 0.0
    assert resolve_label_dropout(RunConfig(method=IMMCfg(), net=NetCfg(num_classes=K))).method.label_dropout == 0.1
    assert resolve_label_dropout(cond, absent=0.0).method.label_dropout == 0.0  # an old config.json
    explicit = replace(cond, method=replace(cond.method, label_dropout=0.3))
    assert resolve_label_dropout(explicit).method.label_dropout == 0.3
    with pytest.raises(ValueError, match="num-classes"):
        resolve_label_dropout(replace(RunConfig(), method=replace(RunConfig().method, label_dropout=0.1)))


TINY_TRAIN = ["--preset", "tiny", "--train.total-nimg", "512", "--train.ckpt-every-nimg", "512"]


def test_resolved_value_is_saved_and_the_run_resumes(tmp_path: Path, capsys):
    run = tmp_path / "cond"
    cmd = ["train", *TINY_TRAIN, "--net.num-classes", str(K), "--run-dir", str(run)]
    assert main([*cmd, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["label_dropout"] == 0.1
    assert main(cmd) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["method"]["label_dropout"] == 0.1
    assert main(cmd) == 0  # the same command resumes: no ConfigMismatchError
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed"]
    assert load_trained(run)[1].label_dropout == 0.1
    # a run written before label dropout existed (no label_dropout in config.json) trained without it
    old = tmp_path / "old"
    plain = ["train", *TINY_TRAIN, "--run-dir", str(old)]
    assert main(plain) == 0
    d = json.loads((old / "config.json").read_text())
    del d["method"]["label_dropout"]
    (old / "config.json").write_text(json.dumps(d))
    assert load_trained(old)[1].label_dropout == 0.0
    assert main(plain) == 0  # unconditional: resolves to 0, the same training, resumes
    d = json.loads((run / "config.json").read_text())
    del d["method"]["label_dropout"]
    (run / "config.json").write_text(json.dumps(d))
    assert load_trained(run)[1].label_dropout == 0.0  # absent: trained without
    capsys.readouterr()
    assert main(cmd) == 1  # auto 0.1: other training, refused in one line
    assert "label_dropout" in capsys.readouterr().err


# ------------------------------------------------------------------------------ distillation refuses guidance
def _teacher_dir(tmp_path: Path, label_dropout: float | None, *, drop_key: bool = False) -> Path:
    cfg = RunConfig(net=NetCfg(width=32, depth=1, num_classes=K))
    cfg = replace(cfg, method=replace(cfg.method, label_dropout=label_dropout))
    d = to_dict(cfg)
    if drop_key:
        del d["method"]["label_dropout"]
    run = tmp_path / f"teacher-{label_dropout}-{drop_key}"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(d))
    return run


@pytest.mark.parametrize("label_dropout, drop_key", [(0.0, False), (None, True)])
def test_guidance_refused_for_a_teacher_trained_without_dropout(tmp_path: Path, label_dropout, drop_key):
    teacher = _teacher_dir(tmp_path, label_dropout, drop_key=drop_key)
    tcfg = load_config(teacher)
    cfg = DistillConfig(teacher=str(teacher), data=tcfg.data, process=tcfg.process, net=tcfg.net,
                        method=MMCfg(guidance=2.0))
    with pytest.raises(ValueError, match="--method.label-dropout 0.1") as e:
        resolve_distill(cfg)
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="^error: .*retrain the teacher"):
        main(["distill", "--teacher", str(teacher), "--method.guidance", "2", "--dry-run"])
    resolve_distill(replace(cfg, method=MMCfg()))  # no guidance: fine


def test_guidance_accepted_for_a_teacher_trained_with_dropout(tmp_path: Path, capsys):
    teacher = _teacher_dir(tmp_path, 0.1)
    check_guidance_teacher(str(teacher), load_config(teacher))
    assert main(["distill", "--teacher", str(teacher), "--method.guidance", "2", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["guidance"] == 2.0


# ------------------------------------------------------------------------------ IMM
class _Toy(nn.Module):
    """A deterministic, elementwise two-time backbone (float64): G = x (1 + c) / 2 + t - s / 2, c the label."""

    input_dtype = F64

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.conds: list[torch.Tensor | None] = []

    def forward(self, x, t, s, cond=None):
        self.calls.append(x.shape[0])
        self.conds.append(None if cond is None else cond.clone())
        c = torch.zeros(x.shape[0], dtype=F64) if cond is None else cond.double()
        return x * (1 + c[:, None]) / 2 + (t - s / 2)[:, None]


def _imm(label_dropout: float = 0.1, conditional: bool = True) -> InductiveMomentMatching:
    fmap = IMMMap(_Toy(), FlowSchedule(), sigma_d=0.7)
    return InductiveMomentMatching(fmap, group_size=2, conditional=conditional,
                                   num_classes=K if conditional else None, label_dropout=label_dropout)


def test_imm_guided_map_is_guidance_of_the_network_output():
    f = _imm().fmap
    g = gen(5)
    x = torch.randn(6, 2, generator=g, dtype=F64)
    t = 0.1 + 0.8 * torch.rand(6, generator=g, dtype=F64)
    s = t * torch.rand(6, generator=g, dtype=F64)
    c = torch.tensor([0, 1, 2, 0, 1, 2])
    null = torch.full_like(c, K)
    c_skip, c_out = map_coefficients(f.param, f.schedule, s, t, f.sigma_d)
    g_c, g_u = f.raw(x, s, t, c).double(), f.raw(x, s, t, null).double()
    for w in (0.0, 1.0, 2.5):
        want = c_skip[:, None] * x + c_out[:, None] * (g_u + w * (g_c - g_u))
        torch.testing.assert_close(f.guided(x, s, t, c, w, K), want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(f.guided(x, s, t, c, 1.0, K), f(x, s, t, c), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(f.guided(x, s, t, c, 0.0, K), f(x, s, t, null), rtol=1e-14, atol=1e-14)
    assert torch.equal(f.guided(x, s, t, c, None, K), f(x, s, t, c))


@pytest.mark.parametrize("sampler", ["pushforward", "restart"])
def test_imm_guided_sampler_is_one_doubled_batch_per_step(sampler: str):
    m = _imm()
    net, n, w, steps = m.fmap.net, 5, 3.0, 3
    c = torch.arange(n) % K
    grid = imm_grid(steps, m.schedule, t_max=m.t_max, t_min=m.t_min)
    net.calls.clear()
    out = m.generate(n, steps=steps, nets={"model": m.fmap}, generator=gen(7), cond=c, shape=(2,),
                     sampler=sampler, guidance=w)
    assert net.calls == [2 * n] * steps  # one doubled batch per step
    assert torch.equal(net.conds[0], torch.cat([c, torch.full_like(c, K)]))
    direct = sample_imm(m.fmap, (n, 2), grid=grid, generator=gen(7), cond=c, sampler=sampler, guidance=w, null_label=K)
    assert torch.equal(out, direct)
    if sampler == "pushforward":  # by hand: x <- c_skip x + c_out (G(null) + w (G(c) - G(null)))
        x = m.fmap.sigma_d * torch.randn(n, 2, generator=gen(7), dtype=F64)
        for i in range(steps):
            t, s = grid[i].expand(n), grid[i + 1].expand(n)
            cs, co = map_coefficients(m.fmap.param, m.schedule, s, t, m.fmap.sigma_d)
            gc, gu = m.fmap.raw(x, s, t, c).double(), m.fmap.raw(x, s, t, torch.full_like(c, K)).double()
            x = cs[:, None] * x + co[:, None] * (gu + w * (gc - gu))
        torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)
    plain = m.generate(n, steps=steps, nets={"model": m.fmap}, generator=gen(7), cond=c, shape=(2,),
                       sampler=sampler)
    unit = m.generate(n, steps=steps, nets={"model": m.fmap}, generator=gen(7), cond=c, shape=(2,),
                      sampler=sampler, guidance=1.0)
    torch.testing.assert_close(unit, plain, rtol=1e-12, atol=1e-12)  # w = 1: the conditional map


def test_imm_guidance_refused_without_dropout_or_classes():
    kw = {"steps": 2, "generator": gen(0), "cond": torch.zeros(4, dtype=torch.long), "shape": (2,),
          "guidance": 2.0}
    for m, msg in ((_imm(0.0), "--method.label-dropout 0.1"), (_imm(0.0, conditional=False), "class-conditional")):
        with pytest.raises(ValueError, match=msg) as e:
            m.generate(4, nets={"model": m.fmap}, **kw)
        assert "\n" not in str(e.value)
    m = _imm()
    with pytest.raises(ValueError, match="labels"):
        m.generate(4, nets={"model": m.fmap}, **{**kw, "cond": None})


def test_imm_loss_drops_labels_consistently():
    n, p = 512, 0.3
    x, y = torch.randn(n, 2, generator=gen(8)), torch.arange(n) % K
    losses, states = {}, {}
    for prob in (0.0, p):
        m = _imm(prob)
        g = gen(9)
        losses[prob] = m.loss("main", {"x": x, "label": y}, {"model": m.fmap}, g).loss
        states[prob] = g.get_state()
        c_t, c_r = m.fmap.net.conds
        assert torch.equal(c_t, c_r)  # y_t and y_r of a particle see the same label
        if prob == 0:
            assert torch.equal(c_t, y)
        else:
            dropped = c_t == K
            assert abs(int(dropped.sum()) - n * p) < 5 * math.sqrt(n * p * (1 - p))
            assert torch.equal(c_t[~dropped], y[~dropped])
    fresh = InductiveMomentMatching(IMMMap(_Toy(), FlowSchedule(), sigma_d=0.7), group_size=2, conditional=True)
    g = gen(9)
    old = fresh.loss("main", {"x": x, "label": y}, {"model": fresh.fmap}, g).loss
    assert torch.equal(old, losses[0.0]) and torch.equal(g.get_state(), states[0.0])  # p = 0: unchanged


def test_sample_cli_guides_imm_runs(tmp_path: Path, capsys):
    from safetensors import safe_open

    run, plain = tmp_path / "imm", tmp_path / "imm-nodrop"
    base = ["train", *TINY_TRAIN, "--method", "imm", "--net.num-classes", str(K)]
    assert main([*base, "--run-dir", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--steps", "1,2", "--n", "6", "--guidance", "2.0"]) == 0
    with safe_open(str(run / "samples" / "samples_pushforward_2_w2.safetensors"), "pt") as f:
        assert f.metadata()["guidance"] == "2.0" and f.get_tensor("x").shape == (6, 2)
        assert torch.equal(f.get_tensor("label"), torch.arange(6) % K)
    assert main([*base, "--method.label-dropout", "0", "--run-dir", str(plain)]) == 0
    with pytest.raises(SystemExit, match="^error: .*--method.label-dropout 0.1"):
        main(["sample", "--run", str(plain), "--steps", "1", "--n", "4", "--guidance", "2.0"])
    teacher = tmp_path / "teacher"
    assert main(["train", *TINY_TRAIN, "--run-dir", str(teacher)]) == 0
    with pytest.raises(SystemExit, match="^error: --guidance applies to IMM runs"):
        main(["sample", "--run", str(teacher), "--steps", "1", "--n", "4", "--guidance", "2.0"])
