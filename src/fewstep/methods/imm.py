"""Inductive Moment Matching (Zhou, Ermon, Song, ICML 2025, arXiv 2503.07565): few-step generation trained from
scratch, no teacher (docs/methods/imm.md, with its calibration notes). Re-implemented from the paper.

Per iteration, the batch of B real samples is split into B/M groups of M particles; a group shares (s, r, t):

    t ~ U(t_min, T), s ~ U(t_min, t)
    r = max(s, eta^-1(max(eta_min, eta(t) - (eta_max - eta_min) / 2^k)))      (eta = sigma / alpha; clamped)
    x_t = alpha_t x + sigma_t sigma_d eps,  x_r = alpha_r x + sigma_r sigma_d eps   (same x, eps per particle)
    y_t = f^theta_{s,t}(x_t)            (with grad)
    y_r = f^theta-_{s,r}(x_r)           (no grad; theta- = the current weights, not an EMA)
    loss = mean over groups of  w(s, t) MMD^2_group(y_t, y_r)

with MMD^2 = M^-2 sum_{j,k} [k(y_t^j, y_t^k) + k(y_r^j, y_r^k) - 2 k(y_t^j, y_r^k)] (the paper's estimator: the
diagonal j = k is kept in all three sums; dropping the cross diagonal was measured harmful: benchmarks/imm.md,
steps diagnosis and ablations), the kernel

    laplace: exp(-w~ max(||a - b||, 1e-8) / D)   rbf: exp(-w~^2 ||a - b||^2 / D)   sqdist: -w~^2 ||a - b||^2 / D
    energy: -w~ ||a - b|| / D  (the distance kernel: MMD^2 = energy distance, the D -> inf limit of laplace)

with w~ = 1 / |c_out(s, t)| and D = ``dim_divisor`` (default: elements per sample), computed in float32, and

    w(s, t) = 1/2 sigmoid(b - lambda_t) (-d lambda / dt) alpha_t^a / (alpha_t^2 + sigma_t^2).

Times and coefficients are float64. The weight is evaluated with t clamped into [1e-6, 1 - 1e-6] (it is 0 * inf at
t = 0). With ``min_gap`` > 0, r = max(s, min(t - min_gap, r_eta)) keeps t - r resolvable (the paper's fp16 fix).

Samplers (``samplers.imm``): pushforward and restart on the paper's grids; ``generate`` uses them.

Class-conditional IMM: with ``label_dropout`` = p each particle's label is replaced by the null label
``num_classes`` with probability p (the same label in y_t and y_r), which trains the unconditional map. Sampling
with ``guidance`` = w then guides the *network output* (the paper's choice): f = c_skip x + c_out G_w with
G_w = G(null) + w (G(c) - G(null)) (``IMMMap.guided``); refused for a map trained without label dropout.

Why these defaults (measured: benchmarks/imm.md, "Why quality changed with steps"): the V-statistic's expectation
is (M-1)/M MMD^2 + (2/M) E[k(y,y) - k(y_t^j, y_r^j)], a population MMD plus a *paired* consistency term between
particles sharing (x, eps).
The paired term carries most of the training signal (the unbiased ``estimator="u"`` fails) but pulls f_{s,t}(x_t)
towards a point estimate of the random target f_{s,r}(x_r), a contraction whose bias grows with the gap t - r:
k = 8 (large gaps) gave under-dispersed samples, k = 12 fixes most of it. Chained pushforward steps compound the
maps' errors on 2-D toys; the restart sampler does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.imm import IMMMap, map_coefficients
from fewstep.methods.base import Batch, LossOutput, Method, Phase
from fewstep.methods.diffusion import check_label_dropout, drop_labels
from fewstep.processes.base import bcast

Kernel = Literal["laplace", "rbf", "energy", "sqdist"]
KERNELS = ("laplace", "rbf", "energy", "sqdist")
Estimator = Literal["v", "u"]
IMM_SAMPLERS = ("pushforward", "restart")


def r_of(s: Tensor, t: Tensor, schedule, *, k: int, eta_max: float = 160.0, eta_min: float = 0.0,
         min_gap: float = 0.0) -> Tensor:
    """r(s, t) = max(s, eta^-1(max(eta_min, eta(t) - (eta_max - eta_min) / 2^k))) in float64 [B]; s <= r <= t.

    The inner clamp keeps eta^-1 inside its domain (without it, flow with k <= 7 gives r > t). With
    ``min_gap`` > 0: r = max(s, min(t - min_gap, r_eta)).
    """
    s, t = s.double(), t.double()
    eta_t = schedule.eta(t)
    u = (eta_t - (eta_max - eta_min) / 2.0**k).clamp_min(eta_min)
    r = schedule.t_from_eta(u)
    r = torch.minimum(r, t)  # eta^-1(eta(t)) can round above t
    if min_gap > 0:
        r = torch.minimum(r, t - min_gap)
    return torch.maximum(s, r)


def imm_weight(schedule, t: Tensor, *, a: float = 1.0, b: float = 5.0) -> Tensor:
    """w(s, t) = 1/2 sigmoid(b - lambda_t) (-d lambda/dt) alpha_t^a / (alpha_t^2 + sigma_t^2) [B] float64."""
    t = t.double().clamp(1e-6, 1.0 - 1e-6)
    o = schedule(t)
    return (0.5 * torch.sigmoid(b - schedule.logsnr(t)) * (-schedule.dlogsnr_dt(t))
            * o.alpha**a / (o.alpha**2 + o.sigma**2))


def group_mmd2(y_t: Tensor, y_r: Tensor, w_tilde: Tensor, *, kernel: Kernel = "laplace",
               dim_divisor: float | None = None, estimator: Estimator = "v") -> Tensor:
    """MMD^2 per group [G] of particles y_t, y_r [G, M, ...] with per-group kernel scale w_tilde [G] (float32).

    ``estimator="v"``: the paper's V-statistic, every (j, k) pair, diagonals included; ``"u"``: the unbiased
    U-statistic, j != k in all three sums (needs M >= 2).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if estimator not in ("v", "u"):
        raise ValueError(f"unknown MMD estimator {estimator!r}; choose 'v' or 'u'")
    g, m = y_t.shape[:2]
    if estimator == "u" and m < 2:
        raise ValueError("the U-statistic needs at least two particles per group (group_size >= 2)")
    a, b = y_t.reshape(g, m, -1).float(), y_r.reshape(g, m, -1).float()
    d = float(a.shape[-1] if dim_divisor is None else dim_divisor)
    w = w_tilde.float()[:, None, None]

    def k(u: Tensor, v: Tensor) -> Tensor:
        diff = u[:, :, None, :] - v[:, None, :, :]
        if kernel == "laplace":
            dist = diff.pow(2).sum(-1).clamp_min(1e-16).sqrt()  # = max(||.||, 1e-8), finite gradient at 0
            return torch.exp(-w * dist / d)
        if kernel == "energy":
            return -w * diff.pow(2).sum(-1).clamp_min(1e-16).sqrt() / d
        sq = diff.pow(2).sum(-1)
        return torch.exp(-(w**2) * sq / d) if kernel == "rbf" else -(w**2) * sq / d

    terms = k(a, a) + k(b, b) - 2.0 * k(a, b)  # [G, M, M]
    if estimator == "v":
        return terms.mean(dim=(1, 2))
    off = ~torch.eye(m, dtype=torch.bool, device=terms.device)
    return terms[:, off].mean(dim=1)


