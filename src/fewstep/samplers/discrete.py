"""Discrete samplers: ``fn(denoiser, (n, L), *, grid, generator, ...) -> (tokens, stats)``, pure functions with
the contract of ``fewstep.samplers`` (the denoiser carries its process, ``denoiser.process``; ``cond`` must be None).

Masked ancestral sampling (MDLM): start all-mask; per step t -> s every masked position is revealed with
probability (alpha_s - alpha_t)/(1 - alpha_t) and takes a token from Cat(x_theta(z_t, t)); at s = 0 every mask
is revealed. Which positions a step reveals never depends on the network, so the sampler draws the whole reveal
schedule first (the random stream consumed exactly as a step-by-step loop would) and then evaluates x_theta only
where it is read: once before each step that reveals something in a row, all rows' j-th evaluations in one
network call with per-row times (at most L calls, NFE <= L per sample; exact for every denoiser, tokens
bit-identical to the step-by-step loop, ``cache=False``). Stats report the network calls and the row evaluations
actually spent.

Uniform ancestral sampling (Duo): start from uniform tokens; each step draws z_s from the reverse kernel with
x_hat = x_theta(z_t, t). ``final="greedy"`` ("greedy-tail") replaces the last step by argmax x_theta.

All kernels are built and all categorical draws made in float64 (``dtype_categorical``); float32 is refused
unless ``allow_low_precision`` (it exists to measure the artefact).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.processes.categorical import inverse_cdf

Final = Literal["ancestral", "greedy", "none"]
Kernel = Literal["duo", "sample-x"]


def check_grid(grid: Tensor) -> Tensor:
    """A float64 grid t_0 = 1 > ... > t_K (>= 0); raises on anything else."""
    grid = grid.double()
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError("grid must be a 1-D tensor of K + 1 >= 2 times")
    if not bool((grid[1:] < grid[:-1]).all()) or float(grid[-1]) < 0 or float(grid[0]) > 1:
        raise ValueError("grid must decrease strictly from t_0 <= 1 to t_K >= 0")
    return grid


def _token_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(n, length) of a token shape; raises unless it is two positive integers."""
    shape = tuple(shape)
    if len(shape) != 2 or any(int(d) != d or d < 1 for d in shape):
        raise ValueError(f"a token shape is (n, length) with two positive integers, got {shape}")
    return int(shape[0]), int(shape[1])


def _check_options(grid: Tensor, final: str, dtype: torch.dtype, allow_low_precision: bool,
                   cond: Tensor | None) -> Tensor:
    if cond is not None:
        raise ValueError("the categorical samplers are unconditional: cond must be None")
    if dtype != torch.float64 and not allow_low_precision:
        raise ValueError(f"categorical draws are made in float64; pass allow_low_precision=True to use {dtype}")
    if final not in ("ancestral", "greedy", "none"):
        raise ValueError(f"unknown final {final!r}; use ancestral, greedy or none")
    return check_grid(grid)


def _draw_tokens(logp: Tensor, u: Tensor, dtype: torch.dtype) -> Tensor:
    return inverse_cdf(logp.to(dtype).exp(), u)


