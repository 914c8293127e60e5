"""Discrete Moment Matching distillation, D-MMD (Hoogeboom, Ruhe, Heek, Mensink, Salimans, arXiv 2603.20155;
docs/methods/dmmd.md). No official code: the equations follow docs/methods/dmmd.md, whose structure mirrors the
continuous alternating MM (``methods.mm``) with squared error replaced by the KL Bregman divergence.

Min-max, x ~ generator, z_s ~ q(z_s | z_t, x):
    min_eta max_phi E[ D(x, x_theta(z_s)) - D(x, x_phi(z_s)) - D(x_theta(z_s), x_phi(z_s)) ].
The inner optimum is phi* = (E_g[x | z_s] + x_theta) / 2 and, for D = KL, the value is 2 KL(phi* || x_theta)
>= 0, zero iff the generator's conditional mean equals the teacher's (the moment-matching condition).

Per iteration (phases alternate, aux first; each draws its own data batch and randomness):

    s ~ U(s_floor, 1), delta ~ U(0, 1/k], t = min(t_max, s + delta)    # k = the student's step count
    z_t = noise(x0, t);  p = student(z_t, t[, eps]);  x ~ Cat(p) (float64, no grad)
    z_s ~ q(z_s | z_t, x)   (exact posterior with one-hot x, no grad)
    aux:     L_AUX = w(s) sum_{l in P} [CE(x^l | x_phi^l(z_s)) + CE(x_theta^l(z_s) | x_phi^l(z_s))]
    student: L_GEN = w(s) sum_{l in P} <p^l, log x_phi^l(z_s) - log x_theta^l(z_s)>   (phi, theta frozen)

P: positions masked in z_s (masked process; the others are copied by SUBS in all three nets) or every position
(uniform). w = lambda(s) = -alpha'/(1 - alpha) (masked, clamped) or 1 (uniform). The generator gradient pushes
p toward tokens the teacher rates above the auxiliary (which sits halfway between the generator's conditional
mean and the teacher): the discrete analogue of MM's <x~, sg(A - x^)>. In the squared-error case with one-hot
x these are exactly MM's losses (tested). Masked generators need extra noise (the paper: CIFAR-10 FID 151 -> 22 with
it); ``latent_dim`` gives the student the eps input of ``nets.text_dit`` (zero-initialised).

Sampling kernel (``kernel``): the student is trained as a generator of x given z_t, with z_s ~ q(z_s | z_t, x)
for x ~ Cat(G): exactly the ``sample-x`` kernel of ``samplers.discrete.sample_uniform`` (default). Duo's kernel
(``duo``, kept as an option) plugs the soft G into the one-hot posterior, which draws its clean token from
G(x) q_t(z_t | x) / Z: the current token's evidence, already in G, is counted twice. For the exact posterior
G = p(x0 | z_t) of a single-token source sample-x reproduces the data law at every k, Duo's kernel does not
(on the 7-token law of tests/test_dmmd_kernel.py Duo's kernel misses the law at k = 2 and 4, TVs in
benchmarks/defaults.md, tests; both are exact at k = 1, where alpha(1) = 0). Masked process: both kernels have one law.

Teacher moment (``teacher_moment``, uniform process). The moment condition is E_g[x | z_s] = E_data[x | z_s],
the posterior mean (the auxiliary, trained by cross-entropy on x, learns E_g[x | z_s]). A NELBO-trained uniform
(Duo) teacher does not output that mean: it outputs the leave-one-out conditional x_hat, which leaves the current
token's evidence out (its plug-in reverse kernel is then exact). Its posterior mean is x_hat reweighted by the
current token's likelihood, x_hat(v) q_s(z_s | e_v) / Z (``methods.idlm.kernel_clean_law``; exact identity,
tested). ``posterior`` (default) reads the teacher's *and the auxiliary's* outputs that way (the auxiliary starts
as a copy of the teacher, so both stay in one parametrisation and the generator gradient is zero at
initialisation; the auxiliary's cross-entropy then fits the reweighted output to E_g[x | z_s]), so that the exact
posterior is the method's fixed point and ``sample-x`` its exact sampler; ``denoiser`` compares the posterior mean
of the generator with the teacher's leave-one-out output (the first implementation), which drives the generator towards
a leave-one-out denoiser that only Duo's kernel samples well. Masked process: a mask carries no evidence, the
teacher's output already is the posterior mean at masked positions, and both options are one.

NaN trap: log-probabilities are restricted to real-token columns at positions in P *before* any product.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.methods.idlm import Final
from fewstep.processes.categorical import inverse_cdf
from fewstep.samplers.discrete import sample_token_student
from fewstep.samplers.grids import uniform_grid

Weighting = Literal["auto", "elbo", "flat"]
Kernel = Literal["sample-x", "duo"]
KERNELS = ("sample-x", "duo")


def check_kernel(kernel: object) -> str:
    """``kernel`` if it names a uniform sampling kernel (``sample-x`` or ``duo``); else a one-line ValueError."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown sampling kernel {kernel!r}; use sample-x or duo")
    return str(kernel)


