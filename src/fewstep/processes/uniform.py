"""Uniform-state discrete diffusion, as in Duo (Sahoo et al., ICML 2025, arXiv 2506.10892) and UDLM.

Per position: q_t(. | v) = alpha_t v + (1 - alpha_t)/N 1 (linear in v, so soft v works). Reverse kernel with
alpha_{t|s} = alpha_t / alpha_s, current token z and a clean-token estimate x_hat:

    p(z_s | z_t, x_hat) = [N a_t x_z e_z + (a_{t|s} - a_t) e_z + (a_s - a_t) x_hat + (1 - a_{t|s})(1 - a_s)/N 1]
                          / (N a_t x_z + 1 - a_t),

the true posterior for a one-hot x_hat. For soft x_hat the kernel is exact when x_hat is the leave-one-out
conditional p(x^l | z_t^{-l}) (not the posterior mean), which is also the unique minimiser of the loss below.

Loss: the continuous-time NELBO, per position g(z, x, f) = [-alpha'/(N alpha q_t(z|x))] *
[KL(q_t(.|x) || q_t(.|f)) + D_IS(q_t(z|x) || q_t(z|f))], D_IS(a||b) = a/b - log(a/b) - 1. Each term is >= 0;
it equals Duo's Rao-Blackwellised integrand and UDLM's CTMC ELBO (docs/methods/uniform-diffusion.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fewstep import rng
from fewstep.processes.categorical import KeepSchedule, LogLinear, categorical, stratified_t


class UniformProcess:
    """Uniform-state process over ``vocab`` tokens (no mask token; the width is V = N).

    Args:
        vocab: N. schedule: keep schedule alpha(t) (default log-linear). t_min, t_max: training-time range.
    """

    kind = "uniform"
    mask_id = None

    def __init__(self, vocab: int, *, schedule: KeepSchedule | None = None, t_min: float = 1e-3,
                 t_max: float = 1.0 - 1e-3) -> None:
        if vocab < 2:
            raise ValueError(f"a uniform process needs vocab >= 2, got {vocab}")
        self.vocab = self.width = vocab
        self.schedule = schedule or LogLinear()
        self.t_min, self.t_max = t_min, t_max

    def sample_t(self, n: int, *, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """[n] stratified training times in [t_min, t_max]."""
        return stratified_t(n, self.t_min, self.t_max, generator=generator, device=device)

    def forward_probs(self, x: Tensor, t: Tensor) -> Tensor:
        """q_t(. | x) [B, L, N] float64 for tokens [B, L] or soft x [B, L, N]."""
        a = self.schedule.alpha(t.double()).reshape(-1, 1, 1)
        v = torch.nn.functional.one_hot(x, self.vocab).double() if x.dtype == torch.long else x.double()
        return a * v + (1 - a) / self.vocab

    def add_noise(self, x0: Tensor, t: Tensor, *, generator: torch.Generator) -> Tensor:
        """z_t [B, L]: keep each token with probability alpha(t), else a uniform token (which may equal it)."""
        a = self.schedule.alpha(t.double()).reshape(-1, 1)
        u = rng.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        w = rng.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        noise = (w * self.vocab).long().clamp_(max=self.vocab - 1)
        return torch.where(u < a, x0, noise)

    def prior_sample(self, shape: tuple[int, ...], *, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> Tensor:
        """Uniform tokens [shape] (float64 uniforms)."""
        u = rng.rand(shape, generator=generator, device=device, dtype=torch.float64)
        return (u * self.vocab).long().clamp_(max=self.vocab - 1)

    def posterior_probs(self, z_t: Tensor, x0_probs: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Reverse kernel p(z_s | z_t, x_hat) [B, L, N] float64 (rows sum to 1). t, s: [B], s < t."""
        n = self.vocab
        a_t = self.schedule.alpha(t.double()).reshape(-1, 1, 1)
        a_s = self.schedule.alpha(s.double()).reshape(-1, 1, 1)
        a_ts = a_t / a_s
        x = x0_probs.double()
        e_z = torch.nn.functional.one_hot(z_t, n).double()
        x_z = (x * e_z).sum(-1, keepdim=True)
        num = (n * a_t * x_z + a_ts - a_t) * e_z + (a_s - a_t) * x + (1 - a_ts) * (1 - a_s) / n
        return num / (n * a_t * x_z + 1 - a_t)

    def posterior_step(self, z_t: Tensor, x0_logp: Tensor, t: Tensor, s: Tensor, *,
                       generator: torch.Generator, eta: float = 0.0) -> Tensor:
        """z_s ~ p(z_s | z_t, x_hat) [B, L] (float64 inverse CDF; one [B, L] uniform tensor consumed)."""
        return categorical(self.posterior_probs(z_t, x0_logp.double().exp(), t, s), generator=generator)

    def elbo_integrand(self, z_t: Tensor, x: Tensor, f: Tensor, t: Tensor) -> Tensor:
        """g(z_t, x, f) [B, L] (nats per unit time) in the dtype of ``f``.

        Args:
            z_t: [B, L] current tokens. x: clean tokens [B, L] or soft [B, L, N]. f: predicted clean-token
                probabilities [B, L, N]. t: [B].
        """
        n, dt = self.vocab, f.dtype
        a = self.schedule.alpha(t.to(dt)).reshape(-1, 1, 1)
        da = self.schedule.d_alpha(t.to(dt)).reshape(-1, 1, 1)
        xv = torch.nn.functional.one_hot(x, n).to(dt) if x.dtype == torch.long else x.to(dt)
        qx = a * xv + (1 - a) / n
        qf = a * f + (1 - a) / n
        tiny = torch.finfo(dt).tiny
        kl = (qx * (qx.clamp_min(tiny).log() - qf.clamp_min(tiny).log())).sum(-1)
        idx = z_t.unsqueeze(-1)
        qx_z, qf_z = qx.gather(-1, idx).squeeze(-1), qf.gather(-1, idx).squeeze(-1)
        r = qx_z / qf_z
        d_is = r - r.log() - 1
        return (-da[..., 0] / (n * a[..., 0] * qx_z)) * (kl + d_is)

    def elbo_weight(self, t: Tensor) -> Tensor:
        """-alpha'(t)/alpha(t), the scale of the integrand (for logging / clamps)."""
        return -self.schedule.d_alpha(t) / self.schedule.alpha(t)
