"""IDLM's fixed point on enumerable uniform (Duo) sources: with an exact teacher and an exact fake, is the data law
a stationary point of the student's expected gradient?

(a) ``uniform_estimator="hard"`` (the default). Source: a two-token (N = 4, L = 2) mixture of two products, which a
latent-mixture student (two components picked by the sign of its noise) represents exactly. Teacher: the exact
NELBO minimiser of the data under the uniform process, the leave-one-out conditional p(x^l | z_t^{-l})
(``_discrete_oracles``); fake: the same for the student's law, which is the stationary point of the method's own aux
loss (tested). At student law = data law that fake *is* the teacher, so every draw of the student gradient is 0;
moved off it, the Monte-Carlo gradient of ``IDLM.loss`` equals the exact expected gradient (enumeration over z,
Gauss-Legendre over t) and is clearly nonzero.

(b) ``uniform_estimator="relaxed"`` (the paper's). The law of z_obs = argmax(a~_t G + s~_t xi) for a soft G, by
quadrature P(argmax = z) = int phi(v - m_z) prod_{j != z} Phi(v - m_j) dv with m = a~ G / s~ (checked by Monte
Carlo), is not q_t(. | G) = alpha_t G + (1 - alpha_t) / N; the hard corruption's is. Consequence on a one-token
source (N = 8, a two-component student at the data law p, teacher p): the exact minimiser of the relaxed fake loss
(tau -> 0) is F_t(z) = sum_k w_k G_k / sum_k w_k with w_k = pi_k P_relaxed(z | G_k) / q_t(z | G_k) (both the KL and
the Itakura-Saito part of g are minimised there), not p, and the exact expected relaxed student gradient at the
data law is nonzero, both for a fake that reads argmax z_in (no pathwise term) and for one linear in z_in (pathwise
term: a boundary flux across argmax ties, which depends on the fake's values between one-hots). Both formulas are
checked against ``IDLM.loss`` at one t.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from _discrete_oracles import ExactDenoiser, all_sequences
from fewstep.bench.context import config_overrides
from fewstep.config import IDLMCfg
from fewstep.methods.idlm import IDLM, hard_uniform_corruption, relax_uniform, uniform_rb_terms
from fewstep.processes.gaussian_connection import GaussianConnection
from fewstep.processes.uniform import UniformProcess

pytestmark = pytest.mark.usefixtures("torch_single_thread")

N2, L2 = 4, 2  # part (a): the two-token source
SEQS2 = all_sequences(N2, L2)
N8 = 8  # part (b): the 8-token vocabulary
G8 = torch.softmax(torch.tensor([2.0, 1.2, 0.6, 0.3, 0.0, -0.4, -0.9, -1.5], dtype=torch.float64), -1)


# ---------------------------------------------------------------------------------------------------- helpers
class _Oracle(ExactDenoiser):
    """An exact denoiser usable as IDLM's teacher or fake (IDLM asks the fake for ``latent_dim``)."""

    latent_dim = 0


class _Mixture(nn.Module):
    """Latent-mixture student: G^l = softmax(theta[k, l]) [B, L, N] with k = [eps_0 > 0] (two equally likely
    components; eps_0 the first noise coordinate of position 0), whatever its input z~, t~. Its law is
    p_theta = (1/2) sum_k prod_l Cat(softmax(theta[k, l]))."""

    latent_dim = 1

    def __init__(self, theta: torch.Tensor, process) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.detach().clone().float())
        self.process = process

    def forward(self, z, t, *, latent=None, **_):
        k = (latent[:, 0, 0] > 0).long()
        return torch.log_softmax(self.theta[k], -1)


class _Tilted(nn.Module):
    """A fake log f = log_softmax(log f0(z, t) + beta[l]) around a fixed denoiser f0; beta [L, N] trainable."""

    latent_dim = 0

    def __init__(self, base: nn.Module, beta: torch.Tensor) -> None:
        super().__init__()
        self.base, self.process = base, base.process
        self.beta = nn.Parameter(beta.double().clone())

    def forward(self, z, t, **_):
        return torch.log_softmax(self.base(z, t) + self.beta, -1)


