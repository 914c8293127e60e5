"""Masked (absorbing-state) discrete diffusion, as in MDLM (Sahoo et al., NeurIPS 2024, arXiv 2406.07524).

Per position: q_t(. | x) = alpha_t e_x + (1 - alpha_t) e_m, with m = ``mask_id``. Exact posterior for s < t:
a visible token stays; a mask becomes the clean token with probability (alpha_s - alpha_t)/(1 - alpha_t), else
stays masked. With a denoiser x_hat the reverse kernel replaces the clean token by a draw from x_hat. The
continuous-time NELBO weight is lambda(t) = -alpha'(t)/(1 - alpha(t)) (1/t for the log-linear schedule).

Tokens are int64 [B, L] in 0..V-1 with V = N + 1 (N real tokens, the mask last by default).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep import rng
from fewstep.processes.categorical import KeepSchedule, LogLinear, inverse_cdf, stratified_t


class MaskedProcess:
    """Absorbing-state process over ``vocab`` real tokens plus a mask token.

    Args:
        vocab: N, the number of real tokens. mask_id: the mask token (default N, so the width is V = N + 1).
        schedule: keep schedule alpha(t) (default log-linear). t_min, t_max: training-time range.
    """

    kind = "masked"

    def __init__(self, vocab: int, *, mask_id: int | None = None, schedule: KeepSchedule | None = None,
                 t_min: float = 1e-3, t_max: float = 1.0) -> None:
        if vocab < 1:
            raise ValueError(f"vocab must be >= 1, got {vocab}")
        self.vocab = vocab
        self.mask_id = vocab if mask_id is None else mask_id
        if not 0 <= self.mask_id <= vocab:
            raise ValueError(f"mask_id must lie in [0, {vocab}], got {self.mask_id}")
        self.width = vocab + 1
        self.schedule = schedule or LogLinear()
        self.t_min, self.t_max = t_min, t_max

    # ----------------------------------------------------------------------------------------- forward
    def sample_t(self, n: int, *, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """[n] stratified training times in [t_min, t_max]."""
        return stratified_t(n, self.t_min, self.t_max, generator=generator, device=device)

    def forward_probs(self, x: Tensor, t: Tensor) -> Tensor:
        """q_t(. | x) [B, L, V] float64 for tokens x [B, L] (or a soft x [B, L, V] over the real tokens)."""
        a = self.schedule.alpha(t.double()).reshape(-1, 1, 1)
        v = self._onehot(x) if x.dtype == torch.long else self._pad(x.double())
        out = a * v
        out[..., self.mask_id] += (1 - a[..., 0])
        return out

    def add_noise(self, x0: Tensor, t: Tensor, *, generator: torch.Generator) -> Tensor:
        """z_t [B, L]: each position keeps its token with probability alpha(t), else becomes the mask."""
        a = self.schedule.alpha(t.double()).reshape(-1, 1)
        u = rng.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        return torch.where(u < a, x0, torch.full_like(x0, self.mask_id))

    def prior_sample(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """All-mask tokens [shape] (deterministic; ``generator`` is unused)."""
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def elbo_weight(self, t: Tensor) -> Tensor:
        """lambda(t) = -alpha'(t) / (1 - alpha(t))."""
        return -self.schedule.d_alpha(t) / (1 - self.schedule.alpha(t))

    # ---------------------------------------------------------------------------------------- reverse
    def unmask_prob(self, t: Tensor, s: Tensor) -> Tensor:
        """(alpha_s - alpha_t) / (1 - alpha_t): probability that a mask at t is revealed by s (float64)."""
        a_t, a_s = self.schedule.alpha(t.double()), self.schedule.alpha(s.double())
        return ((a_s - a_t) / (1 - a_t)).clamp(0, 1)

    def posterior_probs(self, z_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Reverse kernel p(z_s | z_t, x_hat) [B, L, V] float64.

        Args:
            z_t: [B, L] tokens. x0_probs: [B, L, V] (or [B, L, N]) clean-token probabilities; a one-hot gives
                the exact posterior q(z_s | z_t, x). t, s: [B] with s < t.
        """
        p = self.unmask_prob(t, s).reshape(-1, 1, 1)
        x = self._pad(x0_probs.double())
        out = p * x
        out[..., self.mask_id] += (1 - p[..., 0])
        masked = (z_t == self.mask_id).unsqueeze(-1)
        return torch.where(masked, out, self._onehot(z_t))

    def posterior_step(self, z_t: Tensor, x0_logp: Tensor, t: Tensor, s: Tensor, *,
                       generator: torch.Generator, eta: float = 0.0) -> Tensor:
        """z_s ~ p(z_s | z_t, x_hat) [B, L], drawn in two float64 stages (Bernoulli unmask, then the token).

        ``x0_logp`` [B, L, V] are the denoiser's log-probabilities; ``eta`` is unused (kept for the protocol).
        Consumes exactly two [B, L] float64 uniform tensors from ``generator`` whatever is revealed; the
        token CDF is built only at revealed positions (memory O(revealed x V), fine for a 50k vocabulary).
        """
        p = self.unmask_prob(t, s).reshape(-1, 1)
        u = rng.rand(z_t.shape, generator=generator, device=z_t.device, dtype=torch.float64)
        v = rng.rand(z_t.shape, generator=generator, device=z_t.device, dtype=torch.float64)
        reveal = (z_t == self.mask_id) & (u < p)
        out = z_t.clone()
        if bool(reveal.any()):
            out[reveal] = inverse_cdf(x0_logp[reveal].double().exp(), v[reveal])
        return out

    # ---------------------------------------------------------------------------------------- helpers
    def _onehot(self, x: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(x, self.width).double()

    def _pad(self, probs: Tensor) -> Tensor:
        """[.., N] clean-token probabilities -> [.., V] with a zero mask entry (no-op when already V wide)."""
        if probs.shape[-1] == self.width:
            return probs
        if probs.shape[-1] != self.vocab or self.mask_id != self.vocab:
            raise ValueError(f"expected {self.width} (or {self.vocab}) probabilities, got {probs.shape[-1]}")
        return torch.nn.functional.pad(probs, (0, 1))
