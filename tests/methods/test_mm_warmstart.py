"""The teacher-ODE warm start of an MM student (``fewstep.methods.mm_warmstart``; spec/continuous.md section 8).

The main test is the k = 1 saddle on a 1-D two-mode GMM with the exact oracle: a student copied from a net
regressed on the oracle outputs ~E[x] at t = 1 and draws one mode; MM from there stays collapsed (the expected
gradient on its noise dependence is ~0), while after the warm start the student covers both modes and keeps
them through MM.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from _shared import F64, gen, gmm2d, train_mm
from fewstep.cli import main
from fewstep.data.toys import GMM, GMMOracle
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.mm import MM_OPTIM, MomentMatching, init_from_teacher, regress_on_teacher
from fewstep.methods.mm_warmstart import (
    auto_warm_start_steps,
    ddim_endpoint,
    warm_start_pairs,
    warm_start_student,
    warm_start_times,
)
from fewstep.metrics.toys import energy_distance, mode_coverage
from fewstep.nets.mlp import MLP
from fewstep.processes.gaussian import GaussianProcess
from fewstep.samplers import ddim, sample, uniform_grid
from fewstep.samplers.student import sample_student, student_grid
from fewstep.schedules import CosineSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")
PROC = GaussianProcess(CosineSchedule())


def two_modes() -> GMM:
    """1-D, modes at -2 (weight 0.3) and +2 (0.7), std 0.3: E[x] = 0.8 lies in the basin of the +2 mode."""
    return GMM(torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([[-2.0], [2.0]], dtype=F64),
               torch.full((2, 1, 1), 0.09, dtype=F64))


def test_ddim_endpoint_equals_ddim_sampler_at_t1() -> None:
    oracle = GMMOracle(gmm2d(), PROC.schedule)
    z = torch.randn(256, 2, generator=gen(0), dtype=F64)
    ref = ddim(oracle, PROC, z, uniform_grid(16))
    out = ddim_endpoint(oracle, PROC, z, torch.ones(256, dtype=F64), steps=16)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_ddim_endpoint_is_the_flow_map_per_row() -> None:
    """Rows at different t: the endpoint approaches the exact PF-ODE map of a single Gaussian (spec section 7)."""
    mu, tau = 0.5, 1.5
    oracle = GMMOracle(GMM(torch.ones(1, dtype=F64), torch.tensor([[mu]], dtype=F64),
                           torch.tensor([[[tau**2]]], dtype=F64)), PROC.schedule)
    t = torch.linspace(0.1, 1.0, 64, dtype=F64)
    z = torch.randn(64, 1, generator=gen(1), dtype=F64)
    o = PROC.schedule(t)
    a, s = o.alpha[:, None], o.sigma[:, None]
    exact = mu + tau / (a**2 * tau**2 + s**2).sqrt() * (z - a * mu)
    err = float((ddim_endpoint(oracle, PROC, z, t, steps=256) - exact).abs().max())
    assert err < 1e-2
    assert float((ddim_endpoint(oracle, PROC, z, t, steps=8) - exact).abs().max()) > 2 * err


def test_warm_start_times() -> None:
    g = warm_start_times(2, 4000, generator=gen(2), times="grid")
    assert set(g.unique().tolist()) == {0.5, 1.0} and g.dtype == F64
    u = warm_start_times(2, 4000, generator=gen(2), times="uniform", t_min=1e-4)
    assert float(u.min()) > 1e-4 and float(u.max()) <= 1.0 and abs(float(u.mean()) - 0.5) < 0.02
    m = warm_start_times(1, 4000, generator=gen(2), times="mixed")
    assert 0.45 < float((m == 1.0).double().mean()) < 0.56  # half on the grid {1}, half continuous
    assert torch.equal(m, warm_start_times(1, 4000, generator=gen(2), times="mixed"))
    with pytest.raises(ValueError):
        warm_start_times(1, 4, generator=gen(2), times="bogus")  # type: ignore[arg-type]
    assert [auto_warm_start_steps(k) for k in (1, 2, 4, 8)] == [500, 500, 0, 0]


def test_pairs_noop_determinism_and_conditional() -> None:
    torch.manual_seed(3)
    net = GaussianDenoiser(MLP(2, width=16, depth=1), PROC)
    oracle = GMMOracle(gmm2d(), PROC.schedule)
    draw = lambda n, g: gmm2d().sample(n, generator=g)  # noqa: E731
    z, t, y, c = warm_start_pairs(oracle, PROC, draw, 300, k=2, teacher_steps=4, generator=gen(4), chunk=128)
    assert z.shape == y.shape == (300, 2) and t.shape == (300,) and c is None and z.dtype == y.dtype == F64
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert warm_start_student(net, oracle, PROC, draw, k=1, steps=0, generator=gen(5)) == []
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    runs = []
    for _ in range(2):
        student = init_from_teacher(net)
        losses = warm_start_student(student, oracle, PROC, draw, k=2, steps=5, batch=64, teacher_steps=4,
                                    pool=None, generator=gen(6))  # fresh pairs every step
        runs.append((losses, student.state_dict()))
    assert runs[0][0] == runs[1][0] and all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())
    # a class-conditional student: sample_data returns (x, labels), labels reach student and teacher
    tea = GaussianDenoiser(MLP(2, width=16, depth=1, num_classes=3), PROC).eval()
    cdraw = lambda n, g: gmm2d().sample(n, generator=g, return_labels=True)  # noqa: E731
    losses = warm_start_student(init_from_teacher(tea), tea, PROC, cdraw, k=1, steps=3, batch=32, teacher_steps=2,
                                pool=100, generator=gen(7), guidance=1.5, num_classes=3)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def _mm(student, aux, oracle, iters: int, seed: int) -> None:
    m = MomentMatching(oracle, student, aux, process=PROC, k=1)
    nets = {"student": student, "aux": aux, "teacher": oracle}
    opts = {r: torch.optim.Adam(nets[r].parameters(), lr=1e-4, betas=MM_OPTIM["betas"], eps=MM_OPTIM["eps"])
            for r in ("aux", "student")}
    g = gen(seed)
    train_mm(m, nets, opts, lambda g: oracle.gmm.sample(256, generator=g), iters, g)


def test_warm_start_breaks_the_k1_saddle() -> None:
    """Copied student: one mode; warm-started: both; after MM: still both, energy distance small.

    Measured (seed-fixed): copy coverage 0.5 / ED 1.44 (sample std 0.03); MM 150 steps from the copy still
    0.5 / 0.86 (the saddle); warm start 1.0 / 0.0022; MM 150 steps from the warm start 1.0 / 0.0046.
    """
    gmm = two_modes()
    oracle = GMMOracle(gmm, PROC.schedule)
    draw = lambda n, g: gmm.sample(n, generator=g)  # noqa: E731
    torch.manual_seed(0)
    net = GaussianDenoiser(MLP(1, width=64, depth=2), PROC)
    regress_on_teacher(net, oracle, PROC, draw, steps=400, generator=gen(1), batch_size=256, lr=3e-3)
    data = draw(4096, gen(6))

    def evaluate(student) -> tuple[float, float]:
        x = sample_student(student.eval(), PROC, (4096, 1), grid=student_grid(1), generator=gen(5))
        student.train()
        return mode_coverage(gmm, x), energy_distance(x, data)

    teacher_1 = sample(oracle, PROC, (4096, 1), sampler="ancestral", grid=uniform_grid(1), generator=gen(5))
    assert mode_coverage(gmm, teacher_1) == 0.5  # the exact teacher's one-step sample is E[x]
    copied = init_from_teacher(net)
    cov0, ed0 = evaluate(copied)
    assert cov0 == 0.5 and ed0 > 1.0
    _mm(copied, init_from_teacher(net), oracle, 150, seed=3)
    cov_mm, ed_mm = evaluate(copied)
    assert cov_mm == 0.5 and ed_mm > 0.5  # MM from the copy stays at the saddle for this budget

    student = init_from_teacher(net)
    losses = warm_start_student(student, oracle, PROC, draw, k=1, steps=300, batch=256, pool=4096, lr=1e-3,
                                generator=gen(2))
    assert losses[-1] < 0.05 * losses[0]
    cov1, ed1 = evaluate(student)
    assert cov1 == 1.0 and ed1 < 0.02
    _mm(student, init_from_teacher(net), oracle, 150, seed=3)
    cov2, ed2 = evaluate(student)
    assert cov2 == 1.0 and ed2 < 0.05 and ed2 < 0.05 * ed0


def test_distill_resolves_and_caches_the_warm_start(tmp_path, capsys) -> None:
    for k, want in ((1, 500), (2, 500), (4, 0)):
        assert main(["distill", "--teacher", "oracle", "--steps", str(k), "--dry-run"]) == 0
        m = json.loads(capsys.readouterr().out)["method"]
        assert m["warm_start_steps"] == want and m["warm_start_times"] == "mixed"
    assert main(["distill", "--teacher", "oracle", "--steps", "4", "--dry-run", "--method.warm-start-steps", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["warm_start_steps"] == 7

    run = tmp_path / "k1"
    cmd = ["distill", "--teacher", "oracle", "--steps", "1", "--run-dir", str(run), "--net.width", "32",
           "--net.depth", "1", "--method.oracle-regress-steps", "20", "--method.warm-start-steps", "10",
           "--method.warm-start-pool", "512", "--method.warm-start-teacher-steps", "4", "--train.total-nimg", "512",
           "--train.batch-size", "256", "--train.warmup-nimg", "256", "--train.ckpt-every-nimg", "256",
           "--train.log-every-nimg", "512", "--train.device", "cpu"]
    assert main(cmd) == 0
    cache = run / "student_warmstart.safetensors"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    capsys.readouterr()
    assert main([*cmd, "--train.total-nimg", "768", "--allow-config-change"]) == 0  # resumes, reuses the cache
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["nimg"] == 768
    assert cache.stat().st_mtime_ns == stamp