class _Table(nn.Module):
    """One-token denoiser f(z) = sum_v z_v softmax(log F + beta)[v] [B, 1, N] of the current token only: hard z
    (one-hot) or the relaxed z_in (linear between the rows F [N, N]); beta [N, N] trainable (0 at start)."""

    latent_dim = 0

    def __init__(self, table: torch.Tensor, process) -> None:
        super().__init__()
        self.log_table, self.process = table.double().log(), process
        self.beta = nn.Parameter(torch.zeros_like(self.log_table))

    def forward(self, z, t, **_):
        zz = nn.functional.one_hot(z, self.process.vocab).double() if z.dtype == torch.long else z.double()
        return (zz @ torch.softmax(self.log_table + self.beta, -1)).log()


class _Recorder(nn.Module):
    """Records the times a denoiser is called at."""

    latent_dim = 0

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.process, self.times = base, base.process, []

    def forward(self, z, t, **kw):
        self.times.append(t.detach().double().clone())
        return self.base(z, t, **kw)


def _law(theta: torch.Tensor, seqs: torch.Tensor) -> torch.Tensor:
    """Joint [N^L] of the two-component mixture of products theta [2, L, N] (float64)."""
    g = torch.softmax(theta.detach().double(), -1)
    out = torch.zeros(seqs.shape[0], dtype=torch.float64)
    for k in range(2):
        comp = torch.ones(seqs.shape[0], dtype=torch.float64)
        for ell in range(seqs.shape[1]):
            comp = comp * g[k, ell][seqs[:, ell]]
        out = out + 0.5 * comp
    return out


def _nets(method: IDLM) -> dict[str, nn.Module]:
    return {"teacher": method.teacher, "student": method.student, "aux": method.aux}


def _mc_grad(method: IDLM, phase: str, param: nn.Parameter, p_data: torch.Tensor, seqs: torch.Tensor, *,
             reps: int, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard error) [numel] of the gradient of ``IDLM.loss(phase)`` w.r.t. ``param`` over ``reps``
    independent batches of data x0 ~ p_data."""
    g = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(reps):
        x0 = seqs[torch.multinomial(p_data, batch, replacement=True, generator=g)]
        loss = method.loss(phase, {"x": x0}, _nets(method), g).loss
        grads.append(torch.autograd.grad(loss, param)[0].double().reshape(-1))
    stack = torch.stack(grads)
    return stack.mean(0), stack.std(0) / math.sqrt(reps)


def _gauss_legendre(lo: float, hi: float, nodes: int) -> list[tuple[float, float]]:
    """(t, weight) of the mean over U(lo, hi)."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    return [(lo + (hi - lo) * 0.5 * (uq + 1), 0.5 * wq) for uq, wq in zip(u, w)]


def _exact_hard_gradient(method: IDLM, student: _Mixture, nodes: int = 48) -> torch.Tensor:
    """Exact E[d loss / d theta] [numel] of the hard student phase (independent coupling, t ~ U(t_band); the
    student ignores its input): E_k E_t sum_z P(z | k, t) (1/L) sum_l <G^l_k, delta^l(z, t)>, z enumerated."""
    proc, seqs = method.process, SEQS2
    g_all = torch.softmax(student.theta.double(), -1)  # [2, L, N]
    total = torch.zeros((), dtype=torch.float64)
    for tv, wq in _gauss_legendre(*method.t_band, nodes):
        t = torch.full((seqs.shape[0],), tv, dtype=torch.float64)
        f_t, f_f = method.teacher(seqs, t).exp(), method.aux(seqs, t).exp()
        for k in range(2):
            g = g_all[k].expand(seqs.shape[0], -1, -1)
            p_z = proc.forward_probs(g.detach(), t).gather(-1, seqs.unsqueeze(-1)).squeeze(-1).prod(-1)
            delta = uniform_rb_terms(proc, seqs, g.detach(), f_t, t) - uniform_rb_terms(proc, seqs, g.detach(), f_f, t)
            total = total + 0.5 * wq * (p_z[:, None, None] * g * delta).sum() / seqs.shape[1]
    return torch.autograd.grad(total, student.theta)[0].double().reshape(-1)


