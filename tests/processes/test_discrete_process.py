"""Masked and uniform processes, SUBS, the NELBOs and the samplers against exact enumerations
(spec/discrete.md section 8, tests 1-4 and 6-8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from _discrete_oracles import ExactDenoiser, all_sequences
from fewstep.denoisers.categorical import subs
from fewstep.methods.discrete_diffusion import masked_nelbo
from fewstep.processes.categorical import CosineKeep, LogLinear, categorical
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers.discrete import sample_masked, sample_uniform
from fewstep.samplers.grids import uniform_grid

N, L = 3, 2


def _p_data(seed: int = 0, n: int = N, length: int = L) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n ** length, generator=g, dtype=torch.float64) + 0.2
    return p / p.sum()


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("schedule", [LogLinear(), CosineKeep()])
def test_forward_marginals_and_chapman_kolmogorov(schedule):
    """q_t sums to 1, alpha has the right endpoints and decreases; q_t = q_{t|s} q_s (masked and uniform)."""
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a = schedule.alpha(t)
    assert float(a[0]) == pytest.approx(1.0) and float(a[-1]) == pytest.approx(0.0, abs=1e-12)
    assert bool((a[1:] <= a[:-1]).all())
    x = torch.tensor([[0, 2]])
    for proc in (MaskedProcess(N, schedule=schedule), UniformProcess(N, schedule=schedule)):
        s_, t_ = torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
        q_s, q_t = proc.forward_probs(x, s_), proc.forward_probs(x, t_)
        assert torch.allclose(q_t.sum(-1), torch.ones(1, 2, dtype=torch.float64))
        ratio = schedule.alpha(t_) / schedule.alpha(s_)
        if proc.kind == "masked":
            trans = ratio * torch.eye(N + 1, dtype=torch.float64)
            trans[:, N] += 1 - ratio  # every state moves to the mask with prob 1 - alpha_{t|s}
            trans[N, N] = 1.0
        else:
            trans = ratio * torch.eye(N, dtype=torch.float64) + (1 - ratio) / N
        assert torch.allclose(q_s @ trans, q_t, atol=1e-12)


def test_add_noise_matches_forward_marginals():
    g = torch.Generator().manual_seed(0)
    x = torch.full((40000, 1), 1)
    t = torch.full((40000,), 0.6)
    for proc in (MaskedProcess(N), UniformProcess(N)):
        z = proc.add_noise(x, t, generator=g)
        freq = torch.bincount(z[:, 0], minlength=proc.width).double() / z.shape[0]
        expected = proc.forward_probs(x[:1], t[:1].double())[0, 0]
        assert torch.allclose(freq, expected, atol=0.01), (proc.kind, freq, expected)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
@pytest.mark.parametrize("soft", [False, True])
def test_posterior_marginalisation(kind, soft):
    """sum_{z_t} q_t(z_t|x) p(z_s | z_t, x) = q_s(z_s | x); kernel rows sum to 1 (one-hot and soft x)."""
    proc = MaskedProcess(N) if kind == "masked" else UniformProcess(N)
    g = torch.Generator().manual_seed(1)
    if soft:
        x = torch.rand(1, 1, N, generator=g, dtype=torch.float64)
        x = x / x.sum(-1, keepdim=True)
    else:
        x = torch.tensor([[2]])
    t, s = torch.tensor([0.8], dtype=torch.float64), torch.tensor([0.35], dtype=torch.float64)
    q_t, q_s = proc.forward_probs(x, t)[0, 0], proc.forward_probs(x, s)[0, 0]
    xv = x if soft else torch.nn.functional.one_hot(x, N).double()
    total = torch.zeros(proc.width, dtype=torch.float64)
    for z in range(proc.width):
        kern = proc.posterior_probs(torch.tensor([[z]]), xv, t, s)[0, 0]
        assert float(kern.sum()) == pytest.approx(1.0, abs=1e-12)
        total += q_t[z] * kern
    if kind == "uniform" and soft:
        # for soft x the kernel is NOT the mixture of one-hot posteriors; the Bayes form below is what it is
        num = torch.zeros(proc.width, dtype=torch.float64)
        trans = (proc.schedule.alpha(t) / proc.schedule.alpha(s)) * torch.eye(N, dtype=torch.float64)
        trans = trans + (1 - proc.schedule.alpha(t) / proc.schedule.alpha(s)) / N
        for z in range(N):
            kern = proc.posterior_probs(torch.tensor([[z]]), xv, t, s)[0, 0]
            bayes = trans[:, z] * q_s / (trans[:, z] * q_s).sum()
            assert torch.allclose(kern, bayes, atol=1e-12)
            num += q_t[z] * kern
        assert torch.allclose(num, q_s, atol=1e-12)
    else:
        assert torch.allclose(total, q_s, atol=1e-12)


def test_subs_invariants():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, N + 1, generator=g)
    z = torch.randint(0, N + 1, (4, 6), generator=g)
    logp = subs(logits, z, N)
    assert logp.dtype == torch.float32
    assert bool(torch.isneginf(logp[..., N]).all())  # zero mass on the mask
    assert torch.allclose(logp.exp().sum(-1), torch.ones(4, 6))
    vis = z != N
    assert torch.equal(logp[vis].exp(), torch.nn.functional.one_hot(z[vis], N + 1).float())


def _expected_nelbo_masked(p: torch.Tensor, net: ExactDenoiser, proc: MaskedProcess) -> float:
    """E_data L(x) by enumerating every mask pattern and Gauss-Legendre quadrature in t (the integrand is a
    polynomial in t for the log-linear schedule)."""
    seqs = all_sequences(N, L)
    nodes, weights = np.polynomial.legendre.leggauss(20)
    total = 0.0
    for u, wq in zip(nodes, weights):
        tt = 0.5 * (u + 1)
        for pattern in all_sequences(2, L):  # 1 = masked
            z = torch.where(pattern.bool()[None], torch.full_like(seqs, proc.mask_id), seqs)
            prob = tt ** int(pattern.sum()) * (1 - tt) ** int(L - pattern.sum())
            logp = net(z, torch.full((seqs.shape[0],), tt))
            w = proc.elbo_weight(torch.full((seqs.shape[0],), tt, dtype=torch.float64))
            per = masked_nelbo(logp, seqs, z, w, proc.mask_id)
            total += 0.5 * wq * prob * float((p * per).sum())
    return total


def test_masked_nelbo_equals_entropy_with_the_oracle():
    p = _p_data(0)
    proc = MaskedProcess(N)
    exact = _expected_nelbo_masked(p, ExactDenoiser(p, N, L, proc), proc)
    assert exact == pytest.approx(_entropy(p), abs=1e-10)
    # a wrong denoiser (the exact one for other data) gives a strictly larger bound
    worse = _expected_nelbo_masked(p, ExactDenoiser(_p_data(5), N, L, proc), proc)
    assert worse > _entropy(p) + 1e-4


def _expected_nelbo_uniform(p: torch.Tensor, net: ExactDenoiser, proc: UniformProcess) -> float:
    from scipy.integrate import quad

    seqs = all_sequences(N, L)
    zs = all_sequences(N, L)

    def integrand(tt: float) -> float:
        t = torch.full((zs.shape[0],), tt, dtype=torch.float64)
        f = net(zs, t).exp()  # [Z, L, N] for every z
        total = 0.0
        for xi, x in enumerate(seqs):
            q = proc.forward_probs(x[None].expand(zs.shape[0], -1), t)  # [Z, L, N]
            qz = q.gather(-1, zs.unsqueeze(-1)).squeeze(-1).prod(-1)  # q_t(z | x) [Z]
            g = proc.elbo_integrand(zs, x[None].expand(zs.shape[0], -1), f, t).sum(-1)
            total += float(p[xi] * (qz * g).sum())
        return total

    value, err = quad(integrand, 0.0, 1.0, limit=200, epsabs=1e-11, epsrel=1e-11)
    return value


def test_uniform_nelbo_equals_entropy_with_the_leave_one_out_oracle():
    p = _p_data(0)
    proc = UniformProcess(N)
    loo = _expected_nelbo_uniform(p, ExactDenoiser(p, N, L, proc, mode="loo"), proc)
    assert loo == pytest.approx(_entropy(p), abs=1e-8)
    mean = _expected_nelbo_uniform(p, ExactDenoiser(p, N, L, proc, mode="mean"), proc)
    assert mean > _entropy(p) + 1e-4  # the posterior mean is not the minimiser


def test_uniform_integrand_is_nonnegative_and_zero_at_the_truth():
    proc = UniformProcess(5)
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 5, (8, 3), generator=g)
    x = torch.randint(0, 5, (8, 3), generator=g)
    t = torch.rand(8, generator=g, dtype=torch.float64) * 0.98 + 0.01
    f = torch.softmax(torch.randn(8, 3, 5, generator=g, dtype=torch.float64), -1)
    assert bool((proc.elbo_integrand(z, x, f, t) >= 0).all())
    exact = torch.nn.functional.one_hot(x, 5).double()
    assert torch.allclose(proc.elbo_integrand(z, x, exact, t), torch.zeros(8, 3, dtype=torch.float64), atol=1e-12)


# ------------------------------------------------------------------------------------------------ samplers
def _law_masked(p: torch.Tensor, proc: MaskedProcess, net: ExactDenoiser, grid: torch.Tensor) -> torch.Tensor:
    """Exact output law of the masked ancestral sampler, propagated over all (N + 1)^L states."""
    states = all_sequences(N + 1, L)
    law = torch.zeros(states.shape[0], dtype=torch.float64)
    law[-1] = 1.0  # all-mask is the last state lexicographically (mask id N)
    for i in range(grid.numel() - 1):
        t, s = grid[i].reshape(1), grid[i + 1].reshape(1)
        x0 = net(states, t.float().expand(states.shape[0])).exp()
        kern = proc.posterior_probs(states, x0, t.expand(states.shape[0]), s.expand(states.shape[0]))  # [S, L, V]
        trans = kern[:, 0, :, None] * kern[:, 1, None, :]  # positions move independently given the state
        law = (law[:, None] * trans.reshape(states.shape[0], -1)).sum(0)
    real = (states < N).all(-1)
    return law[real]


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_masked_oracle_sampler_law(k):
    """L = 2, uniform grid: output law = (1 - 1/K) p + (1/K) p1 x p2 exactly; the sampler's empirical law
    matches the propagated one."""
    p = _p_data(3)
    proc = MaskedProcess(N)
    net = ExactDenoiser(p, N, L, proc)
    law = _law_masked(p, proc, net, uniform_grid(k))
    pm = p.reshape(N, N)
    prod = torch.outer(pm.sum(1), pm.sum(0)).reshape(-1)
    assert torch.allclose(law, (1 - 1 / k) * p + prod / k, atol=1e-12)
    tokens, stats = sample_masked(net, (60000, L), grid=uniform_grid(k), generator=torch.Generator().manual_seed(k))
    emp = torch.bincount(tokens[:, 0] * N + tokens[:, 1], minlength=N * N).double() / tokens.shape[0]
    assert 0.5 * float((emp - law).abs().sum()) < 0.015
    assert stats["masks_left"] == 0 and stats["steps"] == k


def test_masked_sampler_is_exact_for_one_token():
    p = _p_data(4, n=N, length=1)
    proc = MaskedProcess(N)
    net = ExactDenoiser(p, N, 1, proc)
    states = all_sequences(N + 1, 1)
    for k in (1, 3, 7):
        grid = uniform_grid(k)
        law = torch.tensor([0.0] * N + [1.0], dtype=torch.float64)
        for i in range(k):
            t, s = grid[i].reshape(1), grid[i + 1].reshape(1)
            kern = proc.posterior_probs(states, net(states, t.float().expand(N + 1)).exp(), t.expand(N + 1),
                                        s.expand(N + 1))[:, 0]
            law = law @ kern
        assert float(0.5 * (law[:N] - p).abs().sum()) < 1e-12


def _law_uniform(proc: UniformProcess, net: ExactDenoiser, grid: torch.Tensor, length: int) -> torch.Tensor:
    states = all_sequences(N, length)
    law = torch.full((states.shape[0],), 1.0 / states.shape[0], dtype=torch.float64)
    for i in range(grid.numel() - 1):
        t, s = grid[i].reshape(1), grid[i + 1].reshape(1)
        x0 = net(states, t.expand(states.shape[0])).exp()
        kern = proc.posterior_probs(states, x0, t.expand(states.shape[0]), s.expand(states.shape[0]))
        trans = kern[:, 0]
        for pos in range(1, length):
            trans = (trans[..., None] * kern[:, pos].reshape(-1, *([1] * pos), N)).reshape(states.shape[0], -1)
        law = (law[:, None] * trans.reshape(states.shape[0], -1)).sum(0)
    return law


def test_uniform_oracle_sampler_laws():
    """L = 1: exact for any grid (leave-one-out oracle = the data marginal). L = 2: TV falls ~ 1/K; the
    sampler's empirical law matches the propagated one."""
    proc = UniformProcess(N)
    p1 = _p_data(6, length=1)
    net1 = ExactDenoiser(p1, N, 1, proc, mode="loo")
    for k in (1, 2, 5):
        assert float(0.5 * (_law_uniform(proc, net1, uniform_grid(k), 1) - p1).abs().sum()) < 1e-12
    p = _p_data(7)
    net = ExactDenoiser(p, N, L, proc, mode="loo")
    tvs = [float(0.5 * (_law_uniform(proc, net, uniform_grid(k), L) - p).abs().sum()) for k in (1, 2, 4, 8, 16)]
    assert all(b < a for a, b in zip(tvs, tvs[1:])), tvs
    assert tvs[-1] < tvs[0] / 6
    law = _law_uniform(proc, net, uniform_grid(4), L)
    tokens, stats = sample_uniform(net, (60000, L), grid=uniform_grid(4), generator=torch.Generator().manual_seed(0))
    emp = torch.bincount(tokens[:, 0] * N + tokens[:, 1], minlength=N * N).double() / tokens.shape[0]
    assert 0.5 * float((emp - law).abs().sum()) < 0.015
    assert stats["nfe"] == 4


