"""The clean-token law of the uniform (Duo) reverse kernel (``methods.idlm.kernel_clean_law``) and IDLM's
``uniform_law="kernel"`` option: the kernel is the exact posterior mixture over that law, its last step draws
from it, for a one-token source at the leave-one-out denoiser it is Bayes' posterior, and the method judges it."""

from __future__ import annotations

import copy

import pytest
import torch

from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.methods.idlm import IDLM, kernel_clean_law
from fewstep.nets.text_dit import TextDiT
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _random_case(seed: int, n: int = 7, b: int = 4, length: int = 3):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(b, length, n, generator=g, dtype=torch.float64), -1)
    z = torch.randint(0, n, (b, length), generator=g)
    t = torch.rand(b, generator=g, dtype=torch.float64) * 0.9 + 0.05
    s = t * torch.rand(b, generator=g, dtype=torch.float64)
    return probs, z, t, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_duo_kernel_is_the_posterior_mixture_over_the_kernel_law(seed):
    """p(z_s | z_t, G) = sum_x G~(x) q(z_s | z_t, e_x) for soft G, every s < t; at s = 0 it is G~ itself."""
    n = 7
    proc = UniformProcess(n)
    probs, z, t, s = _random_case(seed, n)
    law = kernel_clean_law(proc, probs, z, t)
    assert torch.allclose(law.sum(-1), torch.ones_like(law[..., 0]), atol=1e-12)
    eye = torch.eye(n, dtype=torch.float64)
    mixture = sum(law[..., v:v + 1] * proc.posterior_probs(z, eye[v].expand_as(probs), t, s) for v in range(n))
    assert torch.allclose(proc.posterior_probs(z, probs, t, s), mixture, rtol=1e-10, atol=1e-13)
    last = proc.posterior_probs(z, probs, t, torch.zeros_like(s))
    assert torch.allclose(last, law, rtol=1e-10, atol=1e-13)
    # the reweighting is real: G~ differs from G (the current token gains weight)
    assert float((law - probs).abs().max()) > 1e-2
    cur = law.gather(-1, z.unsqueeze(-1)) / probs.gather(-1, z.unsqueeze(-1))
    assert bool((cur >= 1 - 1e-12).all())


def test_one_token_source_at_the_leave_one_out_denoiser_is_bayes_posterior():
    """For L = 1 the leave-one-out denoiser is the source marginal p itself; G~ is then p(x | z_t) by Bayes'
    rule (computed here from q_t independently), whose mixture over z_t ~ q_t returns the source."""
    n = 5
    proc = UniformProcess(n)
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    for tv in (0.1, 0.5, 0.9):
        a = 1 - tv  # log-linear keep schedule
        q = a * torch.eye(n, dtype=torch.float64) + (1 - a) / n  # q[x, z] = q_t(z | x)
        bayes = (p[:, None] * q) / (p[:, None] * q).sum(0, keepdim=True)  # [x, z]
        zs = torch.arange(n).reshape(n, 1)
        law = kernel_clean_law(proc, p.expand(n, 1, n), zs, torch.full((n,), tv, dtype=torch.float64))[:, 0]
        assert torch.allclose(law, bayes.T, rtol=1e-12)
        q_z = p @ q
        assert torch.allclose(q_z @ law, p, rtol=1e-12)


def _tiny(kind: str):
    torch.manual_seed(0)
    proc = UniformProcess(6) if kind == "uniform" else MaskedProcess(6)
    teacher = CategoricalDenoiser(TextDiT(proc.width, proc.width, 4, dim=16, depth=1, heads=2), proc)
    return teacher, copy.deepcopy(teacher).requires_grad_(True), copy.deepcopy(teacher).requires_grad_(True)


def test_kernel_law_option_judges_the_kernel_law():
    """With uniform_law='kernel' the fake's loss equals the default's on a student whose output is replaced by
    G~ (the same random stream): the option changes which law is judged and nothing else."""
    teacher, student, fake = _tiny("uniform")
    batch = {"x": torch.randint(0, 6, (16, 4), generator=torch.Generator().manual_seed(1))}
    m_kernel = IDLM(teacher, student, fake, length=4, uniform_estimator="hard", time_coupling="shared",
                    uniform_law="kernel")
    m_plain = IDLM(teacher, student, fake, length=4, uniform_estimator="hard", time_coupling="shared")
    nets = {"teacher": teacher, "student": student, "aux": fake}
    proc = teacher.process

    class Reweighted(torch.nn.Module):
        """The student with its output replaced by the kernel law (log-space), for the same inputs."""

        latent_dim = 0

        def forward(self, z, t):
            probs = student(z, t).exp()
            return kernel_clean_law(proc, probs, z, t.double()).log()

    out_k = m_kernel.loss("aux", batch, nets, torch.Generator().manual_seed(5))
    out_p = m_plain.loss("aux", batch, {**nets, "student": Reweighted()}, torch.Generator().manual_seed(5))
    assert float(out_k.loss.detach()) == pytest.approx(float(out_p.loss.detach()), rel=1e-5)
    plain = m_plain.loss("aux", batch, nets, torch.Generator().manual_seed(5)).loss.detach()
    assert float(out_k.loss.detach()) != pytest.approx(float(plain), rel=1e-3)
    fake.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in fake.state_dict().items()})
    gen = m_kernel.loss("student", batch, nets, torch.Generator().manual_seed(6))
    gen.loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert m_kernel.config()["uniform_law"] == "kernel"


def test_kernel_law_rejects_bad_input():
    teacher, student, fake = _tiny("masked")
    with pytest.raises(ValueError, match="uniform process only"):
        IDLM(teacher, student, fake, length=4, uniform_law="kernel")
    teacher, student, fake = _tiny("uniform")
    with pytest.raises(ValueError, match="unknown uniform_law"):
        IDLM(teacher, student, fake, length=4, uniform_law="posterior")
