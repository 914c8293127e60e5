"""Instant (parameter-space) Moment Matching: the spec §3 self-check (spec/continuous.md §6 item 9), float64.

Teacher T_theta(z, s) = W z + b + s u (linear), student a 2-layer MLP, fixed batches A and B.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from _shared import F64, gen
from fewstep.data.toys import GMMOracle, make_gmm8d
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.mm import Draw, MomentMatching, init_from_teacher
from fewstep.methods.mm_instant import Preconditioner, TeacherFn, dot, teacher_grad, teacher_jvp
from fewstep.nets.mlp import MLP
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import CosineSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py
PROC = GaussianProcess(CosineSchedule())
D = 3
ROUTES = ("forward", "double_backward", "finite_difference")


class LinearTeacher(nn.Module):
    def __init__(self, dtype: torch.dtype = F64) -> None:
        super().__init__()
        g = gen(0)
        self.W = nn.Parameter(0.5 * torch.randn(D, D, generator=g, dtype=F64).to(dtype))
        self.b = nn.Parameter(torch.randn(D, generator=g, dtype=F64).to(dtype))
        self.u = nn.Parameter(torch.randn(D, generator=g, dtype=F64).to(dtype))

    def forward(self, z: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        return z @ self.W.T + self.b + t[:, None] * self.u


class Student(nn.Module):
    """x~ = z + MLP([z, t]) (2 layers, float64)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(D + 1, 16), nn.Tanh(), nn.Linear(16, D)).double()

    def forward(self, z: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return z + self.net(torch.cat([z, t[:, None]], 1))


def setup(precond: str = "fixed", weighting: str = "edm",
          data_grad: str = "batch") -> tuple[MomentMatching, dict, Tensor]:
    tea = LinearTeacher().requires_grad_(False)
    v = {k: torch.rand(p.shape, generator=gen(2), dtype=F64) + 0.1 for k, p in tea.named_parameters()}
    m = MomentMatching(tea, Student(), process=PROC, mode="instant", k=2, precond=precond,
                       precond_v=v if precond == "fixed" else None, data_grad=data_grad,
                       weighting=weighting)
    return m, {"student": m.student, "teacher": tea}, torch.tensor([0.5, -1.0, 2.0], dtype=F64)


def data(n: int, seed: int, shift: Tensor) -> Tensor:
    return torch.randn(n, D, generator=gen(seed), dtype=F64) + shift


def test_autograd_of_j_equals_both_surrogate_orderings() -> None:
    m, nets, shift = setup()
    da, db = m.draw(data(16, 3, shift), gen(4)), m.draw(data(16, 5, shift), gen(6))
    fn, params = TeacherFn(nets["teacher"]), list(m.student.parameters())

    def g(d: Draw) -> dict[str, Tensor]:
        x = m.sample_x(m.student, d)  # keeps the graph; z_s is built from sg x~ inside renoise
        gen_ = teacher_grad(fn, m.renoise(d, x), d.s, x, m.weight(d.s), create_graph=True)
        dat = teacher_grad(fn, m.renoise(d, d.x), d.s, d.x, m.weight(d.s))
        return {k: v - dat[k] for k, v in gen_.items()}

    g_a, g_b = g(da), g(db)
    j = 0.5 * dot(g_a, m.precond.apply(g_b))  # Lambda frozen (fixed v)
    ref = torch.autograd.grad(j, params)
    loss = m.instant_loss(nets, da, db).loss + m.instant_loss(nets, db, da).loss
    ours = torch.autograd.grad(loss, params)
    num = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(ours, ref)))
    den = math.sqrt(sum(float(b.pow(2).sum()) for b in ref))
    assert den > 1e-3 and num / den < 1e-8, (num, den)
    one = torch.autograd.grad(m.instant_loss(nets, da, db).loss, params)  # one ordering alone is not it
    assert math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(one, ref))) / den > 1e-2
    assert all(p.grad is None for p in nets["teacher"].parameters())


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["fp64", "fp32"])
def test_jvp_routes_match_analytic(dtype: torch.dtype) -> None:
    tea = LinearTeacher(dtype)
    n = 32
    z, s = torch.randn(n, D, generator=gen(7), dtype=F64), torch.rand(n, generator=gen(8), dtype=F64)
    nu = {k: torch.randn(p.shape, generator=gen(9), dtype=F64).to(dtype) for k, p in tea.named_parameters()}
    want = (z @ nu["W"].double().T + nu["b"].double() + s[:, None] * nu["u"].double())
    fn = TeacherFn(tea)
    for route in ROUTES:
        out = teacher_jvp(fn, z, s, nu, route=route).double()
        rel = float((out - want).norm() / want.norm())
        tol = {F64: 1e-12, torch.float32: 1e-6}[dtype] if route != "finite_difference" else \
            {F64: 1e-9, torch.float32: 1e-3}[dtype]
        assert rel < tol, (route, rel)


