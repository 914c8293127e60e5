"""IDLM: inverse distillation of a discrete diffusion teacher (Li, Gushchin et al., ICML 2026, arXiv 2602.19066;
docs/methods/idlm.md).

Objective: L_IDLM(theta) = L(f*, p_theta) - min_f L(f, p_theta) >= 0, with L(f, p) the teacher's own training
loss (its NELBO) on samples of p. It vanishes iff p_theta is the teacher's distribution. Three networks: the
frozen teacher f*, a "fake" denoiser f (role ``aux``) trained with the ordinary loss on the student's samples so
that f ~ argmin_f L(f, p_theta), and the student G_theta. Student and fake start as copies of the teacher.

Multistep parametrisation (what is trained): the student is a denoiser. Its latent is a noised real datum,
z~ ~ q_t~(. | x0) with t~ ~ U; G = G_theta(z~, t~) is one simplex per position (SUBS copies visible tokens)
and p_theta = E_{x0, t~} prod_l Cat(G^l). At inference the teacher's own sampler runs with the student as its
denoiser, for *any* K: one student serves K = 16, 8, 4, ... (there is no K in training). With
``latent_dim > 0`` the student also takes eps ~ N(0, I) [B, L, d] (the latent-mixture generator): each sampler
step is then E_eps prod_l Cat(G^l(eps)), which can represent joint structure even in one step from all-mask.

Per iteration (phases alternate, aux first; each phase draws its own data batch and randomness):

    t~ ~ stratified U;  G = exp(student(noise(x0, t~), t~[, eps]))     # no grad in the aux phase
    t  ~ independent stratified U;  (z_in, z_obs) = corrupt(G, t)
    aux:     loss = Lsoft(fake; sg G)
    student: loss = Lsoft(teacher; G) - Lsoft(fake; G)                 # fake frozen; value = L_IDLM estimate

Masked process: x ~ Cat(G) per position (float64 inverse CDF), kept with probability alpha_t, else masked; the
hard z feeds both nets. Lsoft(f) = lambda(t) sum_{l masked} -<G^l, log f^l(z, t)>, exact Rao-Blackwellisation
because G is factorised given its input: given (z~, t~[, eps]) the tokens are independent, and a masked z^l
says nothing about x^l, so E[x^l | z, latent] = G^l. (For the latent mixture this holds per eps: eps is part of
the conditioning, so the soft target stays exact.) SUBS makes teacher and fake agree at visible positions, so
the student loss is mask-only: -lambda sum_{l masked} <G^l, a^l>, a = log f* - log f (detached), whose logit
gradient is -lambda G (a - <G, a>): tokens the teacher likes more than the fake are promoted. The dependence
through the hard context tokens is dropped (the paper's implicit stop-gradient).

NaN trap (docs/methods/idlm.md, calibration): at visible positions both log f* and log f are -inf off the
carried token, so a = NaN there; ``where(mask, <G, a>, 0)`` gives correct values but NaN gradients. Every
product here uses real-token columns of *masked* positions only: ``where`` is applied to log f and a before any product.

Uniform (Duo) process, as in the paper: w = a~_t G + s~_t xi with a~_t the Gaussian scale whose argmax has the
teacher's keep probability alpha(t) (``GaussianConnection``); z_in = softmax(w / tau) feeds teacher and fake, z_obs
= argmax w is the current token of the loss g(z_obs, G, f(z_in, t)) (the KL + Itakura-Saito NELBO integrand with
soft x = G). Gradients flow pathwise through z_in (through the frozen nets) and through the soft target; the argmax
contributes none. ``pathwise=False`` detaches z_in (the paper's ablation, which drifts). That is
``uniform_estimator="relaxed"``, kept as a named option. The default ``"hard"`` estimator is the masked case's
analogue: x ~ Cat(G) and z ~ q_t(. | x) as hard tokens (what teacher and fake were trained on, drawn by
``hard_uniform_corruption``); the fake's target and the student's score are Rao-Blackwellised over the clean token
with importance weights q_t(z | e_v) / q_t(z | G) (``uniform_rb_terms``, exact identity tested), and the context
dependence is dropped as in the masked case.

Why hard is the default (tests/test_idlm_fixed_point.py). For a *soft* G the law of argmax(a~_t G + s~_t xi) is
not q_t(. | G) = alpha_t G + (1 - alpha_t)/N (the connection matches marginals for one-hot x only); the gap is
largest at small t and shrinks as t grows. The relaxed fake's exact minimiser is then the mixture of the student's G
reweighted by P_relaxed(z | G) / q_t(z | G), not the teacher, and the expected relaxed student gradient at student
law = data law is nonzero (the data law is not a fixed point; in the one-token test it is as large as the hard
gradient of a student moved off the data). The hard corruption has law q_t(. | G) exactly: at the data law the
fake's minimiser is the teacher and the expected gradient vanishes. (Values: benchmarks/defaults.md, tests;
benchmarks/idlm.md.)

Which clean-token law of a uniform student is judged (``uniform_law``, an option of ours). The teacher's Duo
kernel plugs the denoiser x_hat into the one-hot posterior; rewritten, p(z_s | z_t, x_hat) = sum_x
x~(x) q(z_s | z_t, e_x) with x~ proportional to x_hat(x) q_t(z_t | e_x) (``kernel_clean_law``; tested): the
sampler draws its clean token from x_hat reweighted by the current token's likelihood, and at s = 0 it returns
exactly x ~ x~. For the teacher that is right (its x_hat is the leave-one-out conditional, which leaves the
current token out). ``uniform_law="denoiser"`` (the paper's form, default) judges x ~ G; the sampler then
counts the current token a second time once IDLM has taught G to use it, which over-sharpens few-step samples.
``"kernel"`` judges x ~ G~ = kernel_clean_law(G, z~, t~), i.e. exactly what the K-step sampler draws from G:
training and inference see one law, and the student can stay a leave-one-out denoiser.

Design decisions:
- Time coupling. With t independent of t~ (the paper) the objective is L_IDLM of the mixture over t~, and the
  student at t~ ~ 1 (all-mask input) is a one-step product distribution judged on joint structure: the
  mode-seeking objective then trades coverage for validity (grid2d: a factorised student does not improve from 1
  to 4 steps, its marginals shrink to a valid product set; at a slow student LR the latent-noise student
  stays there too). ``time_coupling="shared"`` uses t = t~, a per-noise-level form: each level's generator is
  judged at the level it was fed, so the nearly-all-mask generator is judged mostly on marginals (grid2d
  ablation: benchmarks/idlm.md, IDLM calibration on grid2d).
- The student's *input* is the discrete forward process applied to real data (hard tokens, both processes): it
  is the exact marginal the teacher was trained on and exactly what the sampler feeds it at inference (the
  paper's relaxed softmax(w~/tau) input at tau = 1e-3 is a near one-hot of the same law).
- Nested coupling (``time_coupling="nested"``, masked only, an option of ours, not the paper's): the judged
  state is one step of the teacher's own sampler from the student's input, z_s ~ q(z_s | z~, x ~ G) with
  s ~ U(max(t~ - Delta, t_min), t~) (``nested_step`` = Delta, e.g. 1/K): every real token of z~ stays visible,
  a fraction (alpha_s - alpha_t~) / (1 - alpha_t~) of its masks is revealed from G, and teacher and fake judge
  the remaining masks at level s. This is exactly the state a K-step sampler with step Delta passes on, so the
  generator is asked to be coherent over one sampler step rather than to produce every masked token of z~ in
  one shot (what "shared" judges, and why its students over-sharpen as K grows). Soft targets stay exact:
  given (z~, z_s) the masked tokens of z_s are independent draws from G. It trades "one student serves every
  K" for a student tuned to steps <= Delta.
- Weights: lambda(t) = -alpha'/(1 - alpha) (masked) is clamped at ``weight_max``; gradient clipping comes from
  the Trainer. Loss values are per token (divided by L).
- Optimisers and EMAs: one per role (the Trainer's), ``aux_lr`` separate; ``aux_every`` > 1 runs the student
  phase every n-th iteration only (n fake steps per student step, keeping the fake caught up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.processes.categorical import inverse_cdf, stratified_t
from fewstep.processes.gaussian_connection import GaussianConnection
from fewstep.samplers.discrete import sample_token_student
from fewstep.samplers.grids import uniform_grid

Final = Literal["ancestral", "greedy", "none"]
TimeCoupling = Literal["independent", "shared", "nested"]
UniformEstimator = Literal["relaxed", "hard"]


# --------------------------------------------------------------------------------------------- pure losses
def masked_soft_ce(probs: Tensor, log_f: Tensor, z: Tensor, weight: Tensor, mask_id: int) -> Tensor:
    """lambda(t) sum_{l: z^l = m} -<probs^l, log f^l> per sequence [B].

    Args:
        probs: [B, L, N] soft targets over the real tokens. log_f: [B, L, >= N] log-probabilities (SUBS output;
            only the first N columns are used). z: [B, L] corrupted tokens. weight: [B] lambda(t).
    """
    n = probs.shape[-1]
    masked = (z == mask_id).unsqueeze(-1)
    lf = torch.where(masked, log_f[..., :n], torch.zeros_like(log_f[..., :n]))  # mask BEFORE the product
    return -weight.to(probs.dtype) * (probs * lf.to(probs.dtype)).sum((-1, -2))


def masked_advantage(log_teacher: Tensor, log_fake: Tensor, z: Tensor, mask_id: int, n: int) -> Tensor:
    """a = log f* - log f [B, L, N] at masked positions, exactly 0 elsewhere (never NaN); detached."""
    masked = (z == mask_id).unsqueeze(-1)
    diff = torch.where(masked, log_teacher[..., :n] - log_fake[..., :n], torch.zeros_like(log_teacher[..., :n]))
    return diff.detach()


def masked_generator_loss(probs: Tensor, advantage: Tensor, weight: Tensor) -> Tensor:
    """-lambda(t) sum_l <G^l, a^l> per sequence [B] (``advantage`` already zero at visible positions)."""
    return -weight.to(probs.dtype) * (probs * advantage.to(probs.dtype)).sum((-1, -2))


def hard_uniform_corruption(process, probs: Tensor, t: Tensor, generator: torch.Generator) -> Tensor:
    """z [B, L] (int64) ~ q_t(. | G) = sum_x G(x) q_t(. | e_x), G = ``probs`` [B, L, N]: x ~ Cat(G) (float64
    inverse CDF), then the uniform forward process at t [B]. No grad. The corruption of ``uniform_estimator="hard"``;
    its law is exactly alpha_t G + (1 - alpha_t) / N, unlike ``relax_uniform``'s argmax for a soft G."""
    with torch.no_grad():
        u = rng.rand(probs.shape[:2], generator=generator, device=probs.device, dtype=torch.float64)
        return process.add_noise(inverse_cdf(probs.detach().double(), u), t, generator=generator)


