"""IDLM's nested coupling (``time_coupling="nested"``, masked): the judged state is one step of the teacher's
sampler from the student's own input. Checks: the corruption is exactly that step (real tokens kept, masks
revealed at the posterior rate with tokens from G, s in its band), and the method's Monte-Carlo losses and
gradient are unbiased for their exact expectations on the enumerable N = 3, L = 2 toy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from _discrete_oracles import all_sequences
from _tiny_text import LS, NS, tiny_teacher
from fewstep.methods.idlm import IDLM
from test_idlm import SEQS, L, N, _exact_setup, _mc_losses

pytestmark = pytest.mark.usefixtures("torch_single_thread")

DELTA = 0.3


def test_nested_corruption_is_one_sampler_step():
    """Real tokens of z~ stay, only its masks are revealed; s ~ U(max(t~ - Delta, t_min), t~); the revealed
    fraction is E_s[(t~ - s) / t~] = Delta / (2 t~) (log-linear schedule, t~ > Delta) and revealed tokens are
    drawn from G."""
    teacher = tiny_teacher("masked")
    method = IDLM(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, time_coupling="nested",
                  nested_step=DELTA)
    g = torch.Generator().manual_seed(0)
    b, m = 20000, teacher.process.mask_id
    x0 = torch.randint(0, NS, (b, LS), generator=g)
    t_in = torch.full((b,), 0.8)
    t_in[: b // 4] = 0.1  # below Delta: s in [t_min, t~]
    z_in = teacher.process.add_noise(x0, t_in, generator=g)
    probs = torch.softmax(torch.randn(1, LS, NS, generator=g), -1).expand(b, -1, -1)
    z_s, s = method.corrupt_nested(z_in, probs, t_in, g)
    vis = z_in != m
    assert torch.equal(z_s[vis], z_in[vis])
    assert bool(((z_s != m) | (z_in == m)).all())  # masked(z_s) is a subset of masked(z~)
    lo = torch.clamp(t_in.double() - DELTA, min=teacher.process.t_min)
    assert bool((s <= t_in.double()).all()) and bool((s >= lo - 1e-12).all())
    hi_rows = t_in > 0.5
    assert float(s[hi_rows].mean()) == pytest.approx(0.8 - DELTA / 2, abs=4 * DELTA / math.sqrt(12 * b))
    revealed = (z_in == m) & (z_s != m)
    frac = revealed[hi_rows].sum() / (z_in[hi_rows] == m).sum()
    n_m = int((z_in[hi_rows] == m).sum())
    expect = DELTA / (2 * 0.8)
    assert float(frac) == pytest.approx(expect, abs=5 * math.sqrt(expect / n_m))
    pos = 0  # the token law at one position: revealed draws follow G
    sel = revealed[:, pos]
    counts = torch.bincount(z_s[sel, pos], minlength=NS).double()
    p = probs[0, pos].double()
    chi2 = float(((counts - sel.sum() * p) ** 2 / (sel.sum() * p)).sum())
    assert chi2 < 3 * NS + 20  # df = NS - 1


def test_nested_coupling_rejects_uniform_and_bad_steps():
    teacher = tiny_teacher("uniform")
    with pytest.raises(ValueError, match="masked process only"):
        IDLM(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, time_coupling="nested")
    teacher = tiny_teacher("masked")
    with pytest.raises(ValueError, match="nested_step"):
        IDLM(teacher, copy.deepcopy(teacher), copy.deepcopy(teacher), length=LS, time_coupling="nested",
             nested_step=0.0)


def _nested_weights(t_min: float, delta: float) -> np.ndarray:
    """W[k, j] = E_{t~, s}[t~^k (1 - t~)^(L-k) (s / t~)^j ((t~ - s) / t~)^(k-j) lambda(s)] for the log-linear
    schedule (lambda(s) = 1 / s): the probability weight of a z~ with k masks (one pattern) passing to a z_s
    with j of them still masked (one subset), times the ELBO weight at s. t~ ~ U(t_min, 1), s ~ U(max(t~ -
    delta, t_min), t~). Inner and outer integrands are polynomials on each piece of t~, so Gauss-Legendre is
    exact."""
    nodes, wts = np.polynomial.legendre.leggauss(16)

    def gl(fn, a: float, b: float) -> float:
        return sum(0.5 * (b - a) * w * fn(a + (b - a) * 0.5 * (u + 1)) for u, w in zip(nodes, wts))

    out = np.zeros((L + 1, L + 1))
    cut = min(t_min + delta, 1.0)
    for k in range(1, L + 1):
        for j in range(1, k + 1):
            def inner(tt: float, k=k, j=j) -> float:
                s_lo = max(tt - delta, t_min)
                val = gl(lambda s: s ** (j - 1) * (tt - s) ** (k - j), s_lo, tt)
                return (1 - tt) ** (L - k) * val / (tt - s_lo)

            out[k, j] = (gl(inner, t_min, cut) + (gl(inner, cut, 1.0) if cut < 1.0 else 0.0)) / (1 - t_min)
    return out


def _exact_nested(method: IDLM, p_data: torch.Tensor):
    """Exact E[student loss] (differentiable in the student) and E[aux loss] of the nested coupling, per token:
    every x0, z~ mask pattern, subset J of its masks left masked at s and revealed tokens (from G) enumerated."""
    m = method.process.mask_id
    wk = _nested_weights(method.t_band[0], method.nested_step)
    one = torch.ones(1, dtype=torch.float64)
    stud = torch.zeros((), dtype=torch.float64)
    aux = torch.zeros((), dtype=torch.float64)
    for xi, x in enumerate(SEQS.tolist()):
        for pat in all_sequences(2, L).tolist():  # 1 = masked in z~
            masks = [ell for ell in range(L) if pat[ell]]
            if not masks:
                continue
            zt = torch.tensor([[m if b else v for v, b in zip(x, pat)]])
            g = method.student(zt, torch.ones(1))[0, :, :N].float().exp().double()  # [L, N]
            for keep in all_sequences(2, len(masks)).tolist():  # 1 = still masked at s
                jset = [ell for ell, kb in zip(masks, keep) if kb]
                rev = [ell for ell, kb in zip(masks, keep) if not kb]
                if not jset:
                    continue
                w = float(p_data[xi]) * wk[len(masks), len(jset)]
                for tok in all_sequences(N, len(rev)).tolist() if rev else [[]]:
                    zs = zt.clone()
                    ctx = torch.ones((), dtype=torch.float64)
                    for ell, v in zip(rev, tok):
                        zs[0, ell] = v
                        ctx = ctx * g[ell, v].detach()
                    lt, lf = method.teacher(zs, one)[0, :, :N], method.aux(zs, one)[0, :, :N]
                    for ell in jset:
                        stud = stud + w * ctx * -(g[ell] * (lt[ell] - lf[ell])).sum()
                        aux = aux + w * ctx * -(g[ell].detach() * lf[ell]).sum()
    return stud / L, aux / L


def test_nested_monte_carlo_losses_are_unbiased():
    """IDLM.loss with the nested coupling averages (within 4 SE) to the exact enumeration above, for both
    phases, and its student gradient to the exact gradient; the exact student loss is not trivially 0."""
    base, _, p_data, _ = _exact_setup()
    method = IDLM(base.teacher, base.student, base.aux, length=L, time_coupling="nested", nested_step=DELTA)
    exact, exact_aux = _exact_nested(method, p_data)
    assert abs(exact.item()) > 0.02
    reps = 48
    stud, aux, grads = _mc_losses(method, p_data, reps)
    se, se_aux = float(stud.std()) / math.sqrt(reps), float(aux.std()) / math.sqrt(reps)
    assert abs(float(stud.mean()) - exact.item()) < 4 * se, (float(stud.mean()), exact.item(), se)
    assert abs(float(aux.mean()) - float(exact_aux)) < 4 * se_aux, (float(aux.mean()), float(exact_aux), se_aux)
    g_exact = torch.cat([q.reshape(-1) for q in torch.autograd.grad(exact, list(method.student.parameters()))])
    g_mean, g_se = grads.mean(0), float(grads.std(0).norm()) / math.sqrt(reps)
    assert float((g_mean - g_exact).norm()) < 4 * g_se + 1e-3 * float(g_exact.norm())