def test_caching_is_bit_identical_with_fewer_evaluations():
    p = _p_data(8, length=4)
    proc = MaskedProcess(N)
    net = ExactDenoiser(p, N, 4, proc)  # time-free
    grid = uniform_grid(64)
    a, sa = sample_masked(net, (300, 4), grid=grid, generator=torch.Generator().manual_seed(0), cache=True)
    b, sb = sample_masked(net, (300, 4), grid=grid, generator=torch.Generator().manual_seed(0), cache=False)
    assert torch.equal(a, b)
    assert sa["row_evals"] < sb["row_evals"] / 4 and sa["nfe"] <= 4 + 1e-9
    assert sb["row_evals"] <= 64 * 300
    assert sa["steps_with_call"] <= 4 < sb["steps_with_call"]  # the j-th evaluations of all rows share one call


class _TimeShifted(nn.Module):
    """An exact denoiser whose output depends on t (a time-conditioned model): it tempers by 1 + t."""

    time_conditioned = True

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base, self.process = base, base.process

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.base(z, t) * (1.0 + t.double()).reshape(-1, 1, 1), -1)


@pytest.mark.parametrize("final", ["ancestral", "greedy", "none"])
def test_planned_evaluation_is_exact_for_time_conditioned_denoisers(final):
    """x_theta is read only at a row's reveal steps, and the planned sampler evaluates it there with that step's
    time: the same tokens as evaluating every row at every step, also when the output depends on t."""
    p = _p_data(8, length=4)
    proc = MaskedProcess(N)
    net = _TimeShifted(ExactDenoiser(p, N, 4, proc))
    for k in (3, 16):
        a, sa = sample_masked(net, (300, 4), grid=uniform_grid(k), generator=torch.Generator().manual_seed(1),
                              final=final, batch_size=64)
        b, sb = sample_masked(net, (300, 4), grid=uniform_grid(k), generator=torch.Generator().manual_seed(1),
                              final=final, cache=False)
        assert torch.equal(a, b) and sa["row_evals"] <= sb["row_evals"]
        assert k == 3 or sa["row_evals"] < sb["row_evals"] / 2  # evaluated at reveal steps only, yet exact