def relax_uniform(connection: GaussianConnection, process, probs: Tensor, t: Tensor, xi: Tensor,
                  tau: float) -> tuple[Tensor, Tensor]:
    """Duo's Gaussian relaxation of soft tokens: w = a~_t G + s~_t xi with T(a~_t) = alpha(t);
    returns (z_in = softmax(w / tau) [B, L, N] (differentiable in G), z_obs = argmax w [B, L]). For one-hot G,
    z_obs ~ q_t(. | G); for a soft G its law is *not* alpha_t G + (1 - alpha_t) / N (``hard_uniform_corruption``)."""
    a = connection.alpha_tilde(process.schedule.alpha(t.double()))
    w = connection.corrupt(probs, a.to(probs.device), xi)
    return torch.softmax(w / tau, dim=-1), w.detach().argmax(-1)


def uniform_gap(connection: GaussianConnection, process, probs: Tensor, t: Tensor, xi: Tensor, tau: float,
                teacher: nn.Module, fake: nn.Module, *, pathwise: bool = True) -> Tensor:
    """IDLM-Duo student loss per sequence [B]: sum_l g(z_obs, G, f*(z_in)) - g(z_obs, G, f(z_in)).

    Gradients reach ``probs`` [B, L, N] through the soft target G of g and, with ``pathwise``, through the
    relaxed input z_in (through both frozen nets); the argmax contributes none. t: [B]; xi: [B, L, N] fixed noise.
    """
    z_in, z_obs = relax_uniform(connection, process, probs, t, xi, tau)
    if not pathwise:
        z_in = z_in.detach()
    tt = t.to(probs.dtype)
    f_t, f_f = teacher(z_in, tt).exp(), fake(z_in, tt).exp()
    return (process.elbo_integrand(z_obs, probs, f_t, tt) - process.elbo_integrand(z_obs, probs, f_f, tt)).sum(-1)


