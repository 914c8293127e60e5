"""Discrete Moment Matching, D-MMD (spec/discrete.md section 4 and section 8, test 13): the min-max structure of
the pure loss pieces (inner optimum (m + theta)/2, value 2 KL(phi* || theta), vanishing generator gradient), the
correspondence with continuous MM (squared-error Bregman divergence), SUBS-safe positions, and a smoke run of
both phases on tiny masked (latent-noise student) and uniform teachers."""

from __future__ import annotations

import copy

import pytest
import torch

from _tiny_text import LS, NS, latent_copy, tiny_teacher
from fewstep.denoisers.categorical import subs
from fewstep.methods.discrete_mmd import DiscreteMMD, dmmd_aux_terms, dmmd_generator_terms

pytestmark = pytest.mark.usefixtures("torch_single_thread")

B, L, N = 3, 2, 5


def _simplex(shape: tuple[int, ...], g: torch.Generator, *, sharp: float = 1.0) -> torch.Tensor:
    return torch.softmax(sharp * torch.randn(*shape, generator=g, dtype=torch.float64), -1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, 0 log 0 = 0."""
    return torch.where(p > 0, p * (p.clamp_min(1e-300).log() - q.log()), torch.zeros_like(p)).sum(-1)


def _all(shape: tuple[int, int]) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool)


def _expected_aux(m: torch.Tensor, theta: torch.Tensor, log_phi: torch.Tensor) -> torch.Tensor:
    """E_{x ~ m} dmmd_aux_terms(x, ...) [B] by enumerating hard one-hot tokens x (per position independently;
    the terms are a sum over positions, so the product law of x does not matter)."""
    total = torch.zeros(m.shape[0], dtype=torch.float64)
    pos = _all(m.shape[:2])
    for v in range(m.shape[-1]):
        x = torch.full(m.shape[:2], v, dtype=torch.long)
        for ell in range(m.shape[1]):
            only = torch.zeros_like(pos)
            only[:, ell] = True
            total = total + m[:, ell, v] * dmmd_aux_terms(x, theta, log_phi, only)
    return total


def _inner_value(m: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """E_{x ~ m}[KL(x || theta) - KL(x || phi) - KL(theta || phi)] summed over positions [B] (x one-hot)."""
    eye = torch.eye(m.shape[-1], dtype=torch.float64)
    val = torch.zeros(m.shape[:2], dtype=torch.float64)
    for v in range(m.shape[-1]):
        x = eye[v].expand_as(m)
        val = val + m[..., v] * (_kl(x, theta) - _kl(x, phi))
    return (val - _kl(theta, phi)).sum(-1)


# ------------------------------------------------------------------------------------------- min-max
@pytest.mark.parametrize("one_hot", [False, True])
def test_aux_minimiser_is_the_midpoint(one_hot):
    """argmin over the simplex of E_x[dmmd_aux_terms] is (m + theta)/2: LBFGS on softmax logits (float64) finds
    it to 1e-6, and the autograd gradient vanishes there (it is 2 phi - (m + theta) in logit space)."""
    g = torch.Generator().manual_seed(1 + int(one_hot))
    theta = _simplex((B, L, N), g)
    if one_hot:
        m = torch.nn.functional.one_hot(torch.randint(0, N, (B, L), generator=g), N).double()
    else:
        m = _simplex((B, L, N), g, sharp=2.0)
    pos = _all((B, L))
    # the soft-target form is the expectation of the hard-sample form (linear in x)
    h0 = torch.randn(B, L, N, generator=g, dtype=torch.float64)
    assert torch.allclose(dmmd_aux_terms(m, theta, torch.log_softmax(h0, -1), pos),
                          _expected_aux(m, theta, torch.log_softmax(h0, -1)), atol=1e-12)

    h = h0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([h], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dmmd_aux_terms(m, theta, torch.log_softmax(h, -1), pos).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    mid = (m + theta) / 2
    assert torch.allclose(torch.softmax(h.detach(), -1), mid, atol=1e-6)

    h_star = mid.log().requires_grad_(True)
    dmmd_aux_terms(m, theta, torch.log_softmax(h_star, -1), pos).sum().backward()
    assert float(h_star.grad.abs().max()) < 1e-12
    # and anywhere else the gradient is 2 phi - (m + theta), not 0
    h1 = h0.clone().requires_grad_(True)
    dmmd_aux_terms(m, theta, torch.log_softmax(h1, -1), pos).sum().backward()
    assert torch.allclose(h1.grad, 2 * torch.softmax(h0, -1) - (m + theta), atol=1e-12)


def test_inner_value_is_twice_the_kl_of_the_midpoint():
    """max_phi E[KL(x||theta) - KL(x||phi) - KL(theta||phi)] = 2 KL(phi* || theta) >= 0 at phi* = (m + theta)/2,
    and the objective equals a phi-free constant minus E[dmmd_aux_terms] (so the auxiliary loss is its negative);
    the value is 0 iff m = theta."""
    g = torch.Generator().manual_seed(3)
    theta = _simplex((B, L, N), g)
    m = _simplex((B, L, N), g, sharp=2.0)
    phi_star = (m + theta) / 2
    value = _inner_value(m, theta, phi_star)
    assert torch.allclose(value, 2 * _kl(phi_star, theta).sum(-1), atol=1e-12)
    assert bool((value > 1e-3).all())
    const = value + dmmd_aux_terms(m, theta, phi_star.log(), _all((B, L)))
    for _ in range(20):
        phi = _simplex((B, L, N), g, sharp=1.5)
        other = _inner_value(m, theta, phi)
        assert bool((other < value).all())  # phi* is the maximiser
        assert torch.allclose(other + dmmd_aux_terms(m, theta, phi.log(), _all((B, L))), const, atol=1e-12)
    # m = theta: phi* = theta and the value is exactly 0
    assert torch.allclose(_inner_value(theta, theta, theta), torch.zeros(B, dtype=torch.float64), atol=1e-14)
    # a one-hot m is also covered (x deterministic): the value stays 2 KL(phi* || theta)
    onehot = torch.nn.functional.one_hot(torch.randint(0, N, (B, L), generator=g), N).double()
    mid = (onehot + theta) / 2
    assert torch.allclose(_inner_value(onehot, theta, mid), 2 * _kl(mid, theta).sum(-1), atol=1e-12)


def test_generator_gradient_vanishes_when_aux_equals_teacher():
    """grad of dmmd_generator_terms w.r.t. p and w.r.t. the logits of p is exactly 0 when log phi == log theta,
    and equals log phi - log theta (at positions P) otherwise."""
    g = torch.Generator().manual_seed(4)
    h = torch.randn(B, L, N, generator=g, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(h, -1)
    probs.retain_grad()
    log_theta = torch.log_softmax(torch.randn(B, L, N + 1, generator=g, dtype=torch.float64), -1)
    pos = torch.rand(B, L, generator=g) < 0.5
    pos[0, 0] = True
    val = dmmd_generator_terms(probs, log_theta.clone(), log_theta, pos)
    assert bool((val == 0).all())
    val.sum().backward()
    assert bool((probs.grad == 0).all()) and bool((h.grad == 0).all())

    log_phi = torch.log_softmax(torch.randn(B, L, N + 1, generator=g, dtype=torch.float64), -1)
    p2 = torch.softmax(h.detach(), -1).requires_grad_(True)
    dmmd_generator_terms(p2, log_phi, log_theta, pos).sum().backward()
    want = torch.where(pos.unsqueeze(-1), (log_phi - log_theta)[..., :N], torch.zeros(B, L, N, dtype=torch.float64))
    assert torch.allclose(p2.grad, want, atol=1e-14)


def test_generator_gradient_is_the_envelope_gradient_of_the_inner_value():
    """d/dm max_phi V(m, phi) = d/dm 2 KL((m + theta)/2 || theta) equals the generator term's gradient
    log phi* - log theta along the simplex (tangent finite differences): the generator descends the min-max value."""
    g = torch.Generator().manual_seed(5)
    theta = _simplex((1, 1, N), g)
    m = _simplex((1, 1, N), g)
    phi = (m + theta) / 2
    p = m.clone().requires_grad_(True)
    dmmd_generator_terms(p, phi.log(), theta.log(), _all((1, 1))).sum().backward()

    def value(mm: torch.Tensor) -> float:
        return float(2 * _kl((mm + theta) / 2, theta).sum())

    eps = 1e-6
    for _ in range(5):
        v = torch.randn(1, 1, N, generator=g, dtype=torch.float64)
        v = v - v.mean()  # a tangent direction of the simplex
        fd = (value(m + eps * v) - value(m - eps * v)) / (2 * eps)
        assert fd == pytest.approx(float((p.grad * v).sum()), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("one_hot", [True, False])
def test_squared_error_gives_the_same_inner_optimum_as_mm(one_hot):
    """Structure vs continuous MM: with the squared-error Bregman divergence the same min-max
    max_phi E[||x - theta||^2 - ||x - phi||^2 - ||theta - phi||^2] has the same maximiser (m + theta)/2 (which is
    MM's auxiliary optimum (x~ + x^)/2 at lambda_reg = 1), value 2 ||phi* - theta||^2, and generator gradient
    2 (phi* - theta), proportional to MM's <x~, sg(A - x^)> gradient A - x^. The KL case (the library's losses)
    has the same optimum and gradient grad psi(phi*) - grad psi(theta) with psi the negative entropy: both are
    Bregman min-maxes."""
    g = torch.Generator().manual_seed(6 + int(one_hot))
    theta = _simplex((1, 1, N), g)
    if one_hot:
        m = torch.nn.functional.one_hot(torch.tensor([[2]]), N).double()
    else:
        m = _simplex((1, 1, N), g)
    eye = torch.eye(N, dtype=torch.float64)

    def v_sq(mm: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float64)
        for k in range(N):
            x = eye[k]
            total = total + mm[0, 0, k] * (((x - theta) ** 2).sum() - ((x - phi) ** 2).sum())
        return total - ((theta - phi) ** 2).sum()

    # numerical maximiser of the squared-error objective over the simplex (softmax logits, LBFGS)
    h = torch.zeros(1, 1, N, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([h], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -v_sq(m, torch.softmax(h, -1))
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    mid = (m + theta) / 2
    if one_hot:  # the midpoint of a vertex and an interior point is interior but near the boundary
        assert torch.allclose(torch.softmax(h.detach(), -1), mid, atol=1e-5)
    else:
        assert torch.allclose(torch.softmax(h.detach(), -1), mid, atol=1e-6)
    assert float(v_sq(m, mid)) == pytest.approx(float(2 * ((mid - theta) ** 2).sum()), abs=1e-12)
    # MM's auxiliary loss E||x~ - A||^2 + lambda_reg ||x^ - A||^2 (lambda_reg = 1) is minimised by the same point
    mm_aux_opt = (m + 1.0 * theta) / (1 + 1.0)
    assert torch.allclose(mm_aux_opt, mid, atol=0)
    # the KL objective's optimum (the library's auxiliary loss) is the same point
    h_kl = mid.log().requires_grad_(True)
    dmmd_aux_terms(m, theta, torch.log_softmax(h_kl, -1), _all((1, 1))).sum().backward()
    assert float(h_kl.grad.abs().max()) < 1e-12
    # envelope gradients: squared error 2 (phi* - theta); KL log phi* - log theta (= dmmd_generator_terms grad)
    # (gradients in m are compared along the simplex: a constant vector is no direction there)
    mv = m.clone().requires_grad_(True)
    v_sq(mv, mid).backward()
    tangent = mv.grad - mv.grad.mean()
    want = 2 * (mid - theta)
    assert torch.allclose(tangent, want - want.mean(), atol=1e-12)
    p = m.clone().requires_grad_(True)
    dmmd_generator_terms(p, mid.log(), theta.log(), _all((1, 1))).sum().backward()
    assert torch.allclose(p.grad, mid.log() - theta.log(), atol=1e-12)
    # both point from theta towards the generator's mean: positive alignment with (m - theta)
    assert float(((mid - theta) * (m - theta)).sum()) > 0 and float((p.grad * (m - theta)).sum()) > 0


# -------------------------------------------------------------------------------------------- positions
def test_visible_positions_contribute_exactly_zero_with_subs_outputs():
    """Masked process, P = positions masked in z_s: SUBS outputs are -inf off the carried token at visible
    positions, yet both terms are finite, visible positions contribute exactly 0 (changing anything there
    changes nothing), and gradients w.r.t. the raw logits and the generator logits are finite and zero there."""
    g = torch.Generator().manual_seed(7)
    b, length = 4, 6
    z_s = torch.randint(0, N + 1, (b, length), generator=g)
    z_s[:, 0], z_s[:, 1] = N, 2  # at least one masked and one visible position per row
    pos = z_s == N
    raw_phi = torch.randn(b, length, N + 1, generator=g, requires_grad=True)
    raw_theta = torch.randn(b, length, N + 1, generator=g)
    log_phi, log_theta = subs(raw_phi, z_s, N), subs(raw_theta, z_s, N)
    assert bool(torch.isneginf(log_phi[~pos][..., :N]).any())
    theta = log_theta[..., :N].exp()
    x = torch.randint(0, N, (b, length), generator=g)
    x = torch.where(pos, x, z_s)
    aux = dmmd_aux_terms(x, theta, log_phi, pos)
    assert bool(aux.isfinite().all())
    aux.sum().backward()
    assert bool(raw_phi.grad.isfinite().all()) and bool((raw_phi.grad[~pos] == 0).all())
    assert float(raw_phi.grad[pos].abs().sum()) > 0
    # changing the targets / the prediction at visible positions changes nothing
    x2 = torch.where(pos, x, (x + 1) % N)
    theta2 = torch.where(pos.unsqueeze(-1), theta, torch.softmax(torch.randn(b, length, N, generator=g), -1))
    log_phi2 = torch.where(pos.unsqueeze(-1), log_phi, torch.randn(b, length, N + 1, generator=g))
    assert torch.equal(dmmd_aux_terms(x2, theta2, log_phi2, pos), aux.detach())
    # explicit per-position reference over masked positions only
    ref = -((torch.nn.functional.one_hot(x, N) + theta) * log_phi[..., :N].detach().nan_to_num(neginf=0.0))
    ref = (ref.sum(-1) * pos).sum(-1)
    assert torch.allclose(aux.detach(), ref, atol=1e-5)

    h = torch.randn(b, length, N, generator=g, requires_grad=True)
    gen = dmmd_generator_terms(torch.softmax(h, -1), log_phi.detach(), log_theta, pos)
    assert bool(gen.isfinite().all())
    gen.sum().backward()
    assert bool(h.grad.isfinite().all()) and bool((h.grad[~pos] == 0).all()) and float(h.grad.abs().sum()) > 0
    # the naive form (difference over every position, then masked) is NaN-poisoned at visible positions
    diff = log_phi.detach()[..., :N] - log_theta[..., :N]
    assert bool(diff[~pos].isnan().any())


# ---------------------------------------------------------------------------------------------- smoke
def _perturb(net: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_dmmd_smoke_both_phases(kind):
    teacher = tiny_teacher(kind)
    student = latent_copy(teacher, 8) if kind == "masked" else copy.deepcopy(teacher)
    aux = copy.deepcopy(teacher)
    method = DiscreteMMD(teacher, student, aux, length=LS, k=4)
    assert method.weighting == ("elbo" if kind == "masked" else "flat")
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    nets = {"teacher": teacher, "student": student, "aux": aux}
    x0 = torch.randint(0, NS, (16, LS), generator=torch.Generator().manual_seed(0))

    # at initialisation aux == teacher: the generator loss and its gradient vanish identically
    out = method.loss("student", {"x": x0}, nets, torch.Generator().manual_seed(1))
    assert out.loss.detach().item() == 0.0
    out.loss.backward()
    assert all(p.grad is None or bool((p.grad == 0).all()) for p in student.parameters())
    student.zero_grad(set_to_none=True)

    out = method.loss("aux", {"x": x0}, nets, torch.Generator().manual_seed(2))
    assert bool(out.loss.isfinite()) and "aux_ce" in out.logs
    out.loss.backward()
    grads = [p.grad for p in aux.parameters() if p.grad is not None]
    assert grads and all(bool(gr.isfinite().all()) for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    assert all(p.grad is None for p in student.parameters()) and all(p.grad is None for p in teacher.parameters())
    aux.zero_grad(set_to_none=True)

    _perturb(aux, 3)
    out = method.loss("student", {"x": x0}, nets, torch.Generator().manual_seed(4))
    assert bool(out.loss.isfinite()) and out.loss.detach().item() != 0.0 and "gen" in out.logs
    out.loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(bool(gr.isfinite().all()) for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0
    assert all(p.grad is None for p in aux.parameters()) and all(p.grad is None for p in teacher.parameters())
    if kind == "masked":  # the latent map is reached by the gradient (it is what makes the noise usable)
        assert float(student.net.latent.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", ["masked", "uniform"])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_draw_times(kind, k):
    teacher = tiny_teacher(kind)
    method = DiscreteMMD(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, k=k)
    x0 = torch.randint(0, NS, (4096, LS), generator=torch.Generator().manual_seed(0))
    d = method.draw(x0, torch.Generator().manual_seed(k))
    p = teacher.process
    assert d.s.dtype == torch.float64 and d.t.dtype == torch.float64 and d.z_t.shape == x0.shape
    assert bool((d.s < d.t).all()) and bool((d.t <= p.t_max).all()) and bool((d.s >= 0).all())
    assert bool((d.t - d.s <= 1.0 / k + 1e-9).all())
    # the gap is spread over (0, 1/k] (not pinned to the grid spacing)
    gap = d.t - d.s
    assert float(gap.min()) < 0.05 / k and float(gap.max()) > 0.9 / k
    # z_t is the forward process at t: masked rows keep exactly the tokens of x0 where visible
    if kind == "masked":
        vis = d.z_t != p.mask_id
        assert torch.equal(d.z_t[vis], x0[vis])
        assert float((~vis).double().mean()) == pytest.approx(float(d.t.mean()), abs=0.02)  # alpha = 1 - t


def test_sample_zs_is_consistent_with_the_masked_posterior():
    """Masked: x ~ Cat(p) at masked positions of z_t and the carried token at visible ones; z_s keeps every
    visible token of z_t, reveals only masked positions, and revealed tokens equal x; the reveal frequency is
    (alpha_s - alpha_t)/(1 - alpha_t). Deterministic given the generator."""
    teacher = tiny_teacher("masked")
    method = DiscreteMMD(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, k=2)
    p = teacher.process
    x0 = torch.randint(0, NS, (2048, LS), generator=torch.Generator().manual_seed(0))
    d = method.draw(x0, torch.Generator().manual_seed(1))
    probs = torch.softmax(torch.randn(2048, LS, NS, generator=torch.Generator().manual_seed(2)), -1)
    x, z_s = method.sample_zs(d, probs, torch.Generator().manual_seed(3))
    x_b, z_b = method.sample_zs(d, probs, torch.Generator().manual_seed(3))
    assert torch.equal(x, x_b) and torch.equal(z_s, z_b)
    vis_t = d.z_t != p.mask_id
    assert torch.equal(z_s[vis_t], d.z_t[vis_t]) and torch.equal(x[vis_t], d.z_t[vis_t])
    revealed = ~vis_t & (z_s != p.mask_id)
    assert bool(revealed.any()) and torch.equal(z_s[revealed], x[revealed])
    assert int(x.max()) < NS
    reveal_p = p.unmask_prob(d.t, d.s).unsqueeze(-1).expand_as(z_s)[~vis_t]
    freq, expect = float(revealed[~vis_t].double().mean()), float(reveal_p.mean())
    se = float((reveal_p * (1 - reveal_p)).sum().sqrt()) / int((~vis_t).sum())
    assert abs(freq - expect) < 5 * se + 1e-9
    assert torch.equal(method.positions(z_s), z_s == p.mask_id)


def test_sample_zs_uniform_follows_the_one_hot_posterior():
    """Uniform: every position is in P; z_s ~ q(z_s | z_t, x) with one-hot x: the counts of z_s == z_t and of
    z_s == x agree (5 standard errors) with the sums of the exact posterior probabilities of those events."""
    teacher = tiny_teacher("uniform")
    method = DiscreteMMD(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, k=2)
    p = teacher.process
    b = 4096
    x0 = torch.randint(0, NS, (b, LS), generator=torch.Generator().manual_seed(0))
    d = method.draw(x0, torch.Generator().manual_seed(1))
    probs = torch.softmax(torch.randn(b, LS, NS, generator=torch.Generator().manual_seed(2)), -1)
    x, z_s = method.sample_zs(d, probs, torch.Generator().manual_seed(3))
    assert x.shape == z_s.shape == (b, LS) and z_s.dtype == torch.long
    assert int(z_s.min()) >= 0 and int(z_s.max()) < NS
    assert bool(method.positions(z_s).all())
    post = p.posterior_probs(d.z_t, torch.nn.functional.one_hot(x, NS).double(), d.t, d.s)  # [b, L, N]
    for target in (d.z_t, x):
        pr = post.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        count = float((z_s == target).double().sum())
        se = float((pr * (1 - pr)).sum().sqrt())
        assert abs(count - float(pr.sum())) < 5 * se, (count, float(pr.sum()), se)


def test_dmmd_rejects_bad_arguments():
    teacher = tiny_teacher("masked")
    with pytest.raises(ValueError, match="k must be"):
        DiscreteMMD(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, k=0)
    with pytest.raises(ValueError, match="weighting"):
        DiscreteMMD(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, weighting="bogus")
    with pytest.raises(ValueError, match="latent"):
        DiscreteMMD(teacher, copy.deepcopy(teacher), latent_copy(teacher, 8), length=LS)