@torch.no_grad()
def sample_masked(denoiser: nn.Module, shape: tuple[int, int], *, grid: Tensor, generator: torch.Generator,
                  device: torch.device | str = "cpu", cond: Tensor | None = None, final: Final = "ancestral",
                  cache: bool | None = None, force_cache: bool = False,
                  dtype_categorical: torch.dtype = torch.float64, allow_low_precision: bool = False,
                  batch_size: int | None = None) -> tuple[Tensor, dict]:
    """n masked-diffusion samples [n, length] (int64, CPU) and stats.

    Args:
        denoiser: ``CategoricalDenoiser`` with a ``MaskedProcess`` (``denoiser.process``).
        shape: (n, length).
        grid: [K + 1] float64 times from 1 down (a grid ending at 0 reveals everything with ``ancestral``).
        final: ``ancestral`` (default), ``greedy`` (masks left before the last step take argmax x_theta;
            lowers entropy), ``none`` (the grid as is; masks may remain).
        cache: None or True: evaluate x_theta only where it is used (:func:`_sample_masked_planned`, exact for
            every denoiser); False: the step-by-step loop that evaluates every row with masks at every step
            (the reference). ``force_cache`` is accepted for compatibility and has no effect.
        batch_size: rows per network call (default all n).

    Returns:
        (tokens [n, length], stats): stats has ``steps`` (K), ``steps_with_call`` (network calls over the batch),
        ``row_evals``, ``nfe`` (= row_evals / n, the evaluations actually spent per sample), ``final``, ``cache``.
    """
    process = denoiser.process
    if process.kind != "masked":
        raise ValueError("sample_masked needs a denoiser of a MaskedProcess")
    n, length = _token_shape(shape)
    grid = _check_options(grid, final, dtype_categorical, allow_low_precision, cond)
    del force_cache
    plan = _reveal_plan(process, (n, length), grid, generator, device, final, dtype_categorical)
    if cache is None or cache:
        z, calls, row_evals = _sample_masked_planned(denoiser, plan, grid, final, batch_size or n)
    else:
        z, calls, row_evals = _sample_masked_stepwise(denoiser, plan, grid, final, batch_size or n)
    stats = {"steps": grid.numel() - 1, "steps_with_call": calls, "row_evals": row_evals, "nfe": row_evals / n,
             "final": final, "cache": cache is None or bool(cache), "masks_left": int((z == process.mask_id).sum())}
    return z.cpu(), stats


