"""IDLM inverse distillation (spec/discrete.md section 3 and section 8, tests 9-12 and 15): exactness of the
objective on an enumerable toy, the vanishing generator loss when fake = teacher, mask-only cancellation under
SUBS (and the NaN trap), the advantage gradient, the IDLM-Duo pathwise gradient against finite differences,
training smoke tests of both processes and of the latent-noise student, and deterministic sampling."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from torch import nn

from _discrete_oracles import ExactDenoiser, all_sequences
from _tiny_text import LS, NS, latent_copy, tiny_teacher
from fewstep.denoisers.categorical import CategoricalDenoiser, subs
from fewstep.methods.idlm import (
    IDLM,
    masked_advantage,
    masked_generator_loss,
    masked_soft_ce,
    relax_uniform,
    uniform_gap,
    uniform_rb_terms,
)
from fewstep.nets.text_dit import TextDiT
from fewstep.processes.gaussian_connection import GaussianConnection
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers.discrete import sample_token_student
from fewstep.samplers.grids import uniform_grid

pytestmark = pytest.mark.usefixtures("torch_single_thread")

N, L = 3, 2  # the enumerable toy of tests/test_discrete_process.py (exact NELBO = H(p_data))
SEQS = all_sequences(N, L)  # [9, 2], lexicographic (the index order of every joint below)


def _joint(seed: int) -> torch.Tensor:
    """A random strictly positive joint over the N^L sequences (float64)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N ** L, generator=g, dtype=torch.float64) + 0.2
    return p / p.sum()