# --------------------------------------------------------------------------------------------- pure losses
def dmmd_aux_terms(x: Tensor, teacher_probs: Tensor, log_phi: Tensor, positions: Tensor) -> Tensor:
    """sum_{l in P} [CE(x^l | phi^l) + CE(teacher^l | phi^l)] per sequence [B].

    Args:
        x: [B, L] sampled tokens or [B, L, N] soft targets. teacher_probs: [B, L, N]. log_phi: [B, L, >= N]
            (first N columns used). positions: [B, L] bool, the positions P.
    """
    n = teacher_probs.shape[-1]
    pos = positions.unsqueeze(-1)
    lp = torch.where(pos, log_phi[..., :n], torch.zeros_like(log_phi[..., :n]))
    xv = nn.functional.one_hot(x, n).to(lp.dtype) if x.dtype == torch.long else x.to(lp.dtype)
    return -((xv + teacher_probs.to(lp.dtype)) * lp).sum((-1, -2))


def dmmd_generator_terms(probs: Tensor, log_phi: Tensor, log_theta: Tensor, positions: Tensor) -> Tensor:
    """sum_{l in P} <p^l, log phi^l - log theta^l> per sequence [B] (phi, theta detached; grad to p only)."""
    n = probs.shape[-1]
    pos = positions.unsqueeze(-1)
    diff = torch.where(pos, log_phi[..., :n] - log_theta[..., :n], torch.zeros_like(log_phi[..., :n]))
    return (probs * diff.detach().to(probs.dtype)).sum((-1, -2))


@dataclass
class DMMDDraw:
    """One minibatch's randomness: target times s [B] < source times t [B] (float64), z_t [B, L]."""

    s: Tensor
    t: Tensor
    z_t: Tensor


