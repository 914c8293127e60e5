"""Categorical denoisers: a token backbone's logits -> log p(x0 | z_t) [B, L, V] in float32.

Masked processes use the SUBS parametrisation (MDLM, Sahoo et al. 2024): (1) the mask logit is set to -inf,
(2) log-softmax over the real tokens, (3) carry-over: where z_t is not the mask the output is the one-hot of
z_t (log-probability 0 there, -inf elsewhere). Losses index masked positions explicitly and never multiply
into the -inf entries. Uniform processes use a plain log-softmax over the N tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.processes.base import check_times


def subs(logits: Tensor, z_t: Tensor, mask_id: int) -> Tensor:
    """SUBS log-probabilities [B, L, V] float32 from raw ``logits`` [B, L, V] and tokens ``z_t`` [B, L]."""
    logits = logits.float()
    logits = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    logp = torch.log_softmax(logits, dim=-1)
    visible = z_t != mask_id
    if z_t.dtype != torch.long:
        raise ValueError("SUBS carry-over needs hard tokens z_t (int64)")
    carry = torch.full_like(logp, float("-inf")).scatter_(-1, z_t.unsqueeze(-1), 0.0)
    return torch.where(visible.unsqueeze(-1), carry, logp)


class CategoricalDenoiser(nn.Module):
    """Wraps a token backbone ``net(z, t, s) -> logits [B, L, V]`` into x0 log-probabilities.

    Args:
        net: the backbone (e.g. ``nets.text_dit.TextDiT``); its ``time_conditioned`` attribute is exposed so
            that samplers can cache (a time-free masked denoiser's output depends on z only).
        process: a ``MaskedProcess`` (SUBS output, width N + 1) or ``UniformProcess`` (width N).
    """

    def __init__(self, net: nn.Module, process) -> None:
        super().__init__()
        self.net = net
        self.process = process
        self.time_conditioned = bool(getattr(net, "time_conditioned", True))

    @property
    def latent_dim(self) -> int:
        """Width of the backbone's latent-noise input (0: none)."""
        return int(getattr(self.net, "latent_dim", 0))

    def forward(self, z_t: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None,
                latent: Tensor | None = None) -> Tensor:
        """log p(x0 | z_t) [B, L, V] float32 for tokens z_t [B, L] (or a soft [B, L, V] input) and t [B];
        ``latent`` [B, L, latent_dim]: the latent-mixture student's noise input (None: zero noise)."""
        check_times(z_t, t, s)
        logits = self.net(z_t, t, s) if latent is None else self.net(z_t, t, s, latent=latent)
        if self.process.kind == "masked":
            if z_t.dtype != torch.long:
                raise ValueError("a masked denoiser takes hard tokens (int64 [B, L])")
            return subs(logits, z_t, self.process.mask_id)
        return torch.log_softmax(logits.float(), dim=-1)


class LatentNoise(nn.Module):
    """A latent-mixture student as a plain denoiser for the samplers: every call draws fresh
    eps ~ N(0, I) [B, L, latent_dim] (float64 from its own generator, then float32) and passes it to ``denoiser``.

    Each sampler step is then a mixture of factorised distributions E_eps prod_l Cat(G^l(eps)) (docs/methods/*
    section 3). Its output depends on eps, so it reports ``time_conditioned = True`` (no caching).
    """

    time_conditioned = True

    def __init__(self, denoiser: CategoricalDenoiser, generator: torch.Generator) -> None:
        super().__init__()
        if denoiser.latent_dim <= 0:
            raise ValueError("LatentNoise needs a denoiser built with latent_dim > 0")
        self.denoiser, self.generator = denoiser, generator
        self.process = denoiser.process

    def forward(self, z_t: Tensor, t: Tensor, **kwargs) -> Tensor:
        eps = rng.randn((*z_t.shape[:2], self.denoiser.latent_dim), generator=self.generator,
                        device=z_t.device, dtype=torch.float64)
        return self.denoiser(z_t, t, latent=eps.float(), **kwargs)


class Tempered(nn.Module):
    """A categorical denoiser at sampling temperature ``temperature``: log_softmax(log p(x0 | z_t) / T).

    T > 1 flattens every per-position distribution (more entropy), T < 1 sharpens it; masked carry-over rows
    (one-hot: 0 and -inf) and the -inf mask entry are unchanged. Deterministic in its input, so it keeps the
    wrapped denoiser's ``time_conditioned`` (a time-free masked denoiser stays cacheable).
    """

    def __init__(self, denoiser: nn.Module, temperature: float) -> None:
        super().__init__()
        if not (temperature > 0 and temperature < float("inf")):
            raise ValueError(f"sampling temperature must be a positive finite number, got {temperature}")
        self.denoiser, self.temperature = denoiser, float(temperature)
        self.process = denoiser.process
        self.time_conditioned = bool(getattr(denoiser, "time_conditioned", True))

    def forward(self, z_t: Tensor, t: Tensor, **kwargs) -> Tensor:
        return torch.log_softmax(self.denoiser(z_t, t, **kwargs) / self.temperature, dim=-1)