def _reveal_plan(process, shape: tuple[int, int], grid: Tensor, generator: torch.Generator,
                 device: torch.device | str, final: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """When each position is revealed and the uniform its token is drawn with: (step [n, L] int64, K = never;
    v [n, L]). Which positions a step reveals never depends on the network (each masked position is revealed with
    probability (alpha_s - alpha_t)/(1 - alpha_t)), so the whole schedule is drawn first, consuming the random
    stream exactly as the step-by-step sampler does (per step: the reveal uniforms, then the token uniforms)."""
    k = grid.numel() - 1
    step = torch.full(shape, k, dtype=torch.long, device=device)
    v_at = torch.zeros(shape, dtype=dtype, device=device)
    masked = torch.ones(shape, dtype=torch.bool, device=device)
    for i in range(k):
        p = float(process.unmask_prob(grid[i].reshape(1), grid[i + 1].reshape(1)))
        u = rng.rand(shape, generator=generator, device=device, dtype=torch.float64)
        v = rng.rand(shape, generator=generator, device=device, dtype=dtype)
        reveal = masked if i == k - 1 and final == "greedy" else masked & (u < p)
        step = torch.where(reveal, i, step)
        v_at = torch.where(reveal, v, v_at)
        masked &= ~reveal
    return step, v_at


def _reveal(z: Tensor, logp: Tensor, where: Tensor, v: Tensor, greedy: Tensor | None, dtype: torch.dtype) -> None:
    """Fill z[where] (in place) with tokens drawn from logp[where] with uniforms v[where] (argmax where ``greedy``)."""
    if greedy is not None and bool(greedy.any()):
        z[greedy] = logp[greedy].argmax(-1)
        where = where & ~greedy
    if bool(where.any()):
        z[where] = _draw_tokens(logp[where], v[where], dtype)


def _sample_masked_planned(denoiser: nn.Module, plan: tuple[Tensor, Tensor], grid: Tensor, final: str,
                           bs: int) -> tuple[Tensor, int, int]:
    """Tokens from a reveal plan with x_theta evaluated only where it is used: before each step that reveals
    something in a row, on the row's state then. Every row's j-th evaluation shares one network call (at most
    L calls, each with the rows that still have reveals ahead), with the per-row time of that step. The tokens
    equal the step-by-step sampler's for every denoiser, time-conditioned or not: between two reveals a row's
    state does not change, and x_theta is only read at a reveal step. Returns (z, calls, row evaluations)."""
    step, v_at = plan
    n, length = step.shape
    k = grid.numel() - 1
    z = torch.full((n, length), denoiser.process.mask_id, dtype=torch.long, device=step.device)
    times = grid.to(step.device, torch.float32)
    pending = step.clone()  # reveal step of each still-masked position, K once done or never
    calls = row_evals = 0
    while True:
        cur = pending.min(1).values
        rows = (cur < k).nonzero().squeeze(1)
        if rows.numel() == 0:
            return z, calls, row_evals
        cur_r = cur[rows]
        zr = z[rows]
        tt = times[cur_r]
        logp = torch.cat([denoiser(zr[j:j + bs], tt[j:j + bs]).float() for j in range(0, rows.numel(), bs)])
        calls += 1
        row_evals += rows.numel()
        now = pending[rows] == cur_r.unsqueeze(1)
        greedy = now & (cur_r == k - 1).unsqueeze(1) if final == "greedy" else None
        _reveal(zr, logp, now, v_at[rows], greedy, v_at.dtype)
        z[rows] = zr
        pending[rows] = torch.where(now, k, pending[rows])


def _sample_masked_stepwise(denoiser: nn.Module, plan: tuple[Tensor, Tensor], grid: Tensor, final: str,
                            bs: int) -> tuple[Tensor, int, int]:
    """The reference loop: at every step evaluate x_theta(z_t, t) on each row with masks, reveal the positions the
    plan reveals at that step. Returns (z, steps with a call, row evaluations)."""
    step, v_at = plan
    n, length = step.shape
    k = grid.numel() - 1
    m = denoiser.process.mask_id
    z = torch.full((n, length), m, dtype=torch.long, device=step.device)
    calls = row_evals = 0
    for i in range(k):
        rows = (z == m).any(1).nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        tt = torch.full((rows.numel(),), float(grid[i]), device=z.device)
        zr = z[rows]
        logp = torch.cat([denoiser(zr[j:j + bs], tt[j:j + bs]).float() for j in range(0, rows.numel(), bs)])
        calls += 1
        row_evals += rows.numel()
        now = step[rows] == i
        greedy = now if final == "greedy" and i == k - 1 else None
        _reveal(zr, logp, now, v_at[rows], greedy, v_at.dtype)
        z[rows] = zr
    return z, calls, row_evals


@torch.no_grad()
def sample_uniform(denoiser: nn.Module, shape: tuple[int, int], *, grid: Tensor, generator: torch.Generator,
                   device: torch.device | str = "cpu", cond: Tensor | None = None, final: Final = "ancestral",
                   dtype_categorical: torch.dtype = torch.float64, allow_low_precision: bool = False,
                   batch_size: int | None = None, kernel: Kernel = "duo") -> tuple[Tensor, dict]:
    """n uniform-state samples [n, length] (int64, CPU; ``shape`` = (n, length)) and stats (``steps``, ``nfe``,
    ``final``, ``kernel``).

    ``final="greedy"``: the last step sets every position to argmax x_theta(z_t, t) (greedy-tail).
    ``kernel``: ``duo`` (default, teachers): z_s ~ p(z_s | z_t, x_hat) with the soft x_hat plugged into Duo's
    kernel, exact for the leave-one-out denoiser a NELBO-trained teacher learns. ``sample-x`` (distilled
    students, which are trained as generators of x given z_t): x ~ Cat(x_hat) per position, then
    z_s ~ q(z_s | z_t, x) (the exact posterior of a one-hot x), i.e. the mixture sum_x x_hat(x) q(z_s | z_t, x);
    two float64 uniform tensors per step.
    """
    if kernel not in ("duo", "sample-x"):
        raise ValueError(f"unknown uniform kernel {kernel!r}; use duo or sample-x")
    process = denoiser.process
    if process.kind != "uniform":
        raise ValueError("sample_uniform needs a denoiser of a UniformProcess")
    n, length = _token_shape(shape)
    grid = _check_options(grid, final, dtype_categorical, allow_low_precision, cond)
    z = process.prior_sample((n, length), generator=generator, device=device)
    bs = batch_size or n
    k = grid.numel() - 1
    for i in range(k):
        t, s = grid[i].reshape(1).to(device), grid[i + 1].reshape(1).to(device)
        tt = torch.full((n,), float(t), device=device)
        logp = torch.cat([denoiser(z[j:j + bs], tt[j:j + bs]).float() for j in range(0, n, bs)])
        u = rng.rand((n, length), generator=generator, device=device, dtype=dtype_categorical)
        if i == k - 1 and final == "greedy":
            z = logp.argmax(-1)
            continue
        x_hat = logp.double().exp()
        if kernel == "sample-x":
            x = inverse_cdf(x_hat.to(dtype_categorical), u)
            x_hat = torch.nn.functional.one_hot(x, process.vocab).double()
            u = rng.rand((n, length), generator=generator, device=device, dtype=dtype_categorical)
        probs = process.posterior_probs(z, x_hat, t.expand(n), s.expand(n))
        z = inverse_cdf(probs.to(dtype_categorical), u)
    return z.cpu(), {"steps": k, "steps_with_call": k, "row_evals": k * n, "nfe": float(k), "final": final,
                     "cache": False, "kernel": kernel}


def sample_discrete(denoiser: nn.Module, shape: tuple[int, int], *, grid: Tensor, generator: torch.Generator,
                    device: torch.device | str = "cpu", cond: Tensor | None = None, temperature: float = 1.0,
                    **options) -> tuple[Tensor, dict]:
    """Dispatch to :func:`sample_masked` or :func:`sample_uniform` by ``denoiser.process.kind``;
    ``temperature`` != 1 samples with the denoiser's distributions at that temperature (``Tempered``)."""
    if temperature != 1.0:
        from fewstep.denoisers.categorical import Tempered

        denoiser = Tempered(denoiser, temperature)
    if denoiser.process.kind == "masked":
        options.pop("kernel", None)  # the masked kernel is linear in x_hat: both kernels have one law
        return sample_masked(denoiser, shape, grid=grid, generator=generator, device=device, cond=cond, **options)
    options.pop("cache", None)
    options.pop("force_cache", None)
    if options.get("kernel") is None:
        options.pop("kernel", None)
    return sample_uniform(denoiser, shape, grid=grid, generator=generator, device=device, cond=cond, **options)


def sample_token_student(denoiser: nn.Module, shape: tuple[int, int], *, grid: Tensor, generator: torch.Generator,
                         device: torch.device | str = "cpu", cond: Tensor | None = None, temperature: float = 1.0,
                         **options) -> tuple[Tensor, dict]:
    """The teacher's ancestral sampler (:func:`sample_discrete`) with a distilled few-step student (IDLM, D-MMD) as
    denoiser. A latent-mixture student (``denoiser.latent_dim > 0``) draws fresh noise at every call from a
    generator seeded by ``generator`` (so the tokens are a pure function of it); it is never cached.

    ``kernel`` (uniform process): ``duo`` (the teacher's kernel, as the paper prescribes; right for a student that
    stays close to the teacher's leave-one-out denoiser) or ``sample-x`` (x ~ Cat(G), then the exact posterior of
    that x; right for a student that has become a generator of x given z_t). Neither is exact for a student in
    between (measured: benchmarks/dmmd.md, benchmarks/idlm.md). For the masked process both have one law.
    ``temperature``: the student's sampling temperature (a latent-mixture student is tempered per noise draw)."""
    if getattr(denoiser, "latent_dim", 0):
        from fewstep.denoisers.categorical import LatentNoise

        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        denoiser = LatentNoise(denoiser, torch.Generator(device=device).manual_seed(seed))
    return sample_discrete(denoiser, shape, grid=grid, generator=generator, device=device, cond=cond,
                           temperature=temperature, **options)