# ------------------------------------------------------------------------------------------------ method
class DiscreteMMD(Method):
    """D-MMD distillation of a masked or uniform discrete teacher into a ``k``-step student denoiser.

    Args:
        teacher: frozen ``CategoricalDenoiser``; student (optionally with ``latent_dim > 0``) and aux: trainable
            copies of it. length: L. k: the student's sampling steps (sets the time gap). weighting: ``auto``
            (lambda(s) masked, flat uniform), ``elbo`` or ``flat``. weight_max: clamp of lambda. kernel: the
            uniform sampling kernel of ``generate``: ``sample-x`` (default; the kernel the student is trained
            for) or ``duo`` (the teacher's; over-counts the current token). Masked: both have one law.
        teacher_moment: uniform process: ``posterior`` (default: the teacher's posterior mean, its leave-one-out
            output reweighted by the current token's likelihood) or ``denoiser`` (its output as is).
        gap: ``uniform`` (default): t - s ~ U(0, 1/k]; ``fixed``: t = min(t_max, s + 1/k), the gap the k-step
            sampler takes (as ``methods.mm``'s option).
    """

    def __init__(self, teacher: CategoricalDenoiser, student: CategoricalDenoiser, aux: CategoricalDenoiser, *,
                 length: int, k: int = 4, weighting: Weighting = "auto", weight_max: float = 1e3,
                 kernel: Kernel = "sample-x", teacher_moment: Literal["posterior", "denoiser"] = "posterior",
                 gap: Literal["uniform", "fixed"] = "uniform") -> None:
        super().__init__()
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        if weighting not in ("auto", "elbo", "flat"):
            raise ValueError(f"unknown weighting {weighting!r}; use auto, elbo or flat")
        self.kernel = check_kernel(kernel)
        if teacher_moment not in ("posterior", "denoiser"):
            raise ValueError(f"unknown teacher_moment {teacher_moment!r}; use posterior or denoiser")
        self.teacher_moment = teacher_moment
        if gap not in ("uniform", "fixed"):
            raise ValueError(f"unknown gap {gap!r}; use uniform or fixed")
        self.gap = gap
        if aux.latent_dim:
            raise ValueError("the auxiliary denoiser takes no latent noise")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student, self.aux = student, aux
        self.process, self.length, self.k = teacher.process, int(length), int(k)
        if weighting == "auto":
            weighting = "elbo" if self.process.kind == "masked" else "flat"
        self.weighting, self.weight_max = weighting, float(weight_max)

    def trainable(self) -> dict[str, nn.Module]:
        return {"student": self.student, "aux": self.aux}

    def frozen(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def phases(self) -> Sequence[Phase]:
        return (Phase("aux", ("aux",)), Phase("student", ("student",)))

    # ------------------------------------------------------------------------------------ the pieces
    def draw(self, x0: Tensor, generator: torch.Generator) -> DMMDDraw:
        p, n, dev = self.process, x0.shape[0], x0.device
        lo, hi = p.t_min, p.t_max
        s = lo + (hi - lo) * rng.rand((n,), generator=generator, device=dev, dtype=torch.float64)
        gap = (1.0 - rng.rand((n,), generator=generator, device=dev, dtype=torch.float64)) / self.k
        if self.gap == "fixed":  # drawn all the same, so that both options see one random stream
            gap = torch.full_like(gap, 1.0 / self.k)
        t = (s + gap.clamp_min(1e-6)).clamp(max=hi)
        s = torch.minimum(s, t - 1e-6)
        return DMMDDraw(s=s, t=t, z_t=p.add_noise(x0, t, generator=generator))

    def student_probs(self, student: nn.Module, d: DMMDDraw, generator: torch.Generator) -> Tensor:
        """p [B, L, N] float32 over the real tokens (grad follows the ambient mode)."""
        dim = getattr(student, "latent_dim", 0) or getattr(getattr(student, "module", None), "latent_dim", 0)
        t = d.t.float()
        if dim:
            eps = rng.randn((*d.z_t.shape, dim), generator=generator, device=d.z_t.device, dtype=torch.float64)
            logp = student(d.z_t, t, latent=eps.float())
        else:
            logp = student(d.z_t, t)
        return logp[..., :self.process.vocab].float().exp()

    def sample_zs(self, d: DMMDDraw, probs: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x [B, L] ~ Cat(p) in float64, z_s [B, L] ~ q(z_s | z_t, x)); no grad."""
        p = self.process
        with torch.no_grad():
            u = rng.rand(d.z_t.shape, generator=generator, device=d.z_t.device, dtype=torch.float64)
            x = inverse_cdf(probs.detach().double(), u)
            onehot = nn.functional.one_hot(x, p.vocab).double()
            if p.kind == "masked":
                x = torch.where(d.z_t == p.mask_id, x, d.z_t)  # SUBS: visible tokens are copied
                onehot = nn.functional.one_hot(x, p.vocab).double()
            log_x = onehot.clamp_min(1e-300).log()
            z_s = p.posterior_step(d.z_t, log_x, d.t, d.s, generator=generator)
        return x, z_s

    def moment_logp(self, logp: Tensor, z_s: Tensor, s: Tensor) -> Tensor:
        """The posterior-mean log-probabilities [B, L, N] a denoiser output ``logp`` [B, L, >= N] stands for at
        z_s [B, L], s [B] (float64): uniform with ``teacher_moment="posterior"``, log_softmax(logp + log q_s(z_s | .))
        (``kernel_clean_law`` in log space; differentiable); otherwise the real-token columns as they are."""
        lp = logp[..., :self.process.vocab]
        if self.process.kind != "uniform" or self.teacher_moment != "posterior":
            return lp
        n = self.process.vocab
        a = self.process.schedule.alpha(s.double()).reshape(-1, 1, 1)
        lik = (a * nn.functional.one_hot(z_s, n).double() + (1 - a) / n).log()
        return torch.log_softmax(lp + lik.to(lp.dtype), dim=-1)

    def teacher_probs(self, teacher: nn.Module, z_s: Tensor, s: Tensor) -> Tensor:
        """The teacher's moment [B, L, N] (float32, no grad) at z_s [B, L], s [B] (float64): its posterior mean
        (``teacher_moment="posterior"``, uniform) or its output probabilities."""
        with torch.no_grad():
            return self.moment_logp(teacher(z_s, s.float()).double(), z_s, s).exp().float()

    def positions(self, z_s: Tensor) -> Tensor:
        p = self.process
        return z_s == p.mask_id if p.kind == "masked" else torch.ones_like(z_s, dtype=torch.bool)

    def weight(self, s: Tensor) -> Tensor:
        if self.weighting == "flat":
            return torch.ones_like(s, dtype=torch.float32)
        return self.process.elbo_weight(s.float()).clamp(max=self.weight_max)

    # --------------------------------------------------------------------------------------- losses
    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x0 = batch["x"]
        if x0.dtype != torch.long:
            raise ValueError(f"D-MMD trains on int64 tokens, got {x0.dtype}")
        d = self.draw(x0, generator)
        if phase == "aux":
            with torch.no_grad():
                probs = self.student_probs(nets["student"], d, generator)
        elif phase == "student":
            probs = self.student_probs(nets["student"], d, generator)
        else:
            raise ValueError(f"unknown D-MMD phase {phase!r}")
        x, z_s = self.sample_zs(d, probs, generator)
        pos, w, s = self.positions(z_s), self.weight(d.s), d.s.float()
        if phase == "aux":
            with torch.no_grad():
                theta = self.teacher_probs(nets["teacher"], z_s, d.s)
            terms = dmmd_aux_terms(x, theta, self.moment_logp(nets["aux"](z_s, s), z_s, d.s), pos)
            loss = (w * terms / self.length).mean()
            return LossOutput(loss, {"aux_ce": loss.detach()})
        with torch.no_grad():
            log_phi = self.moment_logp(nets["aux"](z_s, s), z_s, d.s)
            log_theta = self.moment_logp(nets["teacher"](z_s, s), z_s, d.s)  # as the aux: exactly equal at init
        gen = dmmd_generator_terms(probs, log_phi, log_theta, pos)
        loss = (w * gen / self.length).mean()
        return LossOutput(loss, {"gen": loss.detach()})

    # -------------------------------------------------------------------------------------- sampling
    def generate(self, n: int, *, steps: int | None = None, nets: Mapping[str, nn.Module],
                 generator: torch.Generator, cond: Tensor | None = None, final: Final = "ancestral",
                 device: torch.device | str = "cpu", batch_size: int | None = 512, return_stats: bool = False,
                 **options: object):
        """``n`` samples [n, L] (int64): the teacher's ancestral sampler with the student, ``k`` steps by default.

        Options: ``kernel`` (None or absent: the method's ``kernel``, ``sample-x`` by default) and ``temperature``
        (the student's sampling temperature, default 1); others are ignored."""
        kernel = options.get("kernel")
        kernel = self.kernel if kernel is None else check_kernel(kernel)
        temperature = float(options.get("temperature", 1.0))  # type: ignore[arg-type]
        tokens, stats = sample_token_student(nets["student"], (n, self.length), grid=uniform_grid(steps or self.k),
                                             generator=generator, device=device, final=final, batch_size=batch_size,
                                             kernel=kernel, temperature=temperature)
        return (tokens, stats) if return_stats else tokens

    def config(self) -> dict:
        return {"process": self.process.kind, "length": self.length, "k": self.k, "weighting": self.weighting,
                "weight_max": self.weight_max, "latent_dim": self.student.latent_dim, "kernel": self.kernel,
                "teacher_moment": self.teacher_moment, "gap": self.gap}