def test_jvp_routes_agree_on_a_denoiser_mlp() -> None:
    """A real (nonlinear, float32) GaussianDenoiser teacher: the three routes agree."""
    torch.manual_seed(3)
    tea = GaussianDenoiser(MLP(8, width=32, depth=2), PROC)
    for p in tea.parameters():
        nn.init.normal_(p, std=0.3, generator=gen(10))
    fn = TeacherFn(tea)
    z, s = torch.randn(16, 8, generator=gen(11), dtype=F64), torch.rand(16, generator=gen(12), dtype=F64)
    nu = {k: torch.randn(p.shape, generator=gen(13)) for k, p in fn.params.items()}
    out = {r: teacher_jvp(fn, z, s, nu, route=r).double() for r in ROUTES}
    scale = float(out["forward"].norm())
    assert scale > 1e-3
    assert float((out["double_backward"] - out["forward"]).norm()) / scale < 1e-5
    assert float((out["finite_difference"] - out["forward"]).norm()) / scale < 1e-2


def test_expected_j_matches_squared_mean_gradient() -> None:
    """mean over independent (A, B) pairs of 1/2 <g_A, Lambda g_B> = 1/2 ||E g||^2_Lambda (flat weight), within 4 SE;
    the one-batch 1/2 ||g_A||^2_Lambda is biased upwards."""
    m, nets, shift = setup(weighting="flat")
    fn = TeacherFn(nets["teacher"])
    b, pairs = 8, 2000

    def grads(n: int, seed: int) -> list[dict[str, Tensor]]:
        d = m.draw(data(n, seed, shift), gen(seed + 1))
        with torch.no_grad():
            x = m.sample_x(m.student, d)
        z_s, w = m.renoise(d, x), m.weight(d.s)
        return [teacher_grad(fn, z_s[i:i + b], d.s[i:i + b], x[i:i + b], w[i:i + b]) for i in range(0, n, b)]

    g_bar = teacher_grad(fn, *_big(m, shift))
    gs = grads(2 * pairs * b, 20)
    j = torch.stack([0.5 * dot(ga, m.precond.apply(gb)) for ga, gb in zip(gs[::2], gs[1::2])])
    want = float(0.5 * dot(g_bar, m.precond.apply(g_bar)))
    se = float(j.std()) / math.sqrt(pairs)
    assert abs(float(j.mean()) - want) < 4 * se, (float(j.mean()), want, se)
    one = torch.stack([0.5 * dot(ga, m.precond.apply(ga)) for ga in gs[::2]])
    assert float(one.mean()) - want > 6 * float(one.std()) / math.sqrt(pairs)


def _big(m: MomentMatching, shift: Tensor) -> tuple:
    """A 200k-sample estimate of E g (its MC error is far below the pair SE)."""
    d = m.draw(data(200_000, 30, shift), gen(31))
    with torch.no_grad():
        x = m.sample_x(m.student, d)
    return m.renoise(d, x), d.s, x, m.weight(d.s)