def kernel_clean_law(process, probs: Tensor, z: Tensor, t: Tensor) -> Tensor:
    """G~ [B, L, N] proportional to G(v) q_t(z | e_v) = G(v) (alpha_t [v = z] + (1 - alpha_t) / N): the clean-token law
    the uniform (Duo) reverse kernel draws from with G = ``probs`` [B, L, N] as its denoiser at current tokens
    z [B, L] and time t [B] (p(z_s | z_t, G) = sum_x G~(x) q(z_s | z_t, e_x); its s = 0 step is x ~ G~).
    Differentiable in ``probs``; the likelihood is built in float64 and cast to ``probs``' dtype."""
    n = process.vocab
    a = process.schedule.alpha(t.double()).reshape(-1, 1, 1)
    lik = (a * nn.functional.one_hot(z, n).double() + (1 - a) / n).to(probs.dtype)
    w = probs * lik
    return w / w.sum(-1, keepdim=True)


def uniform_rb_terms(process, z: Tensor, probs: Tensor, f: Tensor, t: Tensor) -> Tensor:
    """h_v [B, L, N] for every clean token v: the uniform NELBO integrand g(z, e_v, f) importance-weighted by
    q_t(z | e_v) / q_t(z | G),

        h_v = [-alpha' / (N alpha q_t(z | G))] [KL(q_t(. | e_v) || q_t(. | f)) + D_IS(q_t(z | e_v) || q_t(z | f))],

    so that for z ~ q_t(. | G) = sum_x G(x) q_t(. | x): E_z sum_v G(v) h_v = E_{x ~ G} E_{z | x} g(z, x, f)
    (Rao-Blackwellised over the clean token) and E_z h_v = E_{z ~ q_t(. | e_v)} g(z, e_v, f), the exact partial
    derivative of that expectation in G(v). O(N) per position. Args: z [B, L] tokens, probs G [B, L, N],
    f [B, L, N] predicted clean-token probabilities, t [B]; computed in f's dtype."""
    n, dt = process.vocab, f.dtype
    a = process.schedule.alpha(t.to(dt)).reshape(-1, 1, 1)
    da = process.schedule.d_alpha(t.to(dt)).reshape(-1, 1, 1)
    lo, hi = (1 - a) / n, a + (1 - a) / n
    log_qf = (a * f + lo).clamp_min(torch.finfo(dt).tiny).log()
    kl = hi * hi.log() + (n - 1) * lo * lo.log() - lo * log_qf.sum(-1, keepdim=True) - a * log_qf
    idx = z.unsqueeze(-1)
    qz_v = lo + a * nn.functional.one_hot(z, n).to(dt)  # q_t(z | e_v)
    r = qz_v / log_qf.gather(-1, idx).exp()
    d_is = r - r.log() - 1
    q_zg = a * probs.to(dt).gather(-1, idx) + lo
    return (-da / (n * a * q_zg)) * (kl + d_is)


