"""Moment Matching distillation (Salimans, Mensink, Heek, Hoogeboom, NeurIPS 2024, arXiv 2406.04103).

A k-step student G(z_t, t) -> x~ (a *sample*, not a mean) is trained so that along its own stochastic
sampler the conditional mean of its samples matches the frozen teacher: E_g[x~ | z_s] = T(z_s, s) for all s
(docs/methods/mm.md). Per iteration, on forward-diffused *real* data:

    s ~ U(s_min, 1), clamped to >= s_floor;  t = min(1, s + U(0, 1/k))    # random gap, not the sampler grid
                                              (gap_low > 0: U(gap_low/k, 1/k]; gap="fixed": exactly 1/k)
    z_t = alpha_t x + sigma_t eps;  x~ = G(z_t, t)                          # grad only in the student phase
    z_s = renoise(z_t, sg x~, t, s)    (posterior_step, eta = 1; float64, no grad through z_s)
    x^ = sg T(z_s, s)
    aux:     L_A = mean w(s) [||x~ - A(z_s)||^2 + lambda_reg ||x^ - A(z_s)||^2]
    student: L_G = mean w(s) <x~, sg(A(z_s) - x^)>       (only its gradient matters)

Squared norms and inner products sum over non-batch dims, then average over the batch. The auxiliary
optimum is A* = (m_g + lambda T)/(1 + lambda) with m_g(z) = E_g[x~ | z_s = z], so the student gradient is
E[w (dx~/deta)^T (m_g - T)] / (1 + lambda).

Modes:
- ``alternating``: phases ("aux", trains aux) then ("student", trains student) every iteration, 1:1. Both
  phases see the iteration's data batch with independent times and noise (the trainer draws one batch per
  iteration); each phase's estimate is unbiased on its own.
- ``instant``: one student phase and no auxiliary network (docs/methods/mm.md, helpers in ``mm_instant``). The
  batch is split into two independent halves A and B. The moment is the teacher's loss gradient on generated
  data *minus* the one on real data, m = E g_gen - E g_data (a finite teacher's E g_data is not zero: on gmm8d
  with EMA teacher weights its norm is comparable to E g_gen's, so omitting it aims the student at the wrong
  point; benchmarks/mm.md).
  Per step: g_A = grad_theta (1/B) sum w [||T_theta(z_s^A) - x~_A||^2 - ||T_theta(z_s^A') - x_A||^2]
  with z_s^A' ~ q(z_s | z_t^A, x_A) re-noised from the real x_A of the same draw (same noise), nu = -c Lambda g_A,
  delta = J_theta T_theta(z_s^B) nu, L = (1/B) sum w <x~_B, sg delta>. Lambda is the preconditioner *before*
  it sees g_A (so it is independent of g_A and E nu = -c Lambda E g_A); the first step only primes it.
  E g_data depends on the frozen teacher only, not on the student, so by default (``data_grad="running"``) the
  data term is the running mean of every batch's g_data so far (checkpointed): still unbiased at every step, with
  a variance that vanishes as training proceeds, where the per-batch term (``"batch"``) adds its full variance
  to every step (on gmm8d that made k = 1, 2 students worse than ignoring the term; benchmarks/defaults.md,
  gmm8d). ``"none"`` drops it (the paper's form, kept as an ablation).

Design decisions:
- **s = 0.** The posterior at s = 0 is a delta at x~ and T(x~, 0) = A(x~, 0) = x~, so such rows carry no
  signal, while the weight diverges. s is clamped to ``s_floor`` (default: the process's ``t_min``, 1e-4),
  which keeps every network inside its training range and the weight finite (it is also clamped at
  ``weight_max`` = 1e4). t > s is guaranteed (gap >= 1e-6).
- **Weighting** defaults to the library teacher's x-space weight (``edm``; = v-weight for VP with sigma_d = 1)
  evaluated at s; set ``weighting`` to the teacher's own training weight, or ``flat``.
- **Initialisation.** Student and aux are built by the caller, normally as ``init_from_teacher(teacher)``.
  An oracle teacher (``GMMOracle``) has no weights: first regress a net on it (``regress_on_teacher``) and
  copy that net; instant MM also needs that regressed net as its (parametric) teacher.
- **CFG.** With ``guidance = w`` every teacher call becomes T(null) + w (T(c) - T(null)), null label =
  ``num_classes``. The auxiliary and student stay conditional and unguided.
- **Optimisers.** ``MM_OPTIM`` (Adam, beta = (0, 0.99), eps = 1e-12) per role, with the Trainer's default
  ``grad_clip = 1.0`` and its NaN/Inf zeroing: ``Trainer(..., per_role_optim=method.per_role_optim(lr))``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.call import call_denoiser
from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.methods.mm_instant import (
    JVPRoute,
    Preconditioner,
    PrecondKind,
    TeacherFn,
    combine,
    guided,
    sqnorm,
    teacher_grad,
    teacher_jvp,
)
from fewstep.processes.gaussian import GaussianProcess, TimeSampling, Weighting
from fewstep.samplers.student import Renoise, renoise, sample_student, student_grid

MM_OPTIM: dict = {"optimizer": "adam", "betas": (0.0, 0.99), "eps": 1e-12}
"""Per-role optimizer overrides for MM (docs/methods/mm.md; attributed to the paper by reimplementations,
unverified). Clip-norm 1.0 and NaN/Inf zeroing come from the Trainer (``grad_clip=1.0``, its default). LR:
warm-up then linear decay (``warmup_nimg``, ``lr_decay="linear"``); toy: 3e-5 ... 1e-4."""

Mode = Literal["alternating", "instant"]
DataGrad = Literal["running", "batch", "none"]
Gap = Literal["uniform", "fixed"]
_MIN_GAP = 1e-6


@dataclass
class Draw:
    """The randomness of one MM minibatch (all float64): target times s [B], source times t [B] (s < t),
    forward-diffused real data z_t [B, ...], the re-noising noise xi [B, ...] and optional labels [B]."""

    s: Tensor
    t: Tensor
    z_t: Tensor
    xi: Tensor
    cond: Tensor | None = None
    x: Tensor | None = None
    """The real data the draw was made from [B, ...] (float64; instant MM's data-side gradient)."""


def _loss_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _sqnorm(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).pow(2).sum(1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(1)


def init_from_teacher(teacher: nn.Module) -> nn.Module:
    """A trainable deep copy of a *parametric* teacher (for the student or the auxiliary network).

    An oracle teacher has no weights: regress a net on it first (``regress_on_teacher``) and copy that net.
    """
    if next(iter(teacher.parameters()), None) is None:
        raise TypeError("the teacher has no weights (an oracle?): regress a net on it with regress_on_teacher "
                        "and initialise from that net")
    return copy.deepcopy(teacher).train().requires_grad_(True)


def regress_on_teacher(net: nn.Module, teacher: nn.Module, process: GaussianProcess,
                       sample_data: Callable[[int, torch.Generator], Tensor], *, steps: int,
                       generator: torch.Generator, batch_size: int = 512, lr: float = 1e-3,
                       weighting: Weighting = "edm", time_sampling: TimeSampling = "uniform") -> list[float]:
    """Fit ``net`` to the teacher's predictions: min E w(t) mean ||net(z_t, t) - T(z_t, t)||^2, z_t from data.

    Used to initialise MM from an oracle teacher (docs/methods/mm.md, calibration: ~10k steps).
    ``sample_data(n, generator)`` returns [n, ...] real data. Adam, in place; returns the per-step losses.
    """
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = sample_data(batch_size, generator).double()
        t = process.sample_t(batch_size, generator=generator, device=x.device, kind=time_sampling).double()
        z = process.add_noise(x, t, noise=rng.randn(x.shape, generator=generator, device=x.device,
                                                    dtype=torch.float64))
        with torch.no_grad():
            target = call_denoiser(teacher, z, t, None)
        pred = call_denoiser(net, z, t, None)
        err = (pred - target.to(pred.dtype)).pow(2).reshape(batch_size, -1).mean(1)
        loss = (process.loss_weight(t, weighting).to(err) * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


class MomentMatching(Method):
    """Moment Matching distillation of a Gaussian-diffusion teacher into a k-step student.

    Args:
        teacher: frozen denoiser T(z, t, cond=...) (a trained ``GaussianDenoiser`` or a ``GMMOracle``;
            instant mode needs a parametric ``nn.Module``).
        student: trainable G(z_t, t, cond=...) -> x~ (e.g. ``init_from_teacher(teacher)``).
        aux: trainable denoiser A (alternating mode only).
        process: the teacher's Gaussian process.
        mode: ``"alternating"`` or ``"instant"``. k: the student's number of sampling steps.
        s_min: s ~ U(s_min, 1). s_floor: lower clamp of s (default ``process.t_min``).
        gap: ``"uniform"`` t = min(1, s + U(0, 1/k)) (the paper's default), ``"fixed"`` t = min(1, s + 1/k)
            (for k = 1 always t = 1, the only time a 1-step sampler sees).
        gap_low: uniform gap only: t - s ~ U(gap_low / k, 1/k] (0: the paper's; 1 is ``"fixed"``). The largest
            gap is the one the k-step sampler takes. Measured (benchmarks/mm.md, time gap): the fixed gap is
            better on digits8x8 at k = 4, 8, worse at k = 1, 2 and on the toys; gap_low = 0.5 lies in between.
        weighting, weight_max: w(s) = ``process.loss_weight(s, weighting)`` clamped at ``weight_max``.
        lambda_reg: teacher pull of the auxiliary loss. eta: DDIM-eta of the posterior (training and
            sampling). renoise_mode: ``"posterior"`` (default) or ``"fresh"``.
        conditional: feed batch labels to all networks. num_classes: label count (null label = num_classes).
        guidance: CFG scale w of the teacher (None: no guidance).
        precond, precond_beta, precond_eps, precond_v: instant-mode Lambda (see ``mm_instant.Preconditioner``).
        c: instant step scale, nu = -c Lambda g_A. jvp: ``forward`` | ``double_backward`` | ``finite_difference``.
        data_grad: instant mode: subtract the teacher's loss gradient on real data from g_A: its running mean over
            all batches so far (``running``, default), this batch's (``batch``), or not at all (``none``).
        sigmoid_bias: b of the ``sigmoid`` weighting, 0.5 sigmoid(b - lambda) (-dlambda/dt) SNR.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, aux: nn.Module | None = None, *,
                 process: GaussianProcess, mode: Mode = "alternating", k: int = 4, s_min: float = 0.0,
                 s_floor: float | None = None, gap: Gap = "uniform", gap_low: float = 0.0,
                 weighting: Weighting = "edm", weight_max: float = 1e4, lambda_reg: float = 1.0, eta: float = 1.0,
                 renoise_mode: Renoise = "posterior", conditional: bool = False, num_classes: int | None = None,
                 guidance: float | None = None, precond: PrecondKind = "ema", precond_beta: float = 0.999,
                 precond_eps: float = 1e-8, precond_v: Mapping[str, Tensor] | None = None, c: float = 1.0,
                 jvp: JVPRoute = "forward", data_grad: DataGrad = "running", sigmoid_bias: float = 0.0) -> None:
        super().__init__()
        if mode not in ("alternating", "instant"):
            raise ValueError(f"unknown MM mode {mode!r}")
        if mode == "alternating" and aux is None:
            raise ValueError("alternating MM needs an auxiliary network (aux)")
        if int(k) != k or k < 1 or not 0.0 <= s_min < 1.0 or gap not in ("uniform", "fixed"):
            raise ValueError(f"need an integer k >= 1, 0 <= s_min < 1 and a known gap, got {k}, {s_min}, {gap}")
        if not 0.0 <= gap_low <= 1.0:
            raise ValueError(f"gap_low must lie in [0, 1], got {gap_low}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {eta}")
        if eta == 0.0 and renoise_mode == "posterior":
            warnings.warn("eta = 0 (deterministic z_s) is reported incompatible with MM", stacklevel=2)
        if guidance is not None and (not conditional or num_classes is None):
            raise ValueError("guidance needs conditional=True and num_classes (the null label)")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student, self.aux = student, (aux if mode == "alternating" else None)
        self.process, self.mode, self.k, self.s_min, self.gap = process, mode, int(k), float(s_min), gap
        self.s_floor = float(process.t_min if s_floor is None else s_floor)
        self.gap_low = float(gap_low)
        self.weighting, self.weight_max, self.lambda_reg = weighting, float(weight_max), float(lambda_reg)
        self.eta, self.renoise_mode = float(eta), renoise_mode
        self.conditional, self.num_classes, self.guidance = conditional, num_classes, guidance
        if data_grad not in ("running", "batch", "none"):
            raise ValueError(f"unknown data_grad {data_grad!r}; use running, batch or none")
        self.c, self.jvp, self.data_grad = float(c), jvp, data_grad
        self.data_mean: dict[str, Tensor] = {}
        self.data_count = 0
        self.sigmoid_bias = float(sigmoid_bias)
        self.precond = Preconditioner(precond, beta=precond_beta, eps=precond_eps, v=precond_v)

    # ------------------------------------------------------------------------------------------ roles
    def trainable(self) -> dict[str, nn.Module]:
        return {"student": self.student} if self.mode == "instant" else {"student": self.student, "aux": self.aux}

    def frozen(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def phases(self) -> Sequence[Phase]:
        if self.mode == "instant":
            return (Phase("student", ("student",)),)
        return (Phase("aux", ("aux",)), Phase("student", ("student",)))

    def per_role_optim(self, lr: float | None = None) -> dict[str, dict]:
        """``MM_OPTIM`` (plus ``lr``) for every trainable role, for ``Trainer(per_role_optim=...)``."""
        extra = {} if lr is None else {"lr": lr}
        return {role: {**MM_OPTIM, **extra} for role in self.trainable()}

    # ------------------------------------------------------------------------------------ the pieces
    def draw(self, x: Tensor, generator: torch.Generator, cond: Tensor | None = None) -> Draw:
        """Times, forward-diffused data and re-noising noise for a batch of real data x [B, ...]."""
        n, dev, f64 = x.shape[0], x.device, torch.float64
        s = self.s_min + (1.0 - self.s_min) * rng.rand((n,), generator=generator, device=dev, dtype=f64)
        s = s.clamp(self.s_floor, 1.0 - _MIN_GAP)
        if self.gap == "uniform":
            u = 1.0 - rng.rand((n,), generator=generator, device=dev, dtype=f64)  # in (0, 1]
            gap = (self.gap_low + (1.0 - self.gap_low) * u) / self.k  # in (gap_low / k, 1/k]
        else:
            gap = torch.full((n,), 1.0 / self.k, dtype=f64, device=dev)
        t = (s + gap.clamp_min(_MIN_GAP)).clamp(max=1.0)
        eps = rng.randn(x.shape, generator=generator, device=dev, dtype=f64)
        xi = rng.randn(x.shape, generator=generator, device=dev, dtype=f64)
        return Draw(s=s, t=t, z_t=self.process.add_noise(x.double(), t, noise=eps), xi=xi, cond=cond,
                    x=x.double())

    def sample_x(self, student: nn.Module, d: Draw) -> Tensor:
        """x~ = G(z_t, t, cond) (grad follows the ambient mode)."""
        return call_denoiser(student, d.z_t, d.t, d.cond)

    def renoise(self, d: Draw, x_tilde: Tensor) -> Tensor:
        """z_s from sg x~ (float64, no grad), with the draw's noise."""
        return renoise(self.process, d.z_t, x_tilde, d.t, d.s, mode=self.renoise_mode, eta=self.eta, noise=d.xi)

    def teacher_mean(self, teacher: nn.Module, z: Tensor, s: Tensor, cond: Tensor | None = None) -> Tensor:
        """sg T_w(z, s, cond): the (guided) teacher prediction, no grad."""
        with torch.no_grad():
            return guided(lambda zz, ss, cc: call_denoiser(teacher, zz, ss, cc), z, s, cond, self.guidance,
                          self.num_classes)

    def weight(self, s: Tensor) -> Tensor:
        """w(s) [B] (float64)."""
        return self.process.loss_weight(s, self.weighting, max_weight=self.weight_max,
                                        sigmoid_bias=self.sigmoid_bias).double()

    # --------------------------------------------------------------------------------------- losses
    def aux_loss(self, nets: Mapping[str, nn.Module], d: Draw) -> LossOutput:
        """mean w(s) [||x~ - A(z_s)||^2 + lambda_reg ||x^ - A(z_s)||^2] (grad to the auxiliary only)."""
        with torch.no_grad():
            x_tilde = self.sample_x(nets["student"], d)
        z_s = self.renoise(d, x_tilde)
        x_hat = self.teacher_mean(nets["teacher"], z_s, d.s, d.cond)
        a = call_denoiser(nets["aux"], z_s, d.s, d.cond)
        dt = _loss_dtype(a)
        a, w = a.to(dt), self.weight(d.s).to(dt)
        fit, pull = w * _sqnorm(x_tilde.to(dt) - a), w * _sqnorm(x_hat.to(dt) - a)
        loss = (fit + self.lambda_reg * pull).mean()
        return LossOutput(loss, {"aux_fit": fit.mean().detach(), "aux_pull": pull.mean().detach()})

    def student_loss(self, nets: Mapping[str, nn.Module], d: Draw) -> LossOutput:
        """mean w(s) <x~, sg(A(z_s) - x^)> (grad to the student only; its value is not a distance)."""
        x_tilde = self.sample_x(nets["student"], d)
        z_s = self.renoise(d, x_tilde)
        x_hat = self.teacher_mean(nets["teacher"], z_s, d.s, d.cond)
        with torch.no_grad():
            a = call_denoiser(nets["aux"], z_s, d.s, d.cond)
        dt = _loss_dtype(x_tilde)
        gap, w = (a.to(dt) - x_hat.to(dt)).detach(), self.weight(d.s).to(dt)
        loss = (w * _dot(x_tilde.to(dt), gap)).mean()
        return LossOutput(loss, {"moment_gap": (w * _sqnorm(gap)).mean()})

    def instant_loss(self, nets: Mapping[str, nn.Module], da: Draw, db: Draw) -> LossOutput:
        """(1/B) sum w <x~_B, sg delta>, delta = J_theta T(z_s^B) nu, nu = -c Lambda g_A (docs/methods/mm.md), with
        g_A = g_gen - g_data on batch A (``data_grad``; see the module notes).

        Lambda is applied before it is updated with g_A (``precond="ema"``): on the first call it has seen no
        gradient, so that call only primes it and returns a zero loss (the student does not move). The
        teacher's ``.grad`` stays None.
        """
        fn = TeacherFn(nets["teacher"], guidance=self.guidance, null_label=self.num_classes)
        with torch.no_grad():
            x_a = self.sample_x(nets["student"], da)
        w_a = self.weight(da.s)
        g_gen = teacher_grad(fn, self.renoise(da, x_a), da.s, x_a, w_a, da.cond)
        g_data = None
        if self.data_grad != "none":
            if da.x is None:
                raise ValueError("instant MM's data term needs the draw's real data (Draw.x)")
            g_data = teacher_grad(fn, self.renoise(da, da.x), da.s, da.x, w_a, da.cond)
            self.data_count += 1
            # running mean of E g_data, a constant of the frozen teacher: prev + (g - prev) / count, foreach
            if not self.data_mean:
                self.data_mean = {k: v.detach().clone() for k, v in g_data.items()}
            else:
                step = combine({k: v.detach() for k, v in g_data.items()}, self.data_mean)
                torch._foreach_div_(list(step.values()), float(self.data_count))
                torch._foreach_add_([self.data_mean[k] for k in step], list(step.values()))
        ref = g_data if self.data_grad == "batch" else self.data_mean
        g_a = g_gen if g_data is None else combine(g_gen, ref)
        primed = self.precond.ready()
        if primed:
            lam_g = self.precond.apply(g_a)
            nu = dict(zip(lam_g, torch._foreach_mul(list(lam_g.values()), -self.c)))
        self.precond.update(g_a)
        x_b = self.sample_x(nets["student"], db)
        dt = _loss_dtype(x_b)
        stats = {"g_norm": sqnorm(g_a).sqrt()}  # logged: no host sync here
        if g_data is not None:
            stats["g_data_norm"] = sqnorm(g_data).sqrt()
        if not primed:
            loss = 0.0 * x_b.to(dt).sum()
            return LossOutput(loss, {**stats, "delta_rms": torch.zeros((), dtype=torch.float64)})
        delta = teacher_jvp(fn, self.renoise(db, x_b), db.s, nu, db.cond, route=self.jvp)
        w = self.weight(db.s).to(dt)
        loss = (w * _dot(x_b.to(dt), delta.to(dt))).mean()
        return LossOutput(loss, {**stats, "delta_rms": delta.double().pow(2).mean().sqrt()})

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        cond = batch.get("label") if self.conditional else None
        if self.mode == "instant":
            if phase != "student" or x.shape[0] < 2:
                raise ValueError("instant MM has one phase 'student' and needs a batch of >= 2 (split A | B)")
            h = x.shape[0] // 2
            ca, cb = (None, None) if cond is None else (cond[:h], cond[h:])
            return self.instant_loss(nets, self.draw(x[:h], generator, ca), self.draw(x[h:], generator, cb))
        d = self.draw(x, generator, cond)
        if phase == "aux":
            return self.aux_loss(nets, d)
        if phase == "student":
            return self.student_loss(nets, d)
        raise ValueError(f"unknown MM phase {phase!r}")

    def method_state(self) -> dict:
        """Instant mode: the EMA preconditioner's second moments and count (resumes continue exactly)."""
        if self.mode != "instant":
            return {}
        return {"precond": self.precond.state_dict(), "data_mean": dict(self.data_mean),
                "data_count": self.data_count}

    def load_method_state(self, state: Mapping) -> None:
        if self.mode == "instant" and "precond" in state:
            self.precond.load_state_dict(state["precond"])
        if self.mode == "instant" and "data_mean" in state:
            self.data_mean = {k: t.detach().clone() for k, t in state["data_mean"].items()}
            self.data_count = int(state["data_count"])

    # -------------------------------------------------------------------------------------- sampling
    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, shape: tuple[int, ...] | None = None,
                 device: torch.device | str = "cpu", **options: object) -> Tensor:
        """``n`` samples [n, *shape] float64 from the student's ``steps``-step sampler (train-time eta/renoise)."""
        if shape is None:
            raise ValueError("generate needs the sample shape (without batch dim)")
        return sample_student(nets["student"], self.process, (n, *shape), grid=student_grid(steps),
                              generator=generator, device=device, cond=cond, eta=self.eta,
                              renoise_mode=self.renoise_mode)

    def config(self) -> dict:
        cfg = {"mode": self.mode, "k": self.k, "s_min": self.s_min, "s_floor": self.s_floor, "gap": self.gap,
               "gap_low": self.gap_low,
               "weighting": self.weighting, "weight_max": self.weight_max, "lambda_reg": self.lambda_reg,
               "eta": self.eta, "renoise": self.renoise_mode, "conditional": self.conditional,
               "num_classes": self.num_classes, "guidance": self.guidance, "optim": dict(MM_OPTIM)}
        if self.mode == "instant":
            cfg |= {"precond": self.precond.kind, "precond_beta": self.precond.beta,
                    "precond_eps": self.precond.eps, "c": self.c, "jvp": self.jvp, "data_grad": self.data_grad}
        if self.weighting == "sigmoid":
            cfg["sigmoid_bias"] = self.sigmoid_bias
        return cfg