def _marginals(seed: int) -> torch.Tensor:
    """A random factorised generator output G [1, L, N] (strictly positive)."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(1, L, N, generator=g, dtype=torch.float64), -1)


def _product(probs: torch.Tensor) -> torch.Tensor:
    """The joint [N^L] (lexicographic) of independent positions with marginals probs [1, L, N]."""
    return probs[0, 0][SEQS[:, 0]] * probs[0, 1][SEQS[:, 1]]


def _kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


# ------------------------------------------------------------------- exact objective (spec test 9)
GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(20)


def _masked_gap_hard(p_theta: torch.Tensor, teacher: ExactDenoiser, fake: ExactDenoiser,
                     proc: MaskedProcess) -> float:
    """L(f*, p_theta) - L(f, p_theta), masked: x ~ p_theta and every mask pattern enumerated, Gauss-Legendre in t
    (for the log-linear schedule lambda(t) t^k (1 - t)^(L - k) is a polynomial for k >= 1, so 20 nodes are exact);
    per z the loss is ``masked_soft_ce`` with a one-hot target."""
    onehot = nn.functional.one_hot(SEQS, N).double()
    total = 0.0
    for u, wq in zip(GL_NODES, GL_WEIGHTS):
        tt = 0.5 * (u + 1)
        t = torch.full((SEQS.shape[0],), tt, dtype=torch.float64)
        lam = proc.elbo_weight(t)
        for pattern in all_sequences(2, L):  # 1 = masked
            k = int(pattern.sum())
            z = torch.where(pattern.bool()[None], torch.full_like(SEQS, proc.mask_id), SEQS)
            prob = tt ** k * (1 - tt) ** (L - k)
            per = (masked_soft_ce(onehot, teacher(z, t), z, lam, proc.mask_id)
                   - masked_soft_ce(onehot, fake(z, t), z, lam, proc.mask_id))
            total += 0.5 * wq * prob * float((p_theta * per).sum())
    return total


def _masked_gap_soft(probs: torch.Tensor, teacher: ExactDenoiser, fake: ExactDenoiser,
                     proc: MaskedProcess) -> float:
    """The same for a factorised p_theta, the way IDLM computes it: z drawn from the *product* law (visible
    tokens from G, masks with prob t), the student loss -lambda sum_{masked} <G, log f* - log f> through
    ``masked_advantage`` / ``masked_generator_loss`` (soft targets, no hard x at masked positions)."""
    total = 0.0
    for u, wq in zip(GL_NODES, GL_WEIGHTS):
        tt = 0.5 * (u + 1)
        for pattern in all_sequences(2, L):  # 1 = masked
            k = int(pattern.sum())
            masked = pattern.bool()[None].expand_as(SEQS)
            z = torch.unique(torch.where(masked, torch.full_like(SEQS, proc.mask_id), SEQS), dim=0)
            vis = z != proc.mask_id
            g = probs.expand(z.shape[0], -1, -1)
            # P(z | pattern) = prod over visible positions of G^l(z^l)
            pz = torch.where(vis, g.gather(-1, z.clamp(max=N - 1).unsqueeze(-1)).squeeze(-1),
                             torch.ones_like(z, dtype=torch.float64)).prod(-1)
            t = torch.full((z.shape[0],), tt, dtype=torch.float64)
            adv = masked_advantage(teacher(z, t), fake(z, t), z, proc.mask_id, N)
            per = masked_generator_loss(g, adv, proc.elbo_weight(t))
            total += 0.5 * wq * tt ** k * (1 - tt) ** (L - k) * float((pz * per).sum())
    return total


def _uniform_integrand(t_val: float, x_law: torch.Tensor | None, probs: torch.Tensor | None,
                       teacher: ExactDenoiser, fake: ExactDenoiser, proc: UniformProcess) -> float:
    """E_{z_t} sum_l [g(z_t, x, f*) - g(z_t, x, f)] at one t: hard x ~ x_law [N^L] (every x and z_t
    enumerated) or the soft target x = probs [1, L, N] with z_t ~ q_t(. | probs) (IDLM's form)."""
    zs = SEQS
    t = torch.full((zs.shape[0],), t_val, dtype=torch.float64)
    f_star, f = teacher(zs, t).exp(), fake(zs, t).exp()
    if probs is not None:
        soft = probs.expand(zs.shape[0], -1, -1)
        qz = proc.forward_probs(soft, t).gather(-1, zs.unsqueeze(-1)).squeeze(-1).prod(-1)
        g = (proc.elbo_integrand(zs, soft, f_star, t) - proc.elbo_integrand(zs, soft, f, t)).sum(-1)
        return float((qz * g).sum())
    total = 0.0
    for xi, x in enumerate(SEQS):
        xx = x[None].expand(zs.shape[0], -1)
        qz = proc.forward_probs(xx, t).gather(-1, zs.unsqueeze(-1)).squeeze(-1).prod(-1)
        g = (proc.elbo_integrand(zs, xx, f_star, t) - proc.elbo_integrand(zs, xx, f, t)).sum(-1)
        total += float(x_law[xi] * (qz * g).sum())
    return total


def _uniform_gap_exact(teacher, fake, proc, *, x_law=None, probs=None) -> float:
    """L(f*, p_theta) - L(f, p_theta), uniform, continuous time over the whole [0, 1] (adaptive quadrature of
    the *difference*: the -log q_t(z|x) singularity of D_IS at t -> 0 cancels in it; the endpoint KL term is 0
    since alpha(1) = 0)."""
    value, err = quad(_uniform_integrand, 0.0, 1.0, args=(x_law, probs, teacher, fake, proc), limit=200,
                      epsabs=1e-12, epsrel=1e-12)
    assert err < 1e-9
    return value


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_idlm_objective_is_the_kl_masked(seed):
    """Masked, oracle teacher f*_{p*} and oracle fake f_{p_theta} (posteriors p(x^l | visible tokens)):
    L(f*, p_theta) - L(f_theta, p_theta) = KL(p_theta || p*) (the NELBO with an exact denoiser is -log p(x) for
    every x: any-order autoregression with exact conditionals)."""
    proc = MaskedProcess(N)
    p_star, p_theta = _joint(0), _joint(seed)
    teacher, fake = ExactDenoiser(p_star, N, L, proc), ExactDenoiser(p_theta, N, L, proc)
    assert _masked_gap_hard(p_theta, teacher, fake, proc) == pytest.approx(_kl(p_theta, p_star), abs=1e-10)
    # and exactly 0 at p_theta = p* (fake = teacher)
    assert _masked_gap_hard(p_star, teacher, ExactDenoiser(p_star, N, L, proc), proc) == 0.0


@pytest.mark.parametrize("seed", [21, 22])
def test_idlm_soft_target_student_loss_is_the_kl_masked(seed):
    """For a factorised generator G the Rao-Blackwellised student loss that IDLM trains,
    -lambda sum_{masked} <G, log f* - log f>, has expectation KL(G^1 x G^2 || p*) exactly (soft targets: no hard
    token is drawn at masked positions), equal to the hard-sample objective; p* is not a product, so it is > 0."""
    proc = MaskedProcess(N)
    p_star, probs = _joint(0), _marginals(seed)
    p_theta = _product(probs)
    teacher, fake = ExactDenoiser(p_star, N, L, proc), ExactDenoiser(p_theta, N, L, proc)
    soft = _masked_gap_soft(probs, teacher, fake, proc)
    assert soft == pytest.approx(_kl(p_theta, p_star), abs=1e-10)
    assert soft == pytest.approx(_masked_gap_hard(p_theta, teacher, fake, proc), abs=1e-12)
    assert soft > 1e-3


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_idlm_objective_is_the_kl_uniform(seed):
    """Uniform, oracle teacher and fake = the leave-one-out conditionals p(x^l | z_t^{-l}) of p* and p_theta,
    loss = ``UniformProcess.elbo_integrand`` (KL + Itakura-Saito): L(f*, p_theta) - L(f_theta, p_theta) =
    KL(p_theta || p*) to 1e-9 over t in [0, 1] (the full range: the training band [1e-3, 1 - 1e-3] would drop the
    endpoint mass); exactly 0 at p_theta = p*."""
    proc = UniformProcess(N)
    p_star, p_theta = _joint(0), _joint(seed)
    teacher = ExactDenoiser(p_star, N, L, proc, mode="loo")
    fake = ExactDenoiser(p_theta, N, L, proc, mode="loo")
    assert _uniform_gap_exact(teacher, fake, proc, x_law=p_theta) == pytest.approx(_kl(p_theta, p_star), abs=1e-9)
    same = ExactDenoiser(p_star, N, L, proc, mode="loo")
    assert _uniform_gap_exact(teacher, same, proc, x_law=p_star) == 0.0
    # the posterior-mean "fake" is not the loss minimiser: its gap to the teacher is not the KL
    mean_fake = ExactDenoiser(p_theta, N, L, proc, mode="mean")
    assert abs(_uniform_gap_exact(teacher, mean_fake, proc, x_law=p_theta) - _kl(p_theta, p_star)) > 1e-4


@pytest.mark.parametrize("seed", [21, 22])
def test_idlm_soft_target_student_loss_is_the_kl_uniform(seed):
    """Uniform with a factorised G: the soft-target form IDLM trains, E_{z ~ q_t(.|G)} sum_l g(z, G, f*) -
    g(z, G, f), integrates to KL(G^1 x G^2 || p*) (g's f-dependent part is linear in the target after the
    1/q_t(z|x) weight meets the z-probability, so the soft form is exact)."""
    proc = UniformProcess(N)
    p_star, probs = _joint(0), _marginals(seed)
    p_theta = _product(probs)
    teacher = ExactDenoiser(p_star, N, L, proc, mode="loo")
    fake = ExactDenoiser(p_theta, N, L, proc, mode="loo")
    soft = _uniform_gap_exact(teacher, fake, proc, probs=probs)
    assert soft == pytest.approx(_kl(p_theta, p_star), abs=1e-9)
    assert soft == pytest.approx(_uniform_gap_exact(teacher, fake, proc, x_law=p_theta), abs=1e-10)


# ------------------------------------------------- the method's Monte-Carlo loss vs the exact objective
class _Oracle(ExactDenoiser):
    """An exact masked denoiser usable as IDLM's teacher or fake (IDLM asks the fake for ``latent_dim``)."""

    latent_dim = 0


def _poly_mean(fn, lo: float, hi: float) -> float:
    """Mean of a polynomial (degree <= 15) over U(lo, hi), exactly (Gauss-Legendre)."""
    nodes, wts = np.polynomial.legendre.leggauss(8)
    return sum(0.5 * wq * fn(lo + (hi - lo) * 0.5 * (u + 1)) for u, wq in zip(nodes, wts))


def _exact_idlm_masked(student, teacher, fake, p_data: torch.Tensor, proc: MaskedProcess,
                       band: tuple[float, float]):
    """Exact expectations of IDLM's masked student-phase and aux-phase losses on the L=2, N=3 toy, and p_theta.

    The student's input z~ = noise(x0, t~), x0 ~ p_data, t~ ~ U(t_min, t_max) (16 states, enumerated); its law
    P(z~); G = student(z~) (a product per z~) and p_theta = sum_z~ P(z~) G^1 x G^2. The corruption at an
    *independent* t ~ U(band): every mask pattern with E[lambda(t) t^k (1 - t)^(L - k)], visible tokens drawn from
    G (the context probability is detached, as in the method: the implicit stop-gradient). Per token (/ L).
    Returns (E[student loss] (differentiable in the student), E[aux loss], p_theta [N^L])."""
    m = proc.mask_id
    w = [_poly_mean(lambda t, k=k: t ** k * (1 - t) ** (L - k), proc.t_min, proc.t_max) for k in range(L + 1)]
    c = [_poly_mean(lambda t, k=k: t ** (k - 1) * (1 - t) ** (L - k), *band) if k else 0.0 for k in range(L + 1)]
    pz: dict[tuple[int, ...], float] = {}
    for xi, x in enumerate(SEQS.tolist()):
        for pat in all_sequences(2, L).tolist():
            z = tuple(m if b else v for v, b in zip(x, pat))
            pz[z] = pz.get(z, 0.0) + float(p_data[xi]) * w[sum(pat)]
    zt = torch.tensor(list(pz), dtype=torch.long)
    prob = torch.tensor(list(pz.values()), dtype=torch.float64)
    g = student(zt, torch.ones(zt.shape[0]))[..., :N].float().exp().double()  # [Z, L, N], as the method casts
    p_theta = (prob[:, None] * g[:, 0][:, SEQS[:, 0]] * g[:, 1][:, SEQS[:, 1]]).sum(0)
    stud = torch.zeros((), dtype=torch.float64)
    aux = torch.zeros((), dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    for pat in all_sequences(2, L).tolist():
        k = sum(pat)
        if k == 0:
            continue
        vis = [ell for ell in range(L) if not pat[ell]]
        for xv in all_sequences(N, len(vis)).tolist() if vis else [[]]:
            z = [m] * L
            for ell, v in zip(vis, xv):
                z[ell] = v
            zz = torch.tensor([z])
            lt, lf = teacher(zz, one)[0, :, :N], fake(zz, one)[0, :, :N]
            ctx = torch.ones(g.shape[0], dtype=torch.float64)
            for ell, v in zip(vis, xv):
                ctx = ctx * g[:, ell, v].detach()
            for ell in range(L):
                if pat[ell]:
                    stud = stud + c[k] * (prob * ctx * -(g[:, ell] * (lt[ell] - lf[ell])).sum(-1)).sum()
                    aux = aux + c[k] * (prob * ctx * -(g[:, ell].detach() * lf[ell]).sum(-1)).sum()
    return stud / L, aux / L, p_theta


def _exact_setup():
    proc = MaskedProcess(N)
    torch.manual_seed(0)
    student = CategoricalDenoiser(TextDiT(N + 1, N + 1, L, dim=16, depth=1, heads=2, time_conditioned=False), proc)
    with torch.no_grad():
        student.net.head.weight.mul_(30)  # a sharp generator, far from the teacher
    p_star, p_data = _joint(0), _joint(7)
    teacher = _Oracle(p_star, N, L, proc)
    with torch.no_grad():
        p_theta = _exact_idlm_masked(student, teacher, teacher, p_data, proc, (proc.t_min, proc.t_max))[2]
    fake = _Oracle(p_theta, N, L, proc)  # the exact minimiser of L(f, p_theta)
    method = IDLM(teacher, student, fake, length=L)
    return method, p_star, p_data, p_theta


def _mc_losses(method, p_data: torch.Tensor, reps: int, batch: int = 4096):
    nets = {"teacher": method.teacher, "student": method.student, "aux": method.aux}
    g = torch.Generator().manual_seed(1)
    stud, aux, grads = [], [], []
    params = list(method.student.parameters())
    for _ in range(reps):
        x0 = SEQS[torch.multinomial(p_data, batch, replacement=True, generator=g)]
        out = method.loss("student", {"x": x0}, nets, g)
        grads.append(torch.cat([q.reshape(-1) for q in torch.autograd.grad(out.loss, params)]).double())
        stud.append(out.loss.item())
        with torch.no_grad():
            aux.append(method.loss("aux", {"x": x0}, nets, g).loss.item())
    return torch.tensor(stud, dtype=torch.float64), torch.tensor(aux, dtype=torch.float64), torch.stack(grads)


def test_exact_expected_losses_are_the_idlm_objective():
    """With the exact fake f = argmin L(., p_theta), the exact expected student loss is KL(p_theta || p*) / L
    (= L_IDLM per token) and the aux loss is H(p_theta) / L up to the t-band truncation."""
    method, p_star, p_data, p_theta = _exact_setup()
    stud, aux, _ = _exact_idlm_masked(method.student, method.teacher, method.aux, p_data, method.process, (0.0, 1.0))
    assert stud.item() == pytest.approx(_kl(p_theta, p_star) / L, abs=1e-6)  # float32 G
    assert float(aux) == pytest.approx(float(-(p_theta * p_theta.log()).sum()) / L, abs=1e-6)
    assert stud.item() > 0.05


def test_monte_carlo_student_loss_is_unbiased():
    """IDLM.loss('student') averages (within 4 standard errors) to the exact expectation above, and its gradient
    to the exact objective's gradient. This needs the corruption time t independent of the student-input time
    t~ (spec: 't ~ independent stratified U'): with both stratified in row order (t_i ~ t~_i, a bug this test
    caught) the mean was 0.1649 +- 0.0022 against the exact 0.1467."""
    method, _, p_data, _ = _exact_setup()
    exact, exact_aux, _ = _exact_idlm_masked(method.student, method.teacher, method.aux, p_data, method.process,
                                             method.t_band)
    reps = 48
    stud, aux, grads = _mc_losses(method, p_data, reps)
    se, se_aux = float(stud.std()) / math.sqrt(reps), float(aux.std()) / math.sqrt(reps)
    assert abs(float(aux.mean()) - float(exact_aux)) < 4 * se_aux
    g_exact = torch.cat([q.reshape(-1) for q in torch.autograd.grad(exact, list(method.student.parameters()))])
    g_mean = grads.mean(0)
    g_se = float(grads.std(0).norm()) / math.sqrt(reps)
    assert float((g_mean - g_exact).norm()) < 4 * g_se + 1e-3 * float(g_exact.norm())
    assert abs(float(stud.mean()) - exact.item()) < 4 * se, (float(stud.mean()), exact.item(), se)


# ------------------------------------------------------------------------ fake = teacher (spec test 9)
def test_masked_generator_loss_vanishes_when_fake_equals_teacher():
    g = torch.Generator().manual_seed(0)
    b, length, n = 4, 6, 5
    z = torch.randint(0, n + 1, (b, length), generator=g)
    z[:, 0] = n
    logp = subs(torch.randn(b, length, n + 1, generator=g), z, n)
    h = torch.randn(b, length, n, generator=g, dtype=torch.float64, requires_grad=True)
    adv = masked_advantage(logp, logp.clone(), z, n, n)
    assert bool((adv == 0).all())
    loss = masked_generator_loss(torch.softmax(h, -1), adv, torch.rand(b, generator=g) + 0.5)
    assert bool((loss == 0).all())
    loss.sum().backward()
    assert bool((h.grad == 0).all())


class TinyDenoiser(nn.Module):
    """A small differentiable float64 "denoiser" for soft inputs z_in [B, L, N] and t [B]: log-softmax of an
    affine map mixing every position (so the pathwise gradient sees context), plus a t term."""

    latent_dim = 0
    time_conditioned = True

    def __init__(self, process, length: int, seed: int, scale: float = 1.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n, self.length, self.process = process.vocab, length, process
        self.w = nn.Parameter(scale * torch.randn(length * n, length * n, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(length * n, generator=g, dtype=torch.float64))
        self.c = nn.Parameter(torch.randn(length * n, generator=g, dtype=torch.float64))

    def forward(self, z_in: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        b = z_in.shape[0]
        h = z_in.reshape(b, -1).double() @ self.w + self.b + t.double()[:, None] * self.c
        return torch.log_softmax(h.reshape(b, self.length, -1), -1)


class FixedInput(nn.Module):
    """``net`` evaluated at a fixed input, whatever it is called with (the stop-gradient reference)."""

    def __init__(self, net: nn.Module, z_in: torch.Tensor) -> None:
        super().__init__()
        self.net, self.z_in = net, z_in

    def forward(self, z_in: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.net(self.z_in, t)


@pytest.mark.parametrize("tau", [0.3, 1e-3])
def test_uniform_gap_vanishes_when_fake_equals_teacher(tau):
    proc = UniformProcess(4)
    conn = GaussianConnection(4)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    xi = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    net = TinyDenoiser(proc, 3, seed=2)
    gap = uniform_gap(conn, proc, torch.softmax(h, -1), t, xi, tau, net, net)
    assert bool((gap == 0).all())
    gap.sum().backward()
    assert bool((h.grad == 0).all())


# ---------------------------------------------------------------- mask-only cancellation (spec test 10)
def test_mask_only_cancellation_and_the_nan_trap():
    """With SUBS outputs of two different nets on one z: (1) the all-position teacher-minus-fake loss with the
    reference code's finite fill (-inf -> -1e6) equals masked_generator_loss(G, masked_advantage(...)) and visible
    positions contribute exactly 0; (2) the library's gradient w.r.t. G's logits is finite, although the raw
    log f* - log f is NaN at visible positions; (3) the naive where(mask, <G, a_raw>, 0) has the right value but
    NaN gradients (the trap the library avoids)."""
    g = torch.Generator().manual_seed(3)
    b, length, n = 5, 8, 6
    z = torch.randint(0, n + 1, (b, length), generator=g)
    z[:, :2] = n
    z[:, 2] = 1
    masked = z == n
    log_t = subs(torch.randn(b, length, n + 1, generator=g), z, n).double()
    log_f = subs(torch.randn(b, length, n + 1, generator=g), z, n).double()
    lam = torch.rand(b, generator=g, dtype=torch.float64) * 3 + 1
    h = torch.randn(b, length, n, generator=g, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(h, -1)

    lib = masked_generator_loss(probs, masked_advantage(log_t, log_f, z, n, n), lam)
    fill_t, fill_f = log_t.clamp_min(-1e6)[..., :n], log_f.clamp_min(-1e6)[..., :n]
    per_pos = -lam[:, None] * (probs * (fill_t - fill_f)).sum(-1)  # [b, L], every position
    assert bool((per_pos[~masked] == 0).all()) and bool((per_pos[masked] != 0).all())
    assert torch.allclose(per_pos.sum(-1), lib, atol=1e-12, rtol=0)  # lambda is applied after the sum there
    # the soft-CE difference is the same loss (teacher CE minus fake CE over masked positions)
    ce = masked_soft_ce(probs, log_t, z, lam, n) - masked_soft_ce(probs, log_f, z, lam, n)
    assert torch.allclose(ce, lib, atol=1e-12)

    lib.sum().backward()
    grad = h.grad.clone()
    assert bool(grad.isfinite().all()) and bool((grad[~masked] == 0).all()) and bool((grad[masked] != 0).any())

    a_raw = log_t[..., :n] - log_f[..., :n]
    assert bool(a_raw[~masked].isnan().any())  # -inf - (-inf) off the carried token
    h2 = h.detach().clone().requires_grad_(True)
    p2 = torch.softmax(h2, -1)
    naive = -lam * torch.where(masked, (p2 * a_raw).sum(-1), torch.zeros_like(masked, dtype=torch.float64)).sum(-1)
    assert torch.allclose(naive, lib.detach(), atol=1e-12)  # the value is right ...
    naive.sum().backward()
    assert bool(h2.grad.isnan().any())  # ... the gradient is not


# -------------------------------------------------------------------------- advantage gradient (test 11)
def test_advantage_gradient_closed_form():
    g = torch.Generator().manual_seed(4)
    b, length, n = 3, 5, 7
    z = torch.randint(0, n + 1, (b, length), generator=g)
    z[:, 0], z[:, 1] = n, 0
    masked = (z == n).unsqueeze(-1)
    a = torch.where(masked, torch.randn(b, length, n, generator=g, dtype=torch.float64),
                    torch.zeros(b, length, n, dtype=torch.float64))
    lam = torch.rand(b, generator=g, dtype=torch.float64) * 5 + 0.1
    h = torch.randn(b, length, n, generator=g, dtype=torch.float64, requires_grad=True)
    masked_generator_loss(torch.softmax(h, -1), a, lam).sum().backward()
    gg = torch.softmax(h.detach(), -1)
    want = -lam.reshape(-1, 1, 1) * gg * (a - (gg * a).sum(-1, keepdim=True))
    want = torch.where(masked, want, torch.zeros_like(want))
    assert torch.allclose(h.grad, want, atol=1e-12, rtol=0)
    # tokens the teacher likes more than the fake (a above its G-average) are promoted (gradient descent
    # raises their logits)
    promote = masked & (a > (gg * a).sum(-1, keepdim=True))
    assert bool((h.grad[promote.expand_as(h.grad)] < 0).all())


# ----------------------------------------------------------------- IDLM-Duo pathwise gradient (test 12)
def _duo_setup(tau: float, seed: int = 5):
    n, length, b = 4, 3, 2
    proc = UniformProcess(n)
    teacher = TinyDenoiser(proc, length, seed=seed)  # requires_grad=True until IDLM freezes it
    fake = TinyDenoiser(proc, length, seed=seed + 1)
    student = TinyDenoiser(proc, length, seed=seed + 2)
    method = IDLM(teacher, student, fake, length=length, tau=tau)
    fake.requires_grad_(False)  # frozen in the student phase (its optimiser does not step)
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(b, length, n, generator=g, dtype=torch.float64)
    xi = torch.randn(b, length, n, generator=g, dtype=torch.float64)
    t = torch.tensor([0.35, 0.6], dtype=torch.float64)
    return method, proc, h, xi, t


def _autograd(method, proc, h, xi, t, teacher, fake, pathwise: bool) -> torch.Tensor:
    hh = h.clone().requires_grad_(True)
    uniform_gap(method.connection, proc, torch.softmax(hh, -1), t, xi, method.tau, teacher, fake,
                pathwise=pathwise).sum().backward()
    return hh.grad


def _central_fd(method, proc, h, xi, t, teacher, fake, eps: float = 1e-6) -> torch.Tensor:
    z_obs = relax_uniform(method.connection, proc, torch.softmax(h, -1), t, xi, method.tau)[1]

    def f(hh: torch.Tensor) -> float:
        probs = torch.softmax(hh, -1)
        # the argmax (current token of g) must not flip inside the stencil: it carries no gradient
        assert torch.equal(relax_uniform(method.connection, proc, probs, t, xi, method.tau)[1], z_obs)
        with torch.no_grad():
            return float(uniform_gap(method.connection, proc, probs, t, xi, method.tau, teacher, fake).sum())

    out = torch.zeros_like(h)
    for i in range(h.numel()):
        e = torch.zeros(h.numel(), dtype=torch.float64)
        e[i] = eps
        e = e.reshape(h.shape)
        out.view(-1)[i] = (f(h + e) - f(h - e)) / (2 * eps)
    return out


def test_uniform_pathwise_gradient_matches_finite_differences():
    """tau = 0.3 (smooth relaxation), xi fixed, float64: autograd of uniform_gap w.r.t. the generator logits
    equals central differences (rtol 1e-5); the stop-gradient variant (pathwise=False) differs and equals the
    finite differences of the loss with the relaxed input frozen; the teacher gets no .grad."""
    method, proc, h, xi, t = _duo_setup(0.3)
    teacher, fake = method.teacher, method.aux
    assert all(not p.requires_grad for p in teacher.parameters())
    auto = _autograd(method, proc, h, xi, t, teacher, fake, pathwise=True)
    fd = _central_fd(method, proc, h, xi, t, teacher, fake)
    assert torch.allclose(auto, fd, rtol=1e-5, atol=1e-9)
    assert float(auto.abs().max()) > 1e-3

    stop = _autograd(method, proc, h, xi, t, teacher, fake, pathwise=False)
    assert float((stop - auto).norm()) > 1e-2 * float(auto.norm())
    z_in0 = relax_uniform(method.connection, proc, torch.softmax(h, -1), t, xi, method.tau)[0].detach()
    fd_stop = _central_fd(method, proc, h, xi, t, FixedInput(teacher, z_in0), FixedInput(fake, z_in0))
    assert torch.allclose(stop, fd_stop, rtol=1e-5, atol=1e-9)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in method.student.parameters())


def test_uniform_pathwise_gradient_at_the_default_tau_reaches_no_teacher_grad():
    method, proc, h, xi, t = _duo_setup(1e-3)
    assert method.tau == 1e-3
    auto = _autograd(method, proc, h, xi, t, method.teacher, method.aux, pathwise=True)
    assert bool(auto.isfinite().all())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.aux.parameters())


# ------------------------------------------------------------------------------------------ smoke
def _perturb(net: nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in net.parameters() if p.grad is not None]


@pytest.mark.parametrize("kind, latent, estimator", [("masked", 0, "hard"), ("masked", 8, "hard"),
                                                     ("uniform", 0, "hard"), ("uniform", 0, "relaxed")])
def test_idlm_smoke_both_phases(kind, latent, estimator):
    """Both phases on a random batch: finite losses; grads finite and nonzero for the trained net only; at
    initialisation (fake = teacher) the student loss and its gradient are exactly 0. Uniform: both estimators
    (``uniform_estimator`` is ignored by the masked process)."""
    teacher = tiny_teacher(kind)
    student = latent_copy(teacher, latent) if latent else copy.deepcopy(teacher)
    fake = copy.deepcopy(teacher)
    method = IDLM(teacher, student, fake, length=LS, steps=4, uniform_estimator=estimator)
    assert [ph.name for ph in method.phases()] == ["aux", "student"]
    assert set(method.trainable()) == {"student", "aux"} and set(method.frozen()) == {"teacher"}
    nets = {"teacher": teacher, "student": student, "aux": fake}
    x0 = torch.randint(0, NS, (16, LS), generator=torch.Generator().manual_seed(0))

    out = method.loss("student", {"x": x0}, nets, torch.Generator().manual_seed(1))
    assert out.loss.detach().item() == 0.0 and "idlm_gap" in out.logs and "student_entropy" in out.logs
    out.loss.backward()
    assert all(bool((gr == 0).all()) for gr in _grads(student))
    student.zero_grad(set_to_none=True)

    out = method.loss("aux", {"x": x0}, nets, torch.Generator().manual_seed(2))
    assert bool(out.loss.isfinite()) and out.loss.detach().item() > 0 and "fake_loss" in out.logs
    out.loss.backward()
    grads = _grads(fake)
    assert grads and all(bool(gr.isfinite().all()) for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    assert not _grads(student) and not _grads(teacher)
    fake.zero_grad(set_to_none=True)

    _perturb(fake, 3)
    out = method.loss("student", {"x": x0}, nets, torch.Generator().manual_seed(4))
    assert bool(out.loss.isfinite()) and out.loss.detach().item() != 0.0
    with torch.no_grad():  # the value is deterministic given the generator
        again = method.loss("student", {"x": x0}, nets, torch.Generator().manual_seed(4))
    assert torch.equal(again.loss, out.loss.detach())
    out.loss.backward()
    grads = _grads(student)
    assert grads and all(bool(gr.isfinite().all()) for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    assert not _grads(teacher)
    if kind == "masked" or estimator == "hard":
        assert not _grads(fake)  # the advantage / score difference is computed under no_grad
    # uniform relaxed: the pathwise gradient runs through the fake's forward, so its parameters (trainable, not
    # frozen like the teacher's) receive .grad here; the Trainer discards non-training roles' grads after each phase
    if latent:
        assert float(student.net.latent.weight.grad.abs().sum()) > 0


def test_latent_student_starts_at_the_teacher():
    """The latent map is zero-initialised: for any noise the latent student's output equals the teacher's
    exactly (both processes); a nonzero latent map makes the noise matter."""
    for kind in ("masked", "uniform"):
        teacher = tiny_teacher(kind)
        student = latent_copy(teacher, 8)
        g = torch.Generator().manual_seed(0)
        z = torch.randint(0, teacher.process.width, (5, LS), generator=g)
        t = torch.rand(5, generator=g)
        base = teacher(z, t)
        for _ in range(3):
            eps = 3 * torch.randn(5, LS, 8, generator=g)
            assert torch.equal(student(z, t, latent=eps), base)
        assert torch.equal(student(z, t), base)
        _perturb(student.net.latent, 1, scale=0.5)
        assert not torch.equal(student(z, t, latent=eps), base)


def test_fake_with_latent_noise_and_mixed_processes_are_rejected():
    teacher = tiny_teacher("masked")
    with pytest.raises(ValueError, match="latent"):
        IDLM(teacher, copy.deepcopy(teacher), latent_copy(teacher, 8), length=LS)
    with pytest.raises(ValueError, match="share one discrete process"):
        IDLM(teacher, tiny_teacher("uniform"), copy.deepcopy(teacher), length=LS)
    with pytest.raises(ValueError, match="t_band"):
        IDLM(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, t_band=(0.5, 0.2))


# ---------------------------------------------------------------------------------------- sampling
def test_generate_with_a_latent_student_is_a_pure_function_of_the_generator():
    teacher = tiny_teacher("masked")
    student = latent_copy(teacher, 8)
    _perturb(student.net.latent, 2, scale=0.5)  # make the noise matter
    method = IDLM(teacher, student, copy.deepcopy(teacher), length=LS, steps=2)
    nets = {"student": student}
    state = torch.get_rng_state()
    a = method.generate(64, nets=nets, generator=torch.Generator().manual_seed(7))
    b = method.generate(64, nets=nets, generator=torch.Generator().manual_seed(7))
    c = method.generate(64, nets=nets, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert a.shape == (64, LS) and a.dtype == torch.long and int(a.min()) >= 0 and int(a.max()) < NS
    assert torch.equal(a, b) and not torch.equal(a, c)
    tokens, stats = sample_token_student(student, (64, LS), grid=uniform_grid(1),
                                    generator=torch.Generator().manual_seed(7))
    again, _ = sample_token_student(student, (64, LS), grid=uniform_grid(1),
                                    generator=torch.Generator().manual_seed(7))
    assert torch.equal(tokens, again) and int(tokens.max()) < NS and stats["nfe"] == 1
    # the latent noise changes the one-step output law: with the latent map zeroed the same generator gives
    # another sample (the sampler's own uniforms are the same, only the noise input differs)
    with torch.no_grad():
        student.net.latent.weight.zero_()
    zeroed, _ = sample_token_student(student, (64, LS), grid=uniform_grid(1),
                                    generator=torch.Generator().manual_seed(7))
    assert not torch.equal(zeroed, tokens)


# ----------------------------------------------------------------- grid2d regression (spec test 15)
def _product_tv(a: torch.Tensor, b: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a[:, None] * b[None, :] - table).abs().sum()


def test_product_distributions_are_at_least_sqrt2_minus_1_from_the_checkerboard():
    """Any product law a x b is >= sqrt(2) - 1 in TV from the 4-band checkerboard (the one-step factorised
    sampler's limit); the bound is attained (a = b with mass 1/sqrt(2) on the even bands)."""
    from fewstep.data.grid2d import grid2d_table, product_tv

    table = grid2d_table("checkerboard", bins=32, bands=4)
    bound = math.sqrt(2) - 1
    assert product_tv(table) == pytest.approx(0.5, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    for sharp in (0.1, 1.0, 5.0):
        for _ in range(50):
            a = torch.softmax(sharp * torch.randn(32, generator=g, dtype=torch.float64), 0)
            b = torch.softmax(sharp * torch.randn(32, generator=g, dtype=torch.float64), 0)
            assert float(_product_tv(a, b, table)) >= bound - 1e-9
    even = ((torch.arange(32) * 4 // 32) % 2 == 0).double()
    best = even / even.sum() / math.sqrt(2) + (1 - even) / (1 - even).sum() * (1 - 1 / math.sqrt(2))
    assert float(_product_tv(best, best, table)) == pytest.approx(bound, abs=1e-12)
    # an optimiser over product laws does not get below the bound either
    ha = torch.randn(32, generator=g, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(32, generator=g, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([ha, hb], lr=0.05)
    lowest = 1.0
    for _ in range(400):
        opt.zero_grad()
        tv = _product_tv(torch.softmax(ha, 0), torch.softmax(hb, 0), table)
        tv.backward()
        opt.step()
        lowest = min(lowest, tv.item())
    assert bound - 1e-9 <= lowest < bound + 0.02


def _one_step_law(student: CategoricalDenoiser) -> torch.Tensor:
    """Exact law [32, 32] of the one-step masked sampler from all-mask: the product of the student's marginals
    at (all-mask, t = 1)."""
    proc = student.process
    z = torch.full((1, 2), proc.mask_id, dtype=torch.long)
    with torch.no_grad():
        p = student(z, torch.ones(1))[0, :, :proc.vocab].double().exp()
    return p[0][:, None] * p[1][None, :]


def _grid_outputs(net: CategoricalDenoiser) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A time-free masked denoiser on two tokens at every partly masked input: (all-mask [2, 32],
    first masked given the second = y [y, x], second masked given the first = x [x, y])."""
    m, ar = net.process.mask_id, torch.arange(32)
    with torch.no_grad():
        mm = net(torch.full((1, 2), m), torch.ones(1))[0, :, :32].double().exp()
        c1 = net(torch.stack([torch.full((32,), m), ar], -1), torch.ones(32))[:, 0, :32].double().exp()
        c2 = net(torch.stack([ar, torch.full((32,), m)], -1), torch.ones(32))[:, 1, :32].double().exp()
    return mm, c1, c2


def _grid_l_idlm(student: CategoricalDenoiser, teacher: CategoricalDenoiser, table: torch.Tensor) -> float:
    """The exact IDLM objective L(f*, p_theta) - min_f L(f, p_theta) = E_{p_theta}[NELBO*(x)] - H(p_theta) on grid2d.

    p_theta: z~ = noise(x0 ~ table, t~ ~ U(0, 1)) is both-visible / one-masked (each) / all-mask with probability
    1/3, 1/6, 1/3, and SUBS copies visible tokens. NELBO*(x), continuous time over [0, 1] with lambda = 1/t:
    1/2 [-log f*(x1|mm) - log f*(x2|mm) - log f*(x1|m, x2) - log f*(x2|x1, m)]."""
    mm, c1, c2 = _grid_outputs(student)
    m1, m2 = table.sum(1), table.sum(0)
    p = table / 3 + m2[None, :] * c1.T / 6 + m1[:, None] * c2 / 6 + mm[0][:, None] * mm[1][None, :] / 3
    tm, t1, t2 = (v.clamp_min(1e-300).log() for v in _grid_outputs(teacher))
    nelbo = -0.5 * (tm[0][:, None] + tm[1][None, :] + t1.T + t2)
    return float((p * nelbo).sum() + torch.special.xlogy(p, p).sum())


@pytest.mark.slow
def test_idlm_on_grid2d_lowers_the_objective_and_respects_the_product_bound(tmp_path):
    """Spec test 15: a short masked teacher on grid2d (CLI), then IDLM through ``distill_config`` +
    ``build_distillation``. The exact objective (``_grid_l_idlm``) falls by > 40% and the windowed student-phase
    gap estimate falls from its peak; the one-step factorised student's exact TV to the checkerboard stays
    >= sqrt(2) - 1 (its one-step law is a product: checked against 20k samples).

    The objective computed here is the paper's (independent corruption and input times), so the run pins
    ``time_coupling="independent"`` and the student LR of the train config (``lr=None``): the issue-23 defaults
    (shared times, student LR 1e-5) optimise a different objective at a tenth of the speed, and with them this
    objective fell only 23% in 300 iterations (0.503 -> 0.389). Two further deliberate departures from the
    defaults, both configuration knobs: (1) the student (and the fake, a copy
    of it) starts from a perturbed teacher head, so there is something to distill (from the teacher itself the
    objective is already ~0.11 and moves little); (2) the fake gets 4 updates per student update at 10x the LR
    (``aux_every=4``, ``aux_lr_mult=10``). With the defaults (1:1, equal LRs) the exact objective *rises* on this
    toy (200 iterations from the teacher start: 0.11 -> 0.12 at lr 1e-4, -> 0.34 at lr 1e-3): the fake lags, and
    Adam turns the small, noisy advantages into full-size student steps (the correlated-times bias, see
    ``test_monte_carlo_student_loss_is_unbiased``, may contribute)."""
    from dataclasses import replace

    from fewstep.build.distill import build_distillation
    from fewstep.build.distill_config import distill_config, resolve_distill
    from fewstep.cli import main
    from fewstep.data.grid2d import grid2d_table

    teacher_dir = tmp_path / "teacher"
    assert main(["train", "--preset", "grid2d-mdlm", "--run-dir", str(teacher_dir), "--net.width", "64",
                 "--net.depth", "1", "--train.total-nimg", "65536", "--train.batch-size", "256",
                 "--train.warmup-nimg", "2048", "--train.ckpt-every-nimg", "65536",
                 "--train.log-every-nimg", "65536", "--train.device", "cpu"]) == 0
    cfg = distill_config(str(teacher_dir), method="idlm", steps=1, run_dir=str(tmp_path / "idlm"))
    iters, batch = 300, 256
    cfg = replace(cfg, method=replace(cfg.method, aux_every=4, aux_lr_mult=10.0, latent_dim=0,  # factorised
                                             lr=None, time_coupling="independent"),
                  train=replace(cfg.train, total_nimg=iters * batch, batch_size=batch, warmup_nimg=0, lr=1e-4,
                                ckpt_every_nimg=iters * batch, log_every_nimg=iters * batch, ema_halflife_nimg=0,
                                device="cpu"))
    trainer = build_distillation(resolve_distill(cfg), progress=False)
    method = trainer.method
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in method.student.net.head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        method.aux.load_state_dict(method.student.state_dict())
    table = grid2d_table("checkerboard", bins=32, bands=4)
    before = _grid_l_idlm(method.student, method.teacher, table)

    gaps: list[float] = []
    original = method.loss

    def recording(phase, batch_, nets, generator):
        out = original(phase, batch_, nets, generator)
        if phase == "student":
            gaps.append(out.logs["idlm_gap"].item())
        return out

    method.loss = recording
    trainer.fit()
    assert len(gaps) == iters // 4 and all(math.isfinite(v) for v in gaps)
    after = _grid_l_idlm(method.student, method.teacher, table)
    assert after < 0.6 * before, (before, after)
    # the estimate starts below the truth (the fake is not yet the minimiser), rises while the fake catches up,
    # then the student lowers it
    w = 15
    windows = [sum(gaps[i:i + w]) / w for i in range(0, len(gaps) - w + 1, w)]
    assert windows[-1] < max(windows[:-1])

    student = method.student
    law = _one_step_law(student)
    assert 0.5 * float((law - table).abs().sum()) >= math.sqrt(2) - 1 - 1e-9
    x, _ = sample_token_student(student, (20000, 2), grid=uniform_grid(1),
                                    generator=torch.Generator().manual_seed(0))
    emp = torch.bincount(x[:, 0] * 32 + x[:, 1], minlength=1024).double().reshape(32, 32) / x.shape[0]
    assert 0.5 * float((emp - law).abs().sum()) < 0.15  # sampling noise of 20k draws over <= 1024 cells


# ------------------------------------------------------------------ uniform "hard" estimator (uniform_rb_terms)
def test_uniform_rb_terms_rao_blackwellise_the_nelbo_integrand():
    """For one position: sum_z q_t(z | G) sum_v G(v) h_v(z) = sum_x G(x) sum_z q_t(z | x) g(z, x, f) exactly, and
    sum_z q_t(z | G) h_v(z) = sum_z q_t(z | e_v) g(z, e_v, f) (the exact partial derivative in G(v)), also when
    f depends on the current token z (as a network's output does)."""


    n = 5
    proc = UniformProcess(n)
    g = torch.Generator().manual_seed(3)
    G = torch.softmax(torch.randn(n, generator=g, dtype=torch.float64), -1)
    f_of_z = torch.softmax(torch.randn(n, n, generator=g, dtype=torch.float64), -1)  # f as a function of z
    for tv in (0.1, 0.5, 0.9):
        t = torch.tensor([tv], dtype=torch.float64)
        a = 1 - tv
        zs = torch.arange(n).reshape(n, 1)  # every current token z, as B = n rows of length 1
        f = f_of_z[:, None, :]  # [n, 1, N]
        h = uniform_rb_terms(proc, zs, G.expand(n, 1, n), f, t.expand(n))[:, 0]  # [z, v]
        q_z_given = a * torch.eye(n, dtype=torch.float64) + (1 - a) / n  # [v, z] = q_t(z | e_v)
        q_zg = G @ q_z_given  # q_t(z | G)
        g_zx = torch.stack([proc.elbo_integrand(zs, torch.full((n, 1), x), f, t.expand(n))[:, 0]
                            for x in range(n)], 1)  # [z, x] = g(z, e_x, f(z))
        lhs = (q_zg[:, None] * G[None] * h).sum()
        rhs = (G[:, None] * q_z_given * g_zx.T).sum()
        assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)
        grad_est = (q_zg[:, None] * h).sum(0)  # E_{z ~ q(.|G)} h_v(z)
        grad_exact = (q_z_given * g_zx.T).sum(1)  # sum_z q(z | e_v) g(z, e_v, f(z))
        assert torch.allclose(grad_est, grad_exact, rtol=1e-12, atol=0)


def test_uniform_hard_estimator_trains_and_vanishes_at_fake_equal_teacher():
    torch.manual_seed(0)
    proc = UniformProcess(6)
    teacher = CategoricalDenoiser(TextDiT(6, 6, 4, dim=16, depth=1, heads=2), proc)
    method = IDLM(teacher, copy.deepcopy(teacher).requires_grad_(True), copy.deepcopy(teacher).requires_grad_(True),
                  length=4, uniform_estimator="hard")
    batch = {"x": torch.randint(0, 6, (16, 4), generator=torch.Generator().manual_seed(1))}
    nets = {"teacher": method.teacher, "student": method.student, "aux": method.aux}
    out = method.loss("student", batch, nets, torch.Generator().manual_seed(2))
    assert float(out.loss.detach()) == 0.0  # fake = teacher: the score difference is exactly zero
    aux = method.loss("aux", batch, nets, torch.Generator().manual_seed(3))
    aux.loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in method.aux.parameters())
    with pytest.raises(ValueError, match="uniform_estimator"):
        IDLM(teacher, method.student, method.aux, length=4, uniform_estimator="gumbel")