def test_ema_preconditioner() -> None:
    g1 = {"a": torch.tensor([1.0, -2.0], dtype=F64)}
    g2 = {"a": torch.tensor([3.0, 0.5], dtype=F64)}
    p = Preconditioner("ema", beta=0.9, eps=1e-8)
    with pytest.raises(RuntimeError):
        p.apply(g1)
    p.update(g1)
    torch.testing.assert_close(p.apply(g1)["a"], g1["a"] / (g1["a"].abs() + 1e-8))  # bias-corrected: v_hat = g^2
    p.update(g2)
    v = (0.9 * 0.1 * g1["a"] ** 2 + 0.1 * g2["a"] ** 2) / (1 - 0.81)
    torch.testing.assert_close(p.apply(g2)["a"], g2["a"] / (v.sqrt() + 1e-8))
    torch.testing.assert_close(Preconditioner("identity").apply(g2)["a"], g2["a"])


def test_instant_method_smoke() -> None:
    """Default instant mode (EMA Lambda, forward JVP) through ``loss``: the first call primes Lambda (zero loss,
    no student gradient), the second moves the student; finite, teacher untouched, one phase."""
    torch.manual_seed(4)
    tea = GaussianDenoiser(MLP(8, width=16, depth=1), PROC)
    for p in tea.parameters():
        nn.init.normal_(p, std=0.2, generator=gen(14))
    m = MomentMatching(tea, init_from_teacher(tea), process=PROC, mode="instant", k=4)
    assert [p.name for p in m.phases()] == ["student"] and set(m.trainable()) == {"student"}
    assert m.config()["precond"] == "ema" and m.config()["jvp"] == "forward" and m.config()["data_grad"] == "running"
    x = {"x": make_gmm8d().sample(64, generator=gen(15)).float()}
    nets = {**m.trainable(), **m.frozen()}
    first = m.loss("student", x, nets, gen(16))
    first.loss.backward()
    assert float(first.loss.detach()) == 0.0 and m.precond.count == 1 and float(first.logs["g_data_norm"]) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in m.student.parameters())
    out = m.loss("student", x, nets, gen(16))
    out.loss.backward()
    assert torch.isfinite(out.loss) and m.precond.count == 2
    assert all(p.grad is None for p in tea.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in m.student.parameters())
    with pytest.raises(ValueError):
        m.instant_loss({"student": m.student, "teacher": GMMOracle(make_gmm8d(), PROC.schedule)},
                       *[m.draw(x["x"][:8], gen(17))] * 2)


def _grads(m: MomentMatching, fn: TeacherFn, d: Draw, *, graph: bool) -> tuple[dict, dict]:
    """(g_gen, g_data) of one draw; g_gen keeps its graph to the student when ``graph``."""
    if graph:
        x = m.sample_x(m.student, d)
    else:
        with torch.no_grad():
            x = m.sample_x(m.student, d)
    w = m.weight(d.s)
    return (teacher_grad(fn, m.renoise(d, x), d.s, x, w, create_graph=graph),
            teacher_grad(fn, m.renoise(d, d.x), d.s, d.x, w))