def _relaxed_law(connection: GaussianConnection, process, probs: torch.Tensor, t: float,
                 points: int = 4001) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(P(argmax(a~ G + s~ xi) = z) [..., N], the tie densities D [..., N, N] of w_z = w_j at the top (in w units,
    zero diagonal; dP(z)/dG_j = -a~ D[z, j] for z != j), a~) for G = ``probs`` [..., N], by trapezoid quadrature in
    v = u / s~ (float64)."""
    a = float(connection.alpha_tilde(process.schedule.alpha(torch.tensor(t, dtype=torch.float64))))
    s = math.sqrt(1 - a * a)
    m = a * probs.double() / s
    v = torch.linspace(float(m.min()) - 9, float(m.max()) + 9, points, dtype=torch.float64)
    d = v - m[..., None]  # [..., N, V]
    log_pdf = -0.5 * d * d - 0.5 * math.log(2 * math.pi)
    log_cdf = torch.special.log_ndtr(d)
    top = log_cdf.sum(-2, keepdim=True)  # log prod_j Phi(v - m_j)
    law = torch.trapezoid(torch.exp(log_pdf - log_cdf + top), v, dim=-1)
    r = log_pdf - log_cdf
    tie = torch.trapezoid(torch.exp(r[..., :, None, :] + r[..., None, :, :] + top[..., None, :, :]), v, dim=-1) / s
    return law, tie.masked_fill(torch.eye(probs.shape[-1], dtype=torch.bool), 0.0), a


def _g(process, z: torch.Tensor, x: torch.Tensor, f: torch.Tensor, t: float) -> torch.Tensor:
    """g(z, x, f) [M] of one-token rows: z [M], soft x [M, N], f [M, N]."""
    tt = torch.full((z.shape[0],), t, dtype=torch.float64)
    return process.elbo_integrand(z[:, None], x[:, None], f[:, None], tt)[:, 0]


def _one_token_terms(connection, process, theta: torch.Tensor, p: torch.Tensor, t: float, estimator: str):
    """One-token source, teacher = p (constant), student theta [2, 1, N] (components G_k, pi_k = 1/2), one t.

    Returns (F [z, N]: the exact minimiser of the estimator's aux loss among fakes of the current token, soft-target
    gradient [numel], pathwise gradient [numel] for a fake linear in z_in), all exact expectations (tau -> 0).
    hard: z ~ q_t(. | G_k); relaxed: z ~ P_relaxed(. | G_k). The aux loss sum_k pi_k P(z | G_k) g(z, G_k, f) is
    minimised at F(z) = sum_k w_k G_k / sum_k w_k, w_k = pi_k P(z | G_k) / q_t(z | G_k). The pathwise term of a fake
    f(z_in) linear between its rows: moving G_j moves mass a~ D_k[z, j] across the z|j tie, where z_in runs from e_z
    to e_j while z_obs switches from z to j half-way (M = (F(z) + F(j)) / 2):
    d/dG_j E[-g(z_obs, G, f(z_in))] = -a~ sum_{z != j} D[z, j] ([g(z, M) - g(z, F_z)] + [g(j, F_j) - g(j, M)])."""
    n = process.vocab
    th = theta.detach().double().clone().requires_grad_(True)
    gk = torch.softmax(th[:, 0], -1)  # [2, N]
    gd = gk.detach()
    q = process.forward_probs(gd[:, None], torch.full((2,), t, dtype=torch.float64))[:, 0]  # [2, N] q_t(z | G_k)
    if estimator == "relaxed":
        law, tie, a = _relaxed_law(connection, process, gd, t)
    else:
        law, tie, a = q, torch.zeros(2, n, n, dtype=torch.float64), 0.0
    w = 0.5 * law / q
    fake = (w[..., None] * gd[:, None, :]).sum(0) / w.sum(0)[:, None]  # [z, N]
    zs = torch.arange(n)
    zz, jj = zs.repeat_interleave(n), zs.repeat(n)  # every ordered pair (z, j)
    mid = 0.5 * (fake[zz] + fake[jj])
    soft = torch.zeros((), dtype=torch.float64)
    path = torch.zeros((), dtype=torch.float64)
    for k in range(2):
        x = gk[k].expand(n, n)
        soft = soft + 0.5 * (law[k] * (_g(process, zs, x, p.expand(n, n), t) - _g(process, zs, x, fake, t))).sum()
        xd = gd[k].expand(n * n, n)
        jump = ((_g(process, zz, xd, mid, t) - _g(process, zz, xd, fake[zz], t))
                + (_g(process, jj, xd, fake[jj], t) - _g(process, jj, xd, mid, t))).reshape(n, n)  # [z, j]
        path = path + 0.5 * (gk[k] * (-a * (tie[k] * jump).sum(0))).sum()
    g_soft = torch.autograd.grad(soft, th, retain_graph=True)[0].reshape(-1)
    g_path = torch.autograd.grad(path, th)[0].reshape(-1) if estimator == "relaxed" else torch.zeros_like(g_soft)
    return fake, g_soft, g_path


# ------------------------------------------------------------------------------- (a) hard estimator, L = 2
def _two_token_case():
    proc = UniformProcess(N2)
    g = torch.Generator().manual_seed(0)
    theta_star = (1.5 * torch.randn(2, L2, N2, generator=g, dtype=torch.float64)).float()
    theta_off = theta_star + 0.5 * torch.randn(2, L2, N2, generator=g)
    p_data = _law(theta_star, SEQS2)
    return proc, theta_star, theta_off, p_data, _Oracle(p_data, N2, L2, proc, mode="loo")


def test_hard_estimator_expected_gradient_vanishes_at_the_fixed_point_only():
    """Exact teacher (leave-one-out conditional of the data), exact fake (that of the student's law). At student law
    = data law: exact expected gradient 0 and the Monte-Carlo mean within 4.5 SE of it (here exactly 0: the fake is
    the teacher). Off it (theta + 0.5 N(0, 1)): the Monte-Carlo mean of IDLM.loss's gradient equals the exact
    expected gradient within 4.5 SE per coordinate, and is > 20 SE from 0 (measured: |E grad| = 0.0307, SE 4.7e-4)."""
    proc, theta_star, theta_off, p_data, teacher = _two_token_case()
    norms = {}
    for name, theta in (("fixed", theta_star), ("off", theta_off)):
        student = _Mixture(theta, proc)
        fake = _Oracle(_law(student.theta, SEQS2), N2, L2, proc, mode="loo")
        method = IDLM(teacher, student, fake, length=L2)
        assert method.uniform_estimator == "hard"  # the class default (as IDLMCfg's)
        exact = _exact_hard_gradient(method, student)
        mean, se = _mc_grad(method, "student", student.theta, p_data, SEQS2, reps=24, batch=2048)
        assert bool(((mean - exact).abs() <= 4.5 * se + 1e-12).all()), (name, mean, exact, se)
        norms[name] = (float(exact.norm()), float(mean.norm()), float(se.norm()))
    assert norms["fixed"][0] < 1e-12 and norms["fixed"][1] <= 4 * norms["fixed"][2] + 1e-12
    assert norms["off"][0] > 0.02 and norms["off"][1] > 20 * norms["off"][2], norms


def test_hard_fake_minimiser_is_the_exact_denoiser_of_the_student_law():
    """The fake used above is the stationary point of the method's own hard aux loss: for a tilted fake
    log_softmax(log f_exact + beta) the Monte-Carlo aux gradient in beta is 0 within 4.5 SE at beta = 0 and clearly
    nonzero at beta != 0 (student off the data law, so the minimiser is the student's law's, not the data's)."""
    proc, _, theta_off, p_data, teacher = _two_token_case()
    student = _Mixture(theta_off, proc)
    exact_fake = _Oracle(_law(student.theta, SEQS2), N2, L2, proc, mode="loo")
    g = torch.Generator().manual_seed(3)
    for beta, stationary in ((torch.zeros(L2, N2), True), (0.3 * torch.randn(L2, N2, generator=g), False)):
        fake = _Tilted(exact_fake, beta)
        method = IDLM(teacher, student, fake, length=L2)
        mean, se = _mc_grad(method, "aux", fake.beta, p_data, SEQS2, reps=24, batch=2048, seed=4)
        if stationary:
            assert bool((mean.abs() <= 4.5 * se).all()), (mean, se)
        else:
            assert float(mean.norm()) > 20 * float(se.norm()), (mean, se)


# ------------------------------------------------------------------ (b) the relaxed corruption law and its bias
def _freq(z: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(z.reshape(-1), minlength=n).double() / z.numel()


def test_relaxed_corruption_law_is_not_q_t_but_the_hard_one_is():
    """8-token soft G: the law of argmax(a~_t G + s~_t xi) (quadrature, = its Monte-Carlo frequencies within 4.5 SE)
    is TV 0.221 / 0.079 / 0.082 / 0.060 / 0.031 / 0.005 from q_t(. | G) at t = 0.001 / 0.1 / 0.3 / 0.5 / 0.7 / 0.9;
    the hard corruption (x ~ Cat(G), z ~ q_t(. | x)) has law q_t(. | G) within 4.5 SE per token."""
    proc, con = UniformProcess(N8), GaussianConnection(N8)
    g = torch.Generator().manual_seed(0)
    m = 100_000
    probs = G8.expand(m, 1, N8)
    tvs = {}
    for tv in (0.001, 0.1, 0.3, 0.5, 0.7, 0.9):
        t = torch.full((m,), tv, dtype=torch.float64)
        q = proc.forward_probs(G8[None, None], t[:1])[0, 0]
        law = _relaxed_law(con, proc, G8, tv)[0]
        assert float(law.sum()) == pytest.approx(1.0, abs=1e-9)
        xi = torch.randn(probs.shape, generator=g, dtype=torch.float64)
        relaxed = _freq(relax_uniform(con, proc, probs, t, xi, 1e-3)[1], N8)
        assert bool(((relaxed - law).abs() <= 4.5 * (law * (1 - law) / m).sqrt()).all()), (tv, relaxed, law)
        hard = _freq(hard_uniform_corruption(proc, probs, t, g), N8)
        assert bool(((hard - q).abs() <= 4.5 * (q * (1 - q) / m).sqrt()).all()), (tv, hard, q)
        tvs[tv] = 0.5 * float((law - q).abs().sum())
    assert tvs[0.001] > 0.2 and min(tvs[tv] for tv in (0.1, 0.3, 0.5)) > 0.05 and tvs[0.7] > 0.02, tvs
    assert tvs[0.9] < tvs[0.7] < tvs[0.5]  # the relaxation is exact at alpha = 0 only


def _one_token_case():
    proc, con = UniformProcess(N8), GaussianConnection(N8)
    theta = (1.5 * torch.randn(2, 1, N8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).float()
    p = torch.softmax(theta.double()[:, 0], -1).mean(0)  # the data law = the student's law
    return proc, con, theta, p


def test_relaxed_estimator_is_biased_at_the_fixed_point():
    """One-token source p, two-component student at p, teacher p (the exact NELBO denoiser of a one-token source).
    hard: the exact fake is p and the exact expected gradient 0. relaxed: the exact fake F_t is not p (max |F - p|
    0.087 / 0.044 / 0.019 / 0.009 at t = 0.001 / 0.1 / 0.3 / 0.5) and the exact expected student gradient,
    integrated over t ~ U(1e-3, 0.999), has norm 0.0113 for a fake of argmax z_in (soft-target term only) and
    0.0133 for a fake linear in z_in (plus the pathwise term): about the hard gradient of a student whose logits
    are moved by 0.16 N(0, 1) off the data law (KL 0.002)."""
    proc, con, theta, p = _one_token_case()
    lo, hi = proc.t_min, proc.t_max
    total = {"hard": 0.0, "relaxed": 0.0, "relaxed_path": 0.0}
    for tv, wq in _gauss_legendre(lo, hi, 24):
        for est in ("hard", "relaxed"):
            fake, g_soft, g_path = _one_token_terms(con, proc, theta, p, tv, est)
            if est == "hard":
                assert torch.allclose(fake, p.expand_as(fake), atol=1e-12)
            total[est] = total[est] + wq * g_soft
            if est == "relaxed":
                total["relaxed_path"] = total["relaxed_path"] + wq * (g_soft + g_path)
    norms = {k: float(v.norm()) for k, v in total.items()}
    assert norms["hard"] < 1e-12, norms
    assert norms["relaxed"] > 5e-3 and norms["relaxed_path"] > 5e-3, norms
    fake, _, _ = _one_token_terms(con, proc, theta, p, 0.1, "relaxed")
    assert float((fake - p).abs().max()) > 0.03


@pytest.mark.parametrize("pathwise", [False, True])
def test_relaxed_exact_expectations_match_the_method(pathwise):
    """The formulas above against IDLM.loss (relaxed, tau = 1e-3, t in a 1e-6 band at t = 0.3; fake = the exact
    F_t linear in z_in): the Monte-Carlo student gradient equals soft (+ pathwise) within 4.5 SE per coordinate and
    is > 10 SE from 0; the aux gradient is 0 within 4.5 SE at fake = F_t and > 10 SE from 0 at fake = teacher."""
    proc, con, theta, p = _one_token_case()
    t0 = 0.3
    fake_table, g_soft, g_path = _one_token_terms(con, proc, theta, p, t0, "relaxed")
    exact = g_soft + g_path if pathwise else g_soft
    teacher = _Table(p.expand(N8, N8), proc)
    student = _Mixture(theta, proc)
    seqs, p1 = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.float64)  # the student ignores x0

    def method(fake):
        return IDLM(teacher, student, fake, length=1, uniform_estimator="relaxed", pathwise=pathwise,
                    t_band=(t0, t0 + 1e-6))

    m_exact = method(_Table(fake_table, proc))
    reps = 120 if pathwise else 40
    mean, se = _mc_grad(m_exact, "student", student.theta, p1, seqs, reps=reps, batch=8192)
    assert bool(((mean - exact).abs() <= 4.5 * se).all()), (mean, exact, se)
    assert float(mean.norm()) > 10 * float(se.norm())
    if pathwise:
        return
    mean, se = _mc_grad(m_exact, "aux", m_exact.aux.beta, p1, seqs, reps=40, batch=8192)
    assert bool((mean.abs() <= 4.5 * se + 1e-12).all()), (mean, se)
    m_teacher = method(_Table(p.expand(N8, N8), proc))
    mean, se = _mc_grad(m_teacher, "aux", m_teacher.aux.beta, p1, seqs, reps=40, batch=8192)
    assert float(mean.norm()) > 10 * float(se.norm())


# ------------------------------------------------------------------------------------------------ t_band
@pytest.mark.parametrize("coupling", ["independent", "shared"])
def test_t_band_bounds_the_uniform_hard_corruption_time(coupling):
    """``--distill-set 't_band=[0.05,0.95]'``'s pair through ``config_overrides`` gives IDLMCfg.t_band = [0.05, 0.95],
    which (as build_discrete passes it) confines every time the teacher and fake see, in both phases, to the band."""
    over = config_overrides((("t_band", "[0.05,0.95]"),), IDLMCfg, flag="--distill-set", fixed=("name", "steps"))
    cfg = replace(IDLMCfg(), **over)
    assert cfg.t_band == [0.05, 0.95] and cfg.uniform_estimator == "hard"
    proc, _, theta_off, p_data, oracle = _two_token_case()
    teacher = _Recorder(oracle)
    fake = _Recorder(_Oracle(_law(theta_off, SEQS2), N2, L2, proc, mode="loo"))
    method = IDLM(teacher, _Mixture(theta_off, proc), fake, length=L2, t_band=tuple(cfg.t_band),
                  time_coupling=coupling, uniform_estimator=cfg.uniform_estimator)
    assert method.config()["t_band"] == [0.05, 0.95]
    g = torch.Generator().manual_seed(0)
    for phase in ("aux", "student"):
        x0 = SEQS2[torch.multinomial(p_data, 512, replacement=True, generator=g)]
        out = method.loss(phase, {"x": x0}, _nets(method), g)
        assert bool(torch.isfinite(out.loss))
    times = torch.cat(teacher.times + fake.times)
    assert len(teacher.times) == 1 and len(fake.times) == 2
    assert float(times.min()) >= 0.05 - 1e-7 and float(times.max()) <= 0.95 + 1e-7
    assert float(times.min()) < 0.06 and float(times.max()) > 0.94
