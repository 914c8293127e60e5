"""Inductive Moment Matching: map identities, r(s, t), the MMD loss and its reductions, samplers and grids
(spec/continuous.md sections 4 and 6.10-6.11)."""

from __future__ import annotations

import math

import pytest
import torch

from _shared import F64, gen, gmm2d
from fewstep.data.toys import GMMOracle
from fewstep.denoisers.imm import IMMMap, ddim, denoiser_coefficients, map_coefficients
from fewstep.methods.imm import InductiveMomentMatching, group_mmd2, imm_weight, r_of
from fewstep.nets import MLP
from fewstep.samplers.imm import imm_grid, sample_imm
from fewstep.schedules import CosineSchedule, FlowSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")
SCHEDS = {"flow": FlowSchedule(), "cosine": CosineSchedule()}
CASES = [("simple-edm", "flow"), ("simple-edm", "cosine"), ("euler-fm", "flow"), ("identity", "flow"),
         ("identity", "cosine")]


def fmap(param: str, sched: str, *, dim: int = 3, second: str = "s", seed: int = 0) -> IMMMap:
    """A map around a small random backbone (every weight redrawn: the output layer starts at zero)."""
    net = MLP(dim, width=32, depth=1, two_time=True)
    g = gen(100 + seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return IMMMap(net, SCHEDS[sched], sigma_d=0.7, param=param, second_time=second)


def times(n: int, g: torch.Generator, lo: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    t = lo + (0.99 - lo) * torch.rand(n, generator=g, dtype=F64)
    s = lo / 2 + (t - lo / 2) * torch.rand(n, generator=g, dtype=F64)
    return s, t


# ------------------------------------------------------------------------------------------- the map
@pytest.mark.parametrize("sched", ["flow", "cosine"])
def test_ddim_is_self_consistent(sched: str) -> None:
    g = gen(0)
    x_src, x0 = torch.randn(64, 3, generator=g, dtype=F64), torch.randn(64, 3, generator=g, dtype=F64)
    s, t = times(64, g)
    r = s + (t - s) * torch.rand(64, generator=g, dtype=F64)
    sc = SCHEDS[sched]
    via_r = ddim(ddim(x_src, x0, src_t=t, dst_s=r, schedule=sc), x0, src_t=r, dst_s=s, schedule=sc)
    torch.testing.assert_close(via_r, ddim(x_src, x0, src_t=t, dst_s=s, schedule=sc), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("param,sched", CASES)
def test_map_is_identity_at_s_equals_t_and_equals_ddim_of_its_denoiser(param: str, sched: str) -> None:
    f = fmap(param, sched)
    g = gen(1)
    x = torch.randn(32, 3, generator=g, dtype=F64)
    s, t = times(32, g)
    torch.testing.assert_close(f(x, t, t), x, rtol=0, atol=1e-12)
    table = f(x, s, t)  # closed-form (s, t) coefficients
    composed = ddim(x, f.denoise(x, s, t), src_t=t, dst_s=s, schedule=f.schedule)
    torch.testing.assert_close(table, composed, rtol=1e-9, atol=1e-9)


def test_euler_fm_map_and_simple_edm_under_cosine() -> None:
    f = fmap("euler-fm", "flow")
    g = gen(2)
    x = torch.randn(16, 3, generator=g, dtype=F64)
    s, t = times(16, g)
    raw = f.raw(x, s, t)
    torch.testing.assert_close(f(x, s, t), x - ((t - s) * 0.7)[:, None] * raw, rtol=1e-12, atol=1e-12)
    c_skip, c_out = map_coefficients("simple-edm", CosineSchedule(), s, t, 0.7)  # cos / -sin of the angle
    torch.testing.assert_close(c_skip, torch.cos(math.pi * (t - s) / 2))
    torch.testing.assert_close(c_out, -0.7 * torch.sin(math.pi * (t - s) / 2))
    cs, co = denoiser_coefficients("simple-edm", FlowSchedule(), t, 0.7)
    o = FlowSchedule()(t)
    torch.testing.assert_close(cs, o.alpha / (o.alpha**2 + o.sigma**2))
    torch.testing.assert_close(co, -0.7 * o.sigma / (o.alpha**2 + o.sigma**2).sqrt())


def test_second_time_stride_and_bad_configs() -> None:
    g = gen(3)
    x = torch.randn(8, 3, generator=g, dtype=F64)
    s, t = times(8, g)
    a, b = fmap("simple-edm", "flow", second="s"), fmap("simple-edm", "flow", second="stride")
    assert not torch.allclose(a(x, s, t), b(x, s, t))  # same weights, different second input
    c_in = 1 / (0.7 * ((1 - t) ** 2 + t**2).sqrt())
    torch.testing.assert_close(b.raw(x, s, t), b.net((c_in[:, None] * x).float(), t.float(), (t - s).float()))
    with pytest.raises(ValueError, match="flow schedule"):
        IMMMap(MLP(3, width=8, depth=1, two_time=True), CosineSchedule(), param="euler-fm")
    with pytest.raises(ValueError, match="parametrisation"):
        IMMMap(MLP(3, width=8, depth=1, two_time=True), FlowSchedule(), param="edm")
    with pytest.raises(ValueError, match="t_min > 0"):
        InductiveMomentMatching(fmap("identity", "flow"), t_min=0.0)


# ------------------------------------------------------------------------------------------- r(s, t)
@pytest.mark.parametrize("sched", ["flow", "cosine"])
def test_r_lies_in_s_t_for_every_k(sched: str) -> None:
    g = gen(4)
    s, t = times(4000, g, lo=0.0)
    s[:10], t[:10] = 0.0, 0.994
    for k in range(0, 17):
        r = r_of(s, t, SCHEDS[sched], k=k)
        assert bool((r >= s).all()) and bool((r <= t).all()), k
        rg = r_of(s, t, SCHEDS[sched], k=k, min_gap=1e-4)
        assert bool(((t - rg >= 1e-4 - 1e-15) | (rg == s)).all()), k


@pytest.mark.parametrize("k,gaps", [(12, (0.033, 0.010, 3.9e-4, 1.4e-6)), (15, (0.0040, 0.0012, 4.9e-5, 1.8e-7))])
def test_flow_gaps_match_the_spec(k: int, gaps: tuple[float, ...]) -> None:
    t = torch.tensor([0.1, 0.5, 0.9, 0.994], dtype=F64)
    gap = t - r_of(torch.zeros_like(t), t, FlowSchedule(), k=k)
    for got, want in zip(gap.tolist(), gaps, strict=True):
        assert got == pytest.approx(want, rel=0.06), (got, want)


# --------------------------------------------------------------------------------------------- the loss
def test_mmd_v_statistic_matches_closed_form_expectation() -> None:
    """RBF kernel exp(-w^2 ||a-b||^2 / D) on independent Gaussian particles: the mean of the paper's V-statistic
    over many groups equals its exact expectation (diagonal terms included)."""
    g = gen(5)
    groups, m, d, mu, sd, w = 4000, 6, 2, 0.8, 0.6, 1.3
    y_t = sd * torch.randn(groups, m, d, generator=g, dtype=F64)
    y_r = mu + sd * torch.randn(groups, m, d, generator=g, dtype=F64)
    v = group_mmd2(y_t, y_r, torch.full((groups,), w, dtype=F64), kernel="rbf")
    gam = w**2 / d

    def ek(delta2: float) -> float:  # E exp(-gam ||X - Y||^2), X - Y ~ N(delta, 2 sd^2 I)
        c = 1 + 4 * gam * sd**2
        return c ** (-d / 2) * math.exp(-gam * delta2 / c)

    expect = 2 * (1 / m + (1 - 1 / m) * ek(0.0)) - 2 * ek(d * mu**2)
    assert float(v.mean()) == pytest.approx(expect, abs=4 * float(v.std()) / math.sqrt(groups))
    # the U-statistic is unbiased for the population MMD^2 (no diagonal terms)
    u = group_mmd2(y_t, y_r, torch.full((groups,), w, dtype=F64), kernel="rbf", estimator="u")
    assert float(u.mean()) == pytest.approx(2 * ek(0.0) - 2 * ek(d * mu**2), abs=4 * float(u.std()) / math.sqrt(groups))


def test_energy_kernel_u_statistic_is_the_energy_distance() -> None:
    """kernel = -||a - b|| with the U-statistic: E = 2E||X - Y|| - E||X - X'|| - E||Y - Y'||, which for 1-D
    N(0, 1) vs N(mu, 1) is 2 * (E|N(mu, 2)| - E|N(0, 2)|) (folded-normal means), checked by Monte Carlo."""
    g = gen(8)
    groups, m, mu = 20000, 4, 0.7
    y_t = torch.randn(groups, m, 1, generator=g, dtype=F64)
    y_r = mu + torch.randn(groups, m, 1, generator=g, dtype=F64)
    u = group_mmd2(y_t, y_r, torch.ones(groups, dtype=F64), kernel="energy", estimator="u", dim_divisor=1)
    s2 = math.sqrt(2)

    def folded(mean: float) -> float:  # E|N(mean, 2)|
        return s2 * math.sqrt(2 / math.pi) * math.exp(-mean**2 / 4) + mean * math.erf(mean / 2)

    expect = 2 * (folded(mu) - folded(0.0))
    assert float(u.mean()) == pytest.approx(expect, abs=4 * float(u.std()) / math.sqrt(groups))
    with pytest.raises(ValueError, match="at least two particles"):
        group_mmd2(y_t[:, :1], y_r[:, :1], torch.ones(groups), estimator="u")


def test_loss_zero_when_branches_agree_and_permutation_invariant() -> None:
    g = gen(6)
    y = torch.randn(5, 4, 3, generator=g, dtype=F64)
    w = torch.rand(5, generator=g, dtype=F64) + 0.5
    for kernel in ("laplace", "rbf", "energy", "sqdist"):
        assert float(group_mmd2(y, y, w, kernel=kernel).abs().max()) < 1e-6
        y_r = torch.randn(5, 4, 3, generator=g, dtype=F64)
        perm = torch.randperm(4, generator=g)
        base = group_mmd2(y, y_r, w, kernel=kernel)
        torch.testing.assert_close(group_mmd2(y[:, perm], y_r, w, kernel=kernel), base, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(group_mmd2(y, y_r[:, perm], w, kernel=kernel), base, rtol=1e-5, atol=1e-6)


def test_self_term_gradient_vanishes_at_m1() -> None:
    """With one particle the y_t self-term k(y_t, y_t) is constant: the gradient is the cross term's alone."""
    y_t = torch.randn(3, 1, 2, dtype=F64, generator=gen(7)).requires_grad_(True)
    y_r = torch.randn(3, 1, 2, dtype=F64, generator=gen(8))
    w = torch.ones(3, dtype=F64)
    group_mmd2(y_t, y_r, w, kernel="laplace").sum().backward()
    y_t2 = y_t.detach().float().requires_grad_(True)
    dist = (y_t2 - y_r.float()).pow(2).sum(-1).sqrt()
    (-2 * torch.exp(-dist / 2)).sum().backward()
    torch.testing.assert_close(y_t.grad.float(), y_t2.grad, rtol=1e-5, atol=1e-6)


def test_m1_sqdist_loss_is_twice_the_weighted_consistency_loss() -> None:
    """M = 1 with the squared-distance kernel: loss = mean 2 w(s,t) w~^2 ||f_theta(x_t) - f_theta-(x_r)||^2 / D."""
    f = fmap("simple-edm", "flow", dim=3)
    m = InductiveMomentMatching(f, group_size=1, k=8, kernel="sqdist")
    x = torch.randn(16, 3, generator=gen(9), dtype=F64)
    out = m.loss("main", {"x": x}, {"model": f}, gen(10))
    g = gen(10)  # replay the same draws
    s, r, t = m.draw_times(16, g, "cpu")
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    y_t, y_r = f(m.interpolate(x, eps, t), s, t), f(m.interpolate(x, eps, r), s, r)
    _, c_out = map_coefficients("simple-edm", FlowSchedule(), s, t, 0.7)
    cm = (y_t - y_r).pow(2).sum(1) / c_out**2 / 3
    want = (2 * imm_weight(FlowSchedule(), t) * cm).mean()
    assert float(out.loss.detach()) == pytest.approx(float(want.detach()), rel=1e-4)
    out.loss.backward()
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in f.parameters())


def test_weight_is_finite_and_matches_formula() -> None:
    t = torch.tensor([0.0, 0.3, 0.994, 1.0], dtype=F64)
    for sched in SCHEDS.values():
        w = imm_weight(sched, t, a=2.0, b=4.0)
        assert bool(w.isfinite().all()) and float(w[0]) < 1e-3
    o = FlowSchedule()(t[1:2])
    lam = 2 * math.log(0.7 / 0.3)
    want = 0.5 / (1 + math.exp(-(4 - lam))) * 2 / (0.3 * 0.7) * float(o.alpha) ** 2 / float(o.alpha**2 + o.sigma**2)
    assert float(imm_weight(FlowSchedule(), t[1:2], a=2.0, b=4.0)) == pytest.approx(want, rel=1e-10)


def test_batch_must_hold_whole_groups() -> None:
    m = InductiveMomentMatching(fmap("simple-edm", "flow"), group_size=4)
    with pytest.raises(ValueError, match="multiple of the group size"):
        m.loss("main", {"x": torch.randn(6, 3, dtype=F64)}, {"model": m.fmap}, gen(0))


def test_k_curriculum_moves_k_linearly_and_the_trainer_drives_it(tmp_path) -> None:
    m = InductiveMomentMatching(fmap("simple-edm", "flow"), k=8, k_end=14)
    for nimg, k in ((0, 8), (500, 11), (1000, 14), (2000, 14)):
        m.set_progress(nimg, 1000)
        assert m.k == k
    assert m.config()["k"] == 8 and m.config()["k_end"] == 14
    fixed = InductiveMomentMatching(fmap("simple-edm", "flow"), k=8)
    fixed.set_progress(900, 1000)
    assert fixed.k == 8
    from dataclasses import replace

    from fewstep.build.trainers import build_trainer
    from fewstep.config import IMMCfg
    from fewstep.presets import get_preset

    cfg = get_preset("tiny")
    cfg = replace(cfg, method=IMMCfg(k=4, k_end=12), train=replace(cfg.train, total_nimg=1024, batch_size=256),
                  run_dir=str(tmp_path / "run"))
    trainer = build_trainer(cfg, progress=False)
    trainer.fit()
    assert trainer.method.k == 10  # set before the last iteration: nimg = 768 of 1024 -> 4 + 8 * 0.75


# ---------------------------------------------------------------------------------- samplers and grids
def test_grids_are_as_specified() -> None:
    fl, co = FlowSchedule(), CosineSchedule()
    assert imm_grid(1, fl, t_max=0.994, t_min=0.0).tolist() == [0.994, 0.0]
    assert imm_grid(2, fl, t_max=0.994, t_min=0.0)[1].item() == pytest.approx(0.5833, abs=1e-3)
    assert imm_grid(2, co, t_max=0.996, t_min=0.0)[1].item() == pytest.approx(0.605, abs=1e-3)
    assert imm_grid(2, fl, t_max=0.994, t_min=0.0, two_step="uniform")[1].item() == pytest.approx(0.497)
    torch.testing.assert_close(imm_grid(4, fl, t_max=0.994, t_min=0.006),
                               torch.linspace(0.994, 0.006, 5, dtype=F64))
    e = imm_grid(8, fl, t_max=0.994, t_min=0.006, kind="edm")
    assert e[0] == 0.994 and e[-1] == 0.006 and bool((e[1:] < e[:-1]).all())
    with pytest.raises(ValueError):
        imm_grid(0, fl, t_max=0.994, t_min=0.0)


class OracleMap(torch.nn.Module):
    """f_{s,t} = ddim(x_t, E[x | x_t]) with the exact GMM denoiser (sigma_d = 1, so the interpolant is the
    oracle's process)."""

    def __init__(self, sched) -> None:
        super().__init__()
        self.schedule, self.sigma_d, self.gmm = sched, 1.0, gmm2d()
        self.oracle = GMMOracle(self.gmm, sched)

    def forward(self, x, s, t, cond=None):
        return ddim(x, self.oracle(x.double(), t.double()), src_t=t, dst_s=s, schedule=self.schedule)


def test_oracle_map_transports_marginals() -> None:
    """Many small DDIM-form steps with the exact denoiser (pushforward) carry N(0, I) at T to the data
    distribution: mean and covariance of the samples match the GMM's within Monte-Carlo error. (Restart needs a
    map that outputs samples, not the denoiser mean, so it is not exact here.)"""
    f = OracleMap(CosineSchedule())
    grid = imm_grid(200, f.schedule, t_max=0.999, t_min=0.0)
    x = sample_imm(f, (20_000, 2), grid=grid, generator=gen(11), sampler="pushforward")
    gmm = f.gmm
    mean = (gmm.weights[:, None] * gmm.means).sum(0)
    cov = (gmm.weights[:, None, None] * (gmm.covs + gmm.means[:, :, None] * gmm.means[:, None, :])).sum(0) \
        - mean[:, None] * mean[None, :]
    tol = 0.05
    torch.testing.assert_close(x.mean(0), mean, atol=tol, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=3 * tol, rtol=0.05)


def test_sampler_purity_and_shapes() -> None:
    f = fmap("euler-fm", "flow")
    m = InductiveMomentMatching(f, t_min=0.0)
    a = m.generate(64, steps=4, nets={"model": f}, generator=gen(12), shape=(3,))
    b = m.generate(64, steps=4, nets={"model": f}, generator=gen(12), shape=(3,))
    assert a.dtype == F64 and a.shape == (64, 3) and torch.equal(a, b)
    state = torch.random.get_rng_state()
    m.generate(8, steps=2, nets={"model": f}, generator=gen(13), shape=(3,), sampler="restart")
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="sampler"):
        m.generate(8, steps=2, nets={"model": f}, generator=gen(13), shape=(3,), sampler="ancestral")


# ------------------------------------------------------------------------------------------- CLI end to end
def test_cli_train_imm_sample_and_reload(tmp_path, capsys) -> None:
    import json

    from safetensors.torch import load_file

    from fewstep.build.runs import load_trained
    from fewstep.cli import main
    from fewstep.config import IMMCfg, load_config

    run = tmp_path / "imm"
    cmd = ["train", "--preset", "tiny", "--method", "imm", "--method.k", "6", "--process.schedule", "flow",
           "--train.batch-size", "64", "--run-dir", str(run)]
    assert main(cmd) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["nimg"] == 2048 and "mmd2" in first["logs"]
    cfg = load_config(run)
    assert isinstance(cfg.method, IMMCfg) and cfg.method.k == 6
    _, method, nets = load_trained(run)
    assert method.sampler == "pushforward" and set(nets) == {"model"}
    assert main(cmd) == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed"]
    assert main(["sample", "--run", str(run), "--steps", "1,2", "--n", "32", "--device", "cpu"]) == 0
    x = load_file(run / "samples" / "samples_pushforward_2.safetensors")["x"]
    assert x.shape == (32, 2) and bool(x.isfinite().all())
    assert main(["sample", "--run", str(run), "--steps", "2", "--n", "8", "--sampler", "restart",
                 "--device", "cpu"]) == 0
    with pytest.raises(SystemExit, match="does not apply"):
        main(["sample", "--run", str(run), "--steps", "2", "--sampler", "ddim", "--device", "cpu"])
    with pytest.raises(SystemExit):  # the batch must hold whole groups of M = 4
        main(["train", "--preset", "tiny", "--method", "imm", "--train.batch-size", "6", "--run-dir",
              str(tmp_path / "bad")])


def test_quick_bench_imm_rows_and_same_budget_teacher(tmp_path) -> None:
    import json

    from fewstep.bench.runner import BenchOptions, run_bench

    opts = BenchOptions(suite="toy", methods=("imm", "teacher-budget"), datasets=("checkerboard2d",), steps=(1, 2),
                        teacher_nfe=(1, 4), samplers=("ddim",), quick=True, out=str(tmp_path), device="cpu")
    rows = run_bench(opts, log=lambda _: None)
    imm = [r for r in rows if r["method"] == "imm" and r["metric"] == "energy"]
    assert sorted((r["sampler"], r["steps"], r["nfe"]) for r in imm) == [
        ("pushforward", 1, 1), ("pushforward", 2, 2), ("restart", 1, 1), ("restart", 2, 2)]
    assert all(r["train_seconds"] > 0 and r["value"] == r["value"] for r in imm)
    budget = [r for r in rows if r["method"] == "teacher-budget" and r["metric"] == "energy"]
    assert sorted(r["nfe"] for r in budget) == [1, 4]
    # its length was chosen from a throughput probe to take as long as the IMM run (loose: timing noise)
    imm_s, teacher_s = imm[0]["train_seconds"], budget[0]["train_seconds"]
    assert 0.2 * imm_s < teacher_s < 5 * imm_s
    run = next(p for p in (tmp_path / "runs").iterdir() if p.name.endswith("-budget"))
    assert json.loads((run / "config.json").read_text())["train"]["total_nimg"] % 512 == 0
    report = (tmp_path / "report.md").read_text()
    assert "| imm | None | pushforward | 1 |" in report and "| teacher-budget |" in report


def test_imm_set_overrides_name_the_run_and_reject_unknown_fields(tmp_path) -> None:
    from fewstep.bench.context import BenchContext, BenchOptions
    from fewstep.bench.providers_imm import imm_config

    def ctx(pairs):
        opts = BenchOptions(suite="toy", methods=("imm",), imm_set=pairs)
        return BenchContext(options=opts, dataset="spiral2d", device=torch.device("cpu"), runs_dir=tmp_path)

    cfg = imm_config(ctx((("group_size", "8"), ("kernel", "rbf"))))
    assert (cfg.method.group_size, cfg.method.kernel) == (8, "rbf")
    assert cfg.run_dir.endswith("imm-spiral-group_size=8-kernel=rbf")
    with pytest.raises(ValueError, match="--imm-set: 'bandwidth' is not a settable IMM option"):
        imm_config(ctx((("bandwidth", "2"),)))