# ------------------------------------------------------------------------------------------------ method
class IDLM(Method):
    """Inverse distillation of a masked or uniform discrete teacher into a few-step student denoiser.

    Args:
        teacher: frozen ``CategoricalDenoiser``. student, fake: trainable copies of it (the student may have a
            latent-noise input, ``latent_dim > 0``).
        length: sequence length L. steps: default number of sampling steps of ``generate`` (the student serves
            every K). tau: softmax temperature of the uniform relaxation (``relaxed`` only). pathwise: ``relaxed``
            only; False detaches the relaxed input (ablation). aux_every: fake updates per student update.
            weight_max: clamp of lambda(t) (masked). t_band: (lo, hi) range of the corruption time t (default: the
            process's training range; both processes and both uniform estimators; with ``time_coupling="shared"``
            t = t~ clamped into it).
        time_coupling: ``independent`` (the paper: t and the student-input time t~ independent; the loss is then
            an unbiased estimate of L_IDLM for the mixture p_theta = E_t~ p_theta^t~), ``shared`` (t = t~: each
            noise level's generator p_theta^t is judged at that same level, sum_t lambda(t) E KL between its and
            the teacher's denoising posteriors; also zero iff every p_theta^t is the data) or ``nested`` (masked
            only: the judged state is one sampler step of at most ``nested_step`` from the student's input,
            ``corrupt_nested``). See the module notes.
        nested_step: Delta of the nested coupling (in (0, 1]; 1/K tunes the student to K-step sampling).
        uniform_estimator: ``hard`` (default, as ``IDLMCfg``: hard tokens z ~ q_t(. | G), Rao-Blackwellised
            importance-weighted scores; ``uniform_rb_terms``) or ``relaxed`` (the paper's form: Gaussian relaxation,
            pathwise gradients; its argmax of a soft G does not follow q_t(. | G), so the data law is not its fixed
            point, see the module notes).
        uniform_law: ``denoiser`` (judge x ~ G) or ``kernel`` (judge x ~ ``kernel_clean_law``(G, z~, t~), the
            law the Duo sampler draws from). Uniform only.
    """

    def __init__(self, teacher: CategoricalDenoiser, student: CategoricalDenoiser, fake: CategoricalDenoiser, *,
                 length: int, steps: int = 16, tau: float = 1e-3, pathwise: bool = True, aux_every: int = 1,
                 weight_max: float = 1e3, t_band: tuple[float, float] | None = None,
                 time_coupling: TimeCoupling = "independent", uniform_estimator: UniformEstimator = "hard",
                 nested_step: float = 0.25, uniform_law: Literal["denoiser", "kernel"] = "denoiser") -> None:
        super().__init__()
        process = teacher.process
        if student.process.kind != process.kind or fake.process.kind != process.kind:
            raise ValueError("teacher, student and fake must share one discrete process")
        if fake.latent_dim:
            raise ValueError("the fake denoiser models p_theta's marginal denoiser: it takes no latent noise")
        if time_coupling not in ("independent", "shared", "nested"):
            raise ValueError(f"unknown time_coupling {time_coupling!r}; use independent, shared or nested")
        if time_coupling == "nested" and process.kind != "masked":
            raise ValueError("time_coupling='nested' is implemented for the masked process only")
        if not 0.0 < nested_step <= 1.0:
            raise ValueError(f"nested_step must lie in (0, 1], got {nested_step}")
        self.time_coupling, self.nested_step = time_coupling, float(nested_step)
        if uniform_estimator not in ("relaxed", "hard"):
            raise ValueError(f"unknown uniform_estimator {uniform_estimator!r}; use relaxed or hard")
        self.uniform_estimator = uniform_estimator
        if uniform_law not in ("denoiser", "kernel"):
            raise ValueError(f"unknown uniform_law {uniform_law!r}; use denoiser or kernel")
        if uniform_law == "kernel" and process.kind != "uniform":
            raise ValueError("uniform_law='kernel' applies to the uniform process only")
        self.uniform_law = uniform_law
        if int(aux_every) != aux_every or aux_every < 1 or tau <= 0 or steps < 1:
            raise ValueError(f"need aux_every >= 1, tau > 0, steps >= 1; got {aux_every}, {tau}, {steps}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student, self.aux = student, fake
        self.process, self.length, self.steps = process, int(length), int(steps)
        self.tau, self.pathwise, self.aux_every = float(tau), bool(pathwise), int(aux_every)
        self.weight_max = float(weight_max)
        lo, hi = t_band if t_band is not None else (process.t_min, process.t_max)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"t_band must satisfy 0 <= lo < hi <= 1, got {t_band}")
        self.t_band = (float(lo), float(hi))
        self.connection = GaussianConnection(process.vocab) if process.kind == "uniform" else None

    # ------------------------------------------------------------------------------------------ roles
    def trainable(self) -> dict[str, nn.Module]:
        return {"student": self.student, "aux": self.aux}

    def frozen(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def phases(self) -> Sequence[Phase]:
        return (Phase("aux", ("aux",)), Phase("student", ("student",), every=self.aux_every))

    # ------------------------------------------------------------------------------------ the pieces
    def generator_probs(self, student: nn.Module, x0: Tensor,
                        generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(G [B, L, N] float32 probabilities over the real tokens, t~ [B], the student's input z~ [B, L]) from
        real data x0 [B, L] noised to t~."""
        p = self.process
        t = p.sample_t(x0.shape[0], generator=generator, device=x0.device)
        z = p.add_noise(x0, t, generator=generator)
        latent = None
        dim = getattr(student, "latent_dim", 0) or getattr(getattr(student, "module", None), "latent_dim", 0)
        if dim:
            latent = rng.randn((*x0.shape, dim), generator=generator, device=x0.device, dtype=torch.float64).float()
        logp = student(z, t.float()) if latent is None else student(z, t.float(), latent=latent)
        return logp[..., :p.vocab].float().exp(), t, z

    def corruption_time(self, n: int, generator: torch.Generator, device) -> Tensor:
        """[n] stratified times in ``t_band`` (float64), randomly permuted over the batch: stratification is in
        row order, so without the permutation row i would get t ~ t~ ~ i/B (strongly correlated with the
        student's input time instead of independent; a clear bias of the loss on an exact toy, benchmarks/idlm.md)."""
        t = stratified_t(n, *self.t_band, generator=generator, device=device)
        return t[torch.randperm(n, generator=generator, device=generator.device).to(t.device)]

    def corrupt_masked(self, probs: Tensor, t: Tensor, generator: torch.Generator) -> Tensor:
        """z [B, L] (int64): x ~ Cat(probs) (float64), kept with probability alpha(t), else the mask. No grad."""
        p = self.process
        with torch.no_grad():
            u = rng.rand(probs.shape[:2], generator=generator, device=probs.device, dtype=torch.float64)
            x = inverse_cdf(probs.double(), u)
        return p.add_noise(x, t, generator=generator)

    def corrupt_nested(self, z_in: Tensor, probs: Tensor, t_in: Tensor,
                       generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(z_s [B, L], s [B] float64): one step of the teacher's sampler from the student's input z~ = ``z_in``
        at t~ = ``t_in`` with G = ``probs`` as denoiser, s ~ U(max(t~ - nested_step, t_lo), t~). No grad."""
        t = t_in.double()
        lo = torch.minimum(torch.full_like(t, self.t_band[0]), t)
        s_lo = torch.maximum(t - self.nested_step, lo)
        u = rng.rand(t.shape, generator=generator, device=t.device, dtype=torch.float64)
        s = t - u * (t - s_lo)
        with torch.no_grad():
            z_s = self.process.posterior_step(z_in, probs.detach().double().log(), t, s, generator=generator)
        return z_s, s

    def corrupt_uniform(self, probs: Tensor, t: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``relaxed``: (z_in [B, L, N] = softmax(w / tau), z_obs [B, L] = argmax w), w = a~_t G + s~_t xi (grad
        through G)."""
        xi = rng.randn(probs.shape, generator=generator, device=probs.device, dtype=torch.float64)
        return relax_uniform(self.connection, self.process, probs, t, xi, self.tau)

    def lambda_t(self, t: Tensor) -> Tensor:
        return self.process.elbo_weight(t.float()).clamp(max=self.weight_max)

    # --------------------------------------------------------------------------------------- losses
    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x0 = batch["x"]
        if x0.dtype != torch.long:
            raise ValueError(f"IDLM trains on int64 tokens, got {x0.dtype}")
        if phase not in ("aux", "student"):
            raise ValueError(f"unknown IDLM phase {phase!r}")
        if phase == "aux":
            with torch.no_grad():
                probs, t_in, z_in = self.generator_probs(nets["student"], x0, generator)
        else:
            probs, t_in, z_in = self.generator_probs(nets["student"], x0, generator)
        if self.time_coupling == "nested":
            z, t = self.corrupt_nested(z_in, probs, t_in, generator)
            return self._masked(phase, probs, z, t, nets)
        if self.time_coupling == "shared":
            lo, hi = self.t_band
            t = t_in.clamp(lo, hi)
        else:
            t = self.corruption_time(x0.shape[0], generator, x0.device)
        if self.process.kind == "masked":
            return self._masked(phase, probs, self.corrupt_masked(probs.detach(), t, generator), t, nets)
        if self.uniform_law == "kernel":
            probs = kernel_clean_law(self.process, probs, z_in, t_in)
        return self._uniform(phase, probs, t, nets, generator)

    def _masked(self, phase: str, probs: Tensor, z: Tensor, t: Tensor, nets: Mapping[str, nn.Module]) -> LossOutput:
        """Masked-process losses on the judged state z [B, L] at level t [B] (soft targets G = ``probs``)."""
        p, length = self.process, self.length
        lam = self.lambda_t(t)
        tf = t.float()
        if phase == "aux":
            fake_loss = masked_soft_ce(probs, nets["aux"](z, tf), z, lam, p.mask_id) / length
            loss = fake_loss.mean()
            return LossOutput(loss, {"fake_loss": loss.detach()})
        with torch.no_grad():
            log_t, log_f = nets["teacher"](z, tf), nets["aux"](z, tf)
        adv = masked_advantage(log_t, log_f, z, p.mask_id, p.vocab)
        gen = masked_generator_loss(probs, adv, lam) / length
        loss = gen.mean()
        masked = (z == p.mask_id)
        adv_mean = (probs.detach() * adv).sum(-1)[masked].mean() if bool(masked.any()) else torch.zeros(())
        return LossOutput(loss, {"idlm_gap": loss.detach(), "advantage": adv_mean.detach(),
                                 "student_entropy": _entropy(probs).detach()})

    def _uniform_hard(self, phase: str, probs: Tensor, t: Tensor, nets: Mapping[str, nn.Module],
                      generator: torch.Generator) -> LossOutput:
        """``uniform_estimator="hard"``: x ~ Cat(G) and z ~ q_t(. | x) as hard tokens (what the teacher was
        trained on), Rao-Blackwellised soft targets for the fake and the exact per-position score for the
        student (``uniform_rb_terms``); context dependence dropped as in the masked case."""
        p, length, tf = self.process, self.length, t.float()
        z = hard_uniform_corruption(p, probs, t, generator)
        if phase == "aux":
            h = uniform_rb_terms(p, z, probs.detach(), nets["aux"](z, tf).exp(), tf)
            loss = ((probs.detach() * h).sum((-1, -2)) / length).mean()
            return LossOutput(loss, {"fake_loss": loss.detach()})
        with torch.no_grad():
            f_t, f_f = nets["teacher"](z, tf).exp(), nets["aux"](z, tf).exp()
            delta = uniform_rb_terms(p, z, probs, f_t, tf) - uniform_rb_terms(p, z, probs, f_f, tf)
        loss = ((probs * delta).sum((-1, -2)) / length).mean()
        return LossOutput(loss, {"idlm_gap": loss.detach(), "student_entropy": _entropy(probs).detach()})

    def _uniform(self, phase: str, probs: Tensor, t: Tensor, nets: Mapping[str, nn.Module],
                 generator: torch.Generator) -> LossOutput:
        if self.uniform_estimator == "hard":
            return self._uniform_hard(phase, probs, t, nets, generator)
        p, length = self.process, self.length
        tf = t.float()
        if phase == "aux":
            z_in, z_obs = self.corrupt_uniform(probs.detach(), t, generator)
            g = p.elbo_integrand(z_obs, probs.detach(), nets["aux"](z_in.detach(), tf).exp(), tf)
            loss = (g.sum(-1) / length).mean()
            return LossOutput(loss, {"fake_loss": loss.detach()})
        xi = rng.randn(probs.shape, generator=generator, device=probs.device, dtype=torch.float64)
        gap = uniform_gap(self.connection, p, probs, t, xi, self.tau, nets["teacher"], nets["aux"],
                          pathwise=self.pathwise)
        loss = (gap / length).mean()
        return LossOutput(loss, {"idlm_gap": loss.detach(), "student_entropy": _entropy(probs).detach()})

    # -------------------------------------------------------------------------------------- sampling
    def generate(self, n: int, *, steps: int | None = None, nets: Mapping[str, nn.Module],
                 generator: torch.Generator, cond: Tensor | None = None, final: Final = "ancestral",
                 device: torch.device | str = "cpu", batch_size: int | None = 512, return_stats: bool = False,
                 **options: object):
        """``n`` samples [n, L] (int64): the teacher's ancestral sampler with the student as denoiser (options:
        ``kernel``, uniform process, default ``duo``; ``temperature``, default 1)."""
        tokens, stats = sample_token_student(nets["student"], (n, self.length), grid=uniform_grid(steps or self.steps),
                                             generator=generator, device=device, final=final, batch_size=batch_size,
                                             kernel=str(options.get("kernel", "duo")),
                                             temperature=float(options.get("temperature", 1.0)))  # type: ignore[arg-type]
        return (tokens, stats) if return_stats else tokens

    def config(self) -> dict:
        return {"process": self.process.kind, "length": self.length, "steps": self.steps, "tau": self.tau,
                "pathwise": self.pathwise, "aux_every": self.aux_every, "weight_max": self.weight_max,
                "t_band": list(self.t_band), "latent_dim": self.student.latent_dim, "time_coupling": self.time_coupling,
                "uniform_estimator": self.uniform_estimator, "nested_step": self.nested_step,
                "uniform_law": self.uniform_law}


def _entropy(probs: Tensor) -> Tensor:
    """Mean per-position entropy (nats) of [B, L, N] probabilities."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean()