def test_instant_expectation_is_gradient_of_moment_difference() -> None:
    """A finite (linear) teacher whose expected loss gradient on real data is far from zero: the expected student
    gradient of the instant loss equals 1/2 grad_eta J with J = 1/2 ||m||^2_Lambda, m = E g_gen - E g_data (by
    autograd through big-sample estimates of both expectations: grad of 1/2 <m_B, Lambda sg m_A>), and not the
    data-blind one with m = E g_gen."""
    m, nets, shift = setup()
    fn = TeacherFn(nets["teacher"])
    params = list(m.student.parameters())
    n = 100_000
    da, db = m.draw(data(n, 40, shift), gen(41)), m.draw(data(n, 42, shift), gen(43))
    ga_gen, ga_data = _grads(m, fn, da, graph=False)
    gb_gen, gb_data = _grads(m, fn, db, graph=True)
    data_norm = math.sqrt(float(dot(ga_data, ga_data)))
    assert data_norm > 0.3 * math.sqrt(float(dot(ga_gen, ga_gen)))  # a teacher that is far from perfect
    m_a = {k: v - ga_data[k] for k, v in ga_gen.items()}
    m_b = {k: v - gb_data[k] for k, v in gb_gen.items()}
    ref = torch.autograd.grad(0.5 * dot(m_b, m.precond.apply(m_a)), params, retain_graph=True)
    blind = torch.autograd.grad(0.5 * dot(gb_gen, m.precond.apply(ga_gen)), params)
    ours = torch.autograd.grad(m.instant_loss(nets, da, db).loss, params)

    def rel(a, b) -> float:
        return math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(a, b))) / \
            math.sqrt(sum(float(y.pow(2).sum()) for y in b))

    assert rel(ours, ref) < 1e-6, rel(ours, ref)
    assert rel(blind, ref) > 0.2, rel(blind, ref)  # the data term matters here
    # unbiasedness over small independent (A, B) pairs: the mean of 400 pair gradients within 4 SE of ref
    flat = []
    for i in range(400):
        a = m.draw(data(16, 1000 + 2 * i, shift), gen(5000 + 2 * i))
        b = m.draw(data(16, 1001 + 2 * i, shift), gen(5001 + 2 * i))
        flat.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(m.instant_loss(nets, a, b).loss, params)]))
    g = torch.stack(flat)
    want = torch.cat([r.reshape(-1) for r in ref])
    z = (g.mean(0) - want) / (g.std(0) / math.sqrt(len(flat)))
    assert float(z.abs().max()) < 4.5, float(z.abs().max())
    wrong = torch.cat([r.reshape(-1) for r in blind])
    assert float(((g.mean(0) - wrong) / (g.std(0) / math.sqrt(len(flat)))).abs().max()) > 6


def test_running_data_mean_is_the_average_of_batch_data_gradients_and_checkpointed() -> None:
    """``data_grad="running"``: after n calls the data term is the mean of the n per-batch g_data (E g_data is a
    constant of the frozen teacher, so the mean stays unbiased); it lives in ``method_state`` for exact resumes;
    with ``none`` no data gradient is taken."""
    m, nets, shift = setup(precond="fixed", data_grad="running")
    fn = TeacherFn(nets["teacher"])
    draws = [m.draw(data(32, 80 + i, shift), gen(90 + i)) for i in range(4)]
    batch = [_grads(m, fn, d, graph=False)[1] for d in draws[:3]]
    for d in draws[:3]:
        m.instant_loss(nets, d, draws[3])
    assert m.data_count == 3
    for k in batch[0]:
        torch.testing.assert_close(m.data_mean[k], sum(b[k] for b in batch) / 3)
    m2, _, _ = setup(precond="fixed", data_grad="running")
    m2.load_method_state(m.method_state())
    params = list(m.student.parameters())
    a = torch.autograd.grad(m.instant_loss(nets, draws[0], draws[3]).loss, params)
    b = torch.autograd.grad(m2.instant_loss({**nets, "student": m.student}, draws[0], draws[3]).loss, params)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    none, nets_n, _ = setup(precond="fixed", data_grad="none")
    out = none.instant_loss(nets_n, draws[0], draws[3])
    assert none.data_count == 0 and "g_data_norm" not in out.logs
    with pytest.raises(ValueError, match="data_grad"):
        setup(data_grad="sometimes")