class InductiveMomentMatching(Method):
    """IMM training of a two-time map ``IMMMap`` from data (no teacher).

    Args:
        fmap: the map f_{s,t} (``IMMMap`` around a two-time backbone); trained as role ``model``.
        group_size: M particles per group (the batch must be a multiple). k: the r(s, t) mapping parameter.
        k_end: if set, k moves linearly from ``k`` to ``k_end`` over training (a curriculum: coarse induction
            steps early, small t - r gaps, hence a smaller paired-term bias, late).
        t_min, t_max: t ~ U(t_min, T) (the paper: 0.006 for pixels / 0 for latents; T = 0.994 flow, 0.996 cosine).
        eta_max, eta_min, min_gap: see ``r_of``. kernel, dim_divisor, estimator: see ``group_mmd2``.
        bandwidth_floor: w~ = 1 / max(|c_out(s, t)|, bandwidth_floor * sigma_d) (0: the paper's 1 / |c_out|).
        weight_a, weight_b: a and b of w(s, t). conditional: feed batch labels to the backbone.
        num_classes: label count of a conditional backbone (label ``num_classes`` is the null label).
        label_dropout: probability of training a particle on the null label (drawn after eps; 0: no draw).
        sampler, two_step: defaults of ``generate`` (``pushforward`` | ``restart``; 2-step middle point
            ``eta`` = 1.4 or ``uniform``).
    """

    def __init__(self, fmap: IMMMap, *, group_size: int = 4, k: int = 12, t_min: float = 0.0,
                 t_max: float | None = None, eta_max: float = 160.0, eta_min: float = 0.0, min_gap: float = 0.0,
                 k_end: int | None = None, kernel: Kernel = "laplace", dim_divisor: float | None = None,
                 bandwidth_floor: float = 0.0,
                 estimator: Estimator = "v", weight_a: float = 1.0, weight_b: float = 5.0,
                 conditional: bool = False, sampler: str = "pushforward", two_step: str = "eta",
                 num_classes: int | None = None, label_dropout: float = 0.0) -> None:
        super().__init__()
        sched = fmap.schedule
        t_max = (0.994 if sched.name == "flow" else 0.996) if t_max is None else float(t_max)
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
        if fmap.param == "identity" and t_min <= 0:
            raise ValueError("the identity parametrisation needs t_min > 0")
        if int(group_size) != group_size or group_size < 1 or k < 0 or kernel not in KERNELS:
            raise ValueError(f"need group_size >= 1, k >= 0 and a known kernel, got {group_size}, {k}, {kernel}")
        if estimator not in ("v", "u") or (estimator == "u" and group_size < 2):
            raise ValueError(f"estimator must be 'v' or 'u' (u needs group_size >= 2), got {estimator!r}")
        if k_end is not None and k_end < 0:
            raise ValueError(f"k_end must be >= 0, got {k_end}")
        self.fmap, self.group_size, self.k = fmap, int(group_size), int(k)
        self.k_start, self.k_end = int(k), None if k_end is None else int(k_end)
        self.t_min, self.t_max, self.eta_max, self.eta_min = float(t_min), t_max, float(eta_max), float(eta_min)
        self.min_gap, self.kernel, self.dim_divisor, self.estimator = float(min_gap), kernel, dim_divisor, estimator
        if bandwidth_floor < 0:
            raise ValueError(f"bandwidth_floor must be >= 0, got {bandwidth_floor}")
        self.bandwidth_floor = float(bandwidth_floor)
        self.weight_a, self.weight_b, self.conditional = float(weight_a), float(weight_b), conditional
        if sampler not in IMM_SAMPLERS or two_step not in ("eta", "uniform"):
            raise ValueError(f"unknown IMM sampler {sampler!r} or two-step grid {two_step!r}")
        self.sampler, self.two_step = sampler, two_step
        self.num_classes = num_classes
        self.label_dropout = check_label_dropout(label_dropout, conditional, num_classes)

    @property
    def schedule(self):
        return self.fmap.schedule

    def set_progress(self, nimg: int, total_nimg: int) -> None:
        """The k curriculum: k goes linearly from ``k`` to ``k_end`` over training (rounded; off if k_end is None)."""
        if self.k_end is not None:
            frac = min(max(nimg / max(total_nimg, 1), 0.0), 1.0)
            self.k = round(self.k_start + (self.k_end - self.k_start) * frac)

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.fmap}

    def phases(self) -> Sequence[Phase]:
        return (Phase("main", ("model",)),)

    def draw_times(self, groups: int, generator: torch.Generator, device: torch.device | str) -> tuple[Tensor, ...]:
        """(s, r, t) [groups] float64 of one batch (t ~ U(t_min, T), s ~ U(t_min, t), r = r_of(s, t))."""
        f64 = torch.float64
        t = self.t_min + (self.t_max - self.t_min) * rng.rand((groups,), generator=generator, device=device, dtype=f64)
        s = self.t_min + (t - self.t_min) * rng.rand((groups,), generator=generator, device=device, dtype=f64)
        r = r_of(s, t, self.schedule, k=self.k, eta_max=self.eta_max, eta_min=self.eta_min, min_gap=self.min_gap)
        return s, r, t

    def interpolate(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """alpha_t x + sigma_t sigma_d eps (float64) for x, eps [B, ...], t [B]."""
        o = self.schedule(t.double())
        return bcast(o.alpha, x) * x.double() + bcast(o.sigma * self.fmap.sigma_d, x) * eps.double()

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        n, m = x.shape[0], self.group_size
        if n % m:
            raise ValueError(f"the batch ({n}) must be a multiple of the group size M = {m}")
        cond = batch.get("label") if self.conditional else None
        g = n // m
        s, r, t = self.draw_times(g, generator, x.device)
        sp, rp, tp = (v.repeat_interleave(m) for v in (s, r, t))  # per particle; groups are contiguous
        eps = rng.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        if cond is not None and self.label_dropout > 0:
            cond = drop_labels(cond, self.label_dropout, int(self.num_classes), generator)
        x_t, x_r = self.interpolate(x, eps, tp), self.interpolate(x, eps, rp)
        fmap = nets["model"]
        y_t = fmap(x_t, sp, tp, cond)
        with torch.no_grad():
            y_r = fmap(x_r, sp, rp, cond)
        _, c_out = map_coefficients(self.fmap.param, self.schedule, s, t, self.fmap.sigma_d)
        w_tilde = 1.0 / c_out.abs().clamp_min(max(self.bandwidth_floor * self.fmap.sigma_d, 1e-12))
        mmd2 = group_mmd2(y_t.reshape(g, m, *x.shape[1:]), y_r.reshape(g, m, *x.shape[1:]), w_tilde,
                          kernel=self.kernel, dim_divisor=self.dim_divisor, estimator=self.estimator)
        w = imm_weight(self.schedule, t, a=self.weight_a, b=self.weight_b).float()
        loss = (w * mmd2).mean()
        return LossOutput(loss, {"mmd2": mmd2.detach().mean(), "gap_t_r": (t - r).mean().float()})

    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, shape: tuple[int, ...] | None = None,
                 device: torch.device | str = "cpu", sampler: str | None = None, guidance: float | None = None,
                 **options: object) -> Tensor:
        """``n`` samples [n, *shape] float64 with ``sampler`` (``IMM_SAMPLERS``; default: the method's)
        in ``steps`` steps on the paper's grid (``grid="edm"``: an EDM rho = 7 grid in eta).

        ``guidance`` = w: classifier-free guidance of the network output, G(null) + w (G(c) - G(null)), for the
        labels ``cond`` [n] (needs a class-conditional map trained with label dropout; one doubled batch per
        step)."""
        from fewstep.samplers.imm import imm_grid, sample_imm

        if shape is None:
            raise ValueError("generate needs the sample shape (without batch dim)")
        if guidance is not None:
            self.check_guidance()
            if cond is None:
                raise ValueError("IMM guidance needs class labels (cond)")
        kind = "edm" if options.get("grid") == "edm" else "uniform"
        grid = imm_grid(steps, self.schedule, t_max=self.t_max, t_min=self.t_min, two_step=self.two_step,
                        kind=kind)
        return sample_imm(nets["model"], (n, *shape), grid=grid, generator=generator, device=device, cond=cond,
                          sampler=sampler or self.sampler, guidance=guidance, null_label=self.num_classes)

    def check_guidance(self) -> None:
        """Raise (one line) unless this map can be guided: class-conditional and trained with label dropout."""
        if not self.conditional or not self.num_classes:
            raise ValueError("IMM guidance needs a class-conditional model (net.num_classes > 0)")
        if self.label_dropout <= 0:
            raise ValueError("IMM guidance needs a model trained with label dropout (its null label is untrained): "
                             "retrain it with --method.label-dropout 0.1")

    def config(self) -> dict:
        return {"param": self.fmap.param, "second_time": self.fmap.second_time, "sigma_d": self.fmap.sigma_d,
                "group_size": self.group_size, "k": self.k_start, "k_end": self.k_end, "t_min": self.t_min,
                "t_max": self.t_max, "eta_max": self.eta_max, "eta_min": self.eta_min, "min_gap": self.min_gap,
                "kernel": self.kernel, "dim_divisor": self.dim_divisor, "bandwidth_floor": self.bandwidth_floor,
                "estimator": self.estimator, "weight_a": self.weight_a, "weight_b": self.weight_b,
                "sampler": self.sampler, "two_step": self.two_step, "label_dropout": self.label_dropout}