def test_float64_sampling_is_deterministic_and_leaves_global_rng_alone():
    p = _p_data(9)
    proc = MaskedProcess(N)
    net = ExactDenoiser(p, N, L, proc)
    state = torch.random.get_rng_state()
    a, _ = sample_masked(net, (200, L), grid=uniform_grid(8), generator=torch.Generator().manual_seed(3))
    b, _ = sample_masked(net, (200, L), grid=uniform_grid(8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())
    with pytest.raises(ValueError, match="float64"):
        sample_masked(net, (10, L), grid=uniform_grid(2), generator=torch.Generator(),
                      dtype_categorical=torch.float32)
    with pytest.raises(ValueError, match="float64"):
        categorical(torch.ones(3), generator=torch.Generator(), dtype=torch.float32)


def test_categorical_chi_square_with_a_tiny_tail():
    """1,000-way categorical with 1e-6 tail entries: chi-square on the head, and the tail mass is drawn at the
    right rate (a float32 Gumbel draw starves it)."""
    from scipy.stats import chi2

    v = 1000
    probs = torch.full((v,), 1e-6, dtype=torch.float64)
    probs[:10] = torch.linspace(1, 2, 10, dtype=torch.float64)
    probs[:10] *= (1 - 990e-6) / probs[:10].sum()
    n = 400_000
    draws = categorical(probs.expand(n, v), generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws, minlength=v).double()
    head = counts[:10]
    exp = probs[:10] * n
    stat = float(((head - exp) ** 2 / exp).sum())
    assert stat < chi2.ppf(0.999, 9)
    tail = float(counts[10:].sum())
    mean, sd = 990e-6 * n, math.sqrt(990e-6 * n)
    assert abs(tail - mean) < 5 * sd


def test_float32_gumbel_starves_a_far_tail_that_float64_draws():
    """A float32 Gumbel is capped (u on a 2^-24 grid): a token 1e-10 times less likely than the leader can never
    win; the float64 inverse-CDF draw gives a 1e-3 token its exact rate."""
    from fewstep.processes.categorical import gumbel_categorical

    logits = torch.tensor([0.0, math.log(1e-10)]).expand(200_000, 2)
    draws = gumbel_categorical(logits, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    assert int(draws.sum()) == 0
    probs = torch.tensor([1.0, 1e-3], dtype=torch.float64).expand(400_000, 2)
    hits = int(categorical(probs, generator=torch.Generator().manual_seed(0)).sum())
    expect = 400_000 * 1e-3 / (1 + 1e-3)
    assert abs(hits - expect) < 5 * math.sqrt(expect)


def test_uniform_sample_x_kernel_is_exact_for_a_posterior_generator():
    """The ``sample-x`` kernel (x ~ Cat(x_hat), then the exact posterior of a one-hot x) is exact for any grid
    when x_hat is the posterior p(x | z_t) (L = 1): sum_x p(x | z_t) q(z_s | z_t, x) = p(z_s | z_t). Duo's soft
    kernel with that same x_hat is not (it needs the leave-one-out conditional), which is why distilled
    generators sample with ``sample-x``."""
    proc = UniformProcess(N)
    p1 = _p_data(6, length=1)
    post = ExactDenoiser(p1, N, 1, proc, mode="mean")
    n = 200_000
    for k in (2, 4):
        tvs = {}
        for kernel in ("sample-x", "duo"):
            tokens, stats = sample_uniform(post, (n, 1), grid=uniform_grid(k),
                                           generator=torch.Generator().manual_seed(k), kernel=kernel)
            emp = torch.bincount(tokens[:, 0], minlength=N).double() / n
            tvs[kernel] = 0.5 * float((emp - p1).abs().sum())
            assert stats["kernel"] == kernel
        assert tvs["sample-x"] < 0.006, tvs  # sampling noise only (~sqrt(N / n))
        assert tvs["duo"] > 0.01, tvs  # a real bias, > 5x the sampling noise
    with pytest.raises(ValueError, match="kernel"):
        sample_uniform(post, (4, 1), grid=uniform_grid(2), generator=torch.Generator(), kernel="soft")