def test_preconditioner_is_applied_before_its_update() -> None:
    """EMA Lambda: call 1 primes it (zero loss); call 2 uses Lambda built from call 1's g_A only, so nu does not
    depend on the current g_A (Adam's order would give Lambda g = sign(g) on the first step)."""
    m, nets, shift = setup(precond="ema")
    fn = TeacherFn(nets["teacher"])
    params = list(m.student.parameters())
    d1, d2, db = (m.draw(data(32, 60 + i, shift), gen(70 + i)) for i in range(3))
    assert float(m.instant_loss(nets, d1, db).loss.detach()) == 0.0 and m.precond.count == 1
    g1_gen, g1_data = _grads(m, fn, d1, graph=False)
    g1 = {k: v - g1_data[k] for k, v in g1_gen.items()}
    lam = {k: 1.0 / ((v**2).sqrt() + m.precond.eps) for k, v in g1.items()}  # bias-corrected v_hat = g1^2
    g2_gen, g2_data = _grads(m, fn, d2, graph=False)
    nu = {k: -(v - g2_data[k]) * lam[k] for k, v in g2_gen.items()}
    with torch.no_grad():
        xb = m.sample_x(m.student, db)
    xb_graph = m.sample_x(m.student, db)
    delta = teacher_jvp(fn, m.renoise(db, xb), db.s, nu)
    want = torch.autograd.grad((m.weight(db.s) * (xb_graph * delta).sum(1)).mean(), params)
    ours = torch.autograd.grad(m.instant_loss(nets, d2, db).loss, params)
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert m.precond.count == 2


# ------------------------------------------------------------------------------------------------ CFG
class LabelTeacher(nn.Module):
    """T(z, s, c) = table[c] (last row: unconditional)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4, 2, generator=gen(19), dtype=F64))

    def forward(self, z: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        return self.table[cond] + 0 * z


def test_cfg_teacher() -> None:
    """T_w = T(null) + w (T(c) - T(null)) with null = num_classes, in the teacher call, g_A and the JVP."""
    tea = LabelTeacher()
    m = MomentMatching(tea, Student(), process=PROC, mode="instant", conditional=True, num_classes=3, guidance=2.5)
    cond = torch.tensor([0, 1, 2, 2])
    z, s = torch.zeros(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    want = (tea.table[3] + 2.5 * (tea.table[cond] - tea.table[3])).detach()
    torch.testing.assert_close(m.teacher_mean(tea, z, s, cond), want)
    fn = TeacherFn(tea, guidance=2.5, null_label=3)
    torch.testing.assert_close(fn(fn.params, z, s, cond), want)
    nu = {"table": torch.randn(4, 2, generator=gen(20), dtype=F64)}
    for route in ROUTES:
        torch.testing.assert_close(teacher_jvp(fn, z, s, nu, cond, route=route),
                                   nu["table"][3] + 2.5 * (nu["table"][cond] - nu["table"][3]))
    plain = MomentMatching(tea, Student(), process=PROC, mode="instant", conditional=True, num_classes=3)
    torch.testing.assert_close(plain.teacher_mean(tea, z, s, cond), tea.table[cond].detach())


def test_preconditioner_foreach_bookkeeping_equals_the_per_tensor_loop():
    """The foreach update / apply (issue 28: no per-parameter Python loop) is bit-identical to the per-tensor
    formulas v <- beta v + (1 - beta) g^2 and g / (sqrt(v / (1 - beta^n)) + eps)."""
    gen = torch.Generator().manual_seed(0)
    grads = [{"a": torch.randn(5, 7, generator=gen), "b": torch.randn(3, generator=gen)} for _ in range(5)]
    p = Preconditioner("ema", beta=0.9, eps=1e-8)
    v: dict[str, torch.Tensor] = {}
    for n, g in enumerate(grads, start=1):
        if p.ready():
            corr = 1.0 - 0.9 ** (n - 1)
            out = p.apply(g)
            for k in g:
                assert torch.equal(out[k], g[k] / ((v[k] / corr).sqrt() + 1e-8)), k
        p.update(g)
        v = {k: 0.9 * v.get(k, torch.zeros_like(x)) + (1 - 0.9) * x ** 2 for k, x in g.items()}
        assert all(torch.equal(p.v[k], v[k]) for k in g)
