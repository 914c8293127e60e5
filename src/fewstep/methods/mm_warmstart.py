"""Teacher-ODE warm start of a Moment Matching student: the remedy for the k = 1 (and k = 2) saddle.

The problem (docs/methods/mm.md). At t = 1 (alpha = 0) a teacher outputs the constant E[x]; a student
copied from it ignores its noise input, and since z_s = alpha_s x~ + sigma_s xi is then independent of z_1, the
expected MM gradient on the student's noise dependence is exactly zero for any parametrisation. A student
initialised from the teacher starts on that saddle (also the first step of k = 2); re-parametrising cannot
help, the symmetry has to be broken by the initialisation. How long MM stays there depends on how much
numerical error breaks the symmetry: a 1-D two-mode toy stays collapsed (tests/test_mm_warmstart.py), while on
gmm8d a net regressed on the oracle (whose t = 1 output is not exactly constant) escaped quickly, even with the
fixed gap (t = 1 only), and its t = 1 output flattened further (benchmarks/mm.md).

The remedy. Before MM, regress the student onto the teacher's own deterministic DDIM endpoint from the same
z_t (a knowledge-distillation init, Luhman & Luhman 2021):

    t ~ times(k);  z_t = alpha_t x + sigma_t eps (x real data; at t = 1 pure noise)
    y = DDIM_teacher(z_t: t -> 0, ``teacher_steps`` uniform steps)        # float64, no grad
    L = mean ||G(z_t, t) - y||^2

The DDIM map pushes the teacher's marginal at t onto its data distribution, so the warm-started student is
already a deterministic sampler that covers every mode; MM then runs unchanged and its fixed point is unchanged
(only the initialisation differs). ``times``:

- ``grid``: the k-step sampler's times 1, 1 - 1/k, ..., 1/k. With k <= 2 the warm-started sampler with
  posterior re-noising is consistent (at t = 1 the posterior is N(alpha_s x~, sigma_s^2), the right marginal
  when x~ is); for k >= 3 a deterministic x~ given z_t under-disperses the posterior.
- ``uniform``: t ~ U(0, 1]: the flow map at every t that MM's random-gap training rows use.
- ``mixed`` (default): each row from either with probability 1/2. On gmm8d (oracle teacher, short MM runs)
  ``mixed`` was best at k = 1 and k = 2, and ``grid`` alone did not beat no warm start (benchmarks/mm.md;
  benchmarks/scripts/mm_k1_experiment.py). With ``grid`` alone the student is only moved at the grid times and
  MM degrades it most.

Targets come from a pool of ``pool`` pairs computed once (``teacher_steps`` batched teacher calls per ``chunk``
rows) and reused in random minibatches; ``pool=None`` draws fresh pairs every step (``teacher_steps`` teacher
calls per step). All randomness comes from the explicit generator. ``auto_warm_start_steps`` applies it to
k <= 2 only, where the saddle is; the distillation default (``fewstep.policy``) also applies it up to k = 4 for
instant MM and image data, where it was measured to help (benchmarks/mm.md, warm start beyond k = 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.call import call_denoiser
from fewstep.methods.mm_instant import guided
from fewstep.processes.gaussian import GaussianProcess

WarmTimes = Literal["mixed", "grid", "uniform"]
WARM_TIMES = ("mixed", "grid", "uniform")
AUTO_WARM_START_STEPS = 500
"""Warm-start steps of the ``auto`` setting for k <= 2 (0 for k >= 3: MM from the teacher copy works there)."""

DataFn = Callable[[int, torch.Generator], "Tensor | tuple[Tensor, Tensor | None]"]


def auto_warm_start_steps(k: int) -> int:
    """The default number of warm-start steps for a k-step student: ``AUTO_WARM_START_STEPS`` for k <= 2, else 0."""
    return AUTO_WARM_START_STEPS if k <= 2 else 0


def ddim_endpoint(teacher: nn.Module, process: GaussianProcess, z_t: Tensor, t: Tensor, *, steps: int,
                  cond: Tensor | None = None, guidance: float | None = None,
                  num_classes: int | None = None) -> Tensor:
    """The teacher's deterministic DDIM endpoint from z_t at per-row times t [B] down to 0.

    Row i runs ``steps`` uniform steps t_i (1 - j/steps), j = 0..steps (one teacher call per step on the whole
    batch). With ``guidance`` the teacher is the CFG-guided T_w (null label ``num_classes``). Returns float64
    [B, ...], no grad.
    """
    if steps < 1:
        raise ValueError(f"teacher_steps must be >= 1, got {steps}")
    z, t = z_t.detach().double(), t.detach().double()
    with torch.no_grad():
        for j in range(steps):
            tj, sj = t * (1.0 - j / steps), t * (1.0 - (j + 1) / steps)
            x0 = guided(lambda zz, ss, cc: call_denoiser(teacher, zz, ss, cc), z, tj, cond, guidance,
                        num_classes).double()
            if j == steps - 1:
                return x0
            z = process.posterior_step(z, x0, tj, sj, eta=0.0)
    raise AssertionError("unreachable")


def warm_start_times(k: int, n: int, *, generator: torch.Generator, times: WarmTimes = "mixed",
                     t_min: float = 1e-4, device: torch.device | str = "cpu") -> Tensor:
    """n float64 times: uniform over the k-step grid {1, 1 - 1/k, ..., 1/k} (``grid``), U(t_min, 1]
    (``uniform``), or each row either with probability 1/2 (``mixed``)."""
    if times not in WARM_TIMES:
        raise ValueError(f"unknown warm-start times {times!r}; choose one of {WARM_TIMES}")
    grid = 1.0 - torch.randint(0, k, (n,), generator=generator).double() / k
    u = rng.rand((n,), generator=generator, device="cpu", dtype=torch.float64)
    cont = t_min + (1.0 - t_min) * (1.0 - u)  # in (t_min, 1]
    if times == "mixed":
        pick = rng.rand((n,), generator=generator, device="cpu", dtype=torch.float64) < 0.5
        return torch.where(pick, grid, cont).to(device)
    return (grid if times == "grid" else cont).to(device)


def _split(out) -> tuple[Tensor, Tensor | None]:
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


def warm_start_pairs(teacher: nn.Module, process: GaussianProcess, sample_data: DataFn, n: int, *, k: int,
                     teacher_steps: int, generator: torch.Generator, times: WarmTimes = "mixed",
                     chunk: int = 4096, guidance: float | None = None,
                     num_classes: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """n regression pairs (z_t, t, DDIM target, labels or None), computed in chunks of ``chunk`` rows (float64)."""
    zs, ts, ys, cs = [], [], [], []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x, c = _split(sample_data(m, generator))
        x = x.double()
        t = warm_start_times(k, m, generator=generator, times=times, t_min=process.t_min, device=x.device)
        z = process.add_noise(x, t, noise=rng.randn(x.shape, generator=generator, device=x.device,
                                                    dtype=torch.float64))
        y = ddim_endpoint(teacher, process, z, t, steps=teacher_steps, cond=c, guidance=guidance,
                          num_classes=num_classes)
        zs.append(z), ts.append(t), ys.append(y), cs.append(c)
    cond = None if cs[0] is None else torch.cat(cs)
    return torch.cat(zs), torch.cat(ts), torch.cat(ys), cond


def warm_start_student(student: nn.Module, teacher: nn.Module, process: GaussianProcess, sample_data: DataFn, *,
                       k: int, steps: int, generator: torch.Generator, batch: int = 512, teacher_steps: int = 32,
                       lr: float = 3e-4, times: WarmTimes = "mixed", pool: int | None = 16384,
                       guidance: float | None = None, num_classes: int | None = None) -> list[float]:
    """Regress ``student`` in place onto the teacher's DDIM endpoints at its sampling times; returns the losses.

    Args:
        student: G(z_t, t, cond=...) (a teacher copy, trained in place with Adam(lr)).
        teacher: frozen denoiser T(z, t, cond=...) (a net or the exact ``GMMOracle``).
        process: the teacher's Gaussian process.
        sample_data: ``(n, generator) -> x [n, ...]`` real data, or ``(x, labels)`` for a conditional student.
        k: the student's step count (its grid times). steps: Adam steps (0: no-op, returns []).
        generator: all randomness (data, times, noise, minibatch order).
        batch: minibatch size. teacher_steps: DDIM steps of the target. lr: Adam learning rate.
        times: ``grid`` (the k-step sampler's times) or ``uniform`` (t ~ U(0, 1]).
        pool: pairs computed once and reused (None: fresh pairs every step).
        guidance, num_classes: CFG of the teacher, as in MM.
    Returns:
        per-step losses (mean squared error per element).
    """
    if int(k) != k or k < 1 or steps < 0 or batch < 1 or (pool is not None and pool < 1):
        raise ValueError(f"need k >= 1, steps >= 0, batch >= 1 and pool >= 1 or None; got {k}, {steps}, "
                         f"{batch}, {pool}")
    if steps == 0:
        return []
    teacher = teacher.eval()
    student.train().requires_grad_(True)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    make = lambda n: warm_start_pairs(teacher, process, sample_data, n, k=k, teacher_steps=teacher_steps,  # noqa: E731
                                      generator=generator, times=times, guidance=guidance,
                                      num_classes=num_classes)
    data = make(pool) if pool is not None else None
    losses = []
    for _ in range(steps):
        if data is not None:
            idx = torch.randint(0, data[0].shape[0], (batch,), generator=generator)
            z, t, y, c = (None if v is None else v[idx] for v in data)
        else:
            z, t, y, c = make(batch)
        pred = call_denoiser(student, z, t, c)
        loss = (pred - y.to(pred.dtype)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
