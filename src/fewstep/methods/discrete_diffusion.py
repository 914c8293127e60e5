"""Discrete diffusion teacher training: the continuous-time NELBO of the masked (MDLM) or uniform (Duo/UDLM)
process (docs/methods/masked-diffusion.md, uniform-diffusion.md).

Masked: L(x) = lambda(t) sum_{l: z_t^l = m} -log x_theta^l(z_t, t)[x^l], lambda = -alpha'/(1 - alpha), with one
stratified t and one z_t per sequence; masked positions are selected with ``torch.where`` on a finite value
(SUBS makes the visible positions' log-probabilities 0, never -inf at the target), so no NaN gradients.
Uniform: sum_l g(z_t^l, x^l, f^l) with the KL + Itakura-Saito integrand of ``UniformProcess.elbo_integrand``.
The loss is reported per token (divided by L); exp of its mean is a perplexity bound.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.methods.base import Batch, LossOutput, Method
from fewstep.samplers.discrete import sample_discrete
from fewstep.samplers.grids import uniform_grid


def masked_nelbo(logp: Tensor, x: Tensor, z_t: Tensor, weight: Tensor, mask_id: int) -> Tensor:
    """Per-sequence NELBO terms [B]: weight [B] * sum over masked positions of -log p[x] (logp [B, L, V])."""
    nll = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)
    masked = z_t == mask_id
    nll = torch.where(masked, nll, torch.zeros_like(nll))
    return weight * nll.sum(-1)


class DiscreteDiffusion(Method):
    """Masked or uniform discrete diffusion teacher (role ``model``).

    Args:
        model: the ``CategoricalDenoiser`` being trained; its process decides the loss.
        length: sequence length L (for ``generate``).
    """

    def __init__(self, model: CategoricalDenoiser, *, length: int) -> None:
        super().__init__()
        self.model = model
        self.process = model.process
        self.length = length

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        if x.dtype != torch.long:
            raise ValueError(f"discrete diffusion trains on int64 tokens, got {x.dtype}")
        n, length = x.shape
        t = self.process.sample_t(n, generator=generator, device=x.device)
        z = self.process.add_noise(x, t, generator=generator)
        logp = nets["model"](z, t).float()
        if self.process.kind == "masked":
            per_seq = masked_nelbo(logp, x, z, self.process.elbo_weight(t.float()), self.process.mask_id)
        else:
            per_seq = self.process.elbo_integrand(z, x, logp.exp(), t.float()).sum(-1)
        per_token = per_seq / length
        loss = per_token.mean()
        return LossOutput(loss, {"loss": loss.detach(), "nelbo_per_token": loss.detach()})

    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, final: str = "ancestral", device: torch.device | str = "cpu",
                 batch_size: int | None = 512, return_stats: bool = False, **options: object):
        """``n`` samples [n, L] (int64) with the ancestral sampler on the uniform ``steps``-step grid.

        Masked teachers cache per row when time-free. ``return_stats``: also return the sampler's stats.
        ``options["temperature"]``: sampling temperature of the denoiser (default 1).
        """
        tokens, stats = sample_discrete(nets["model"], (n, self.length), grid=uniform_grid(steps),
                                        generator=generator, device=device, final=final, batch_size=batch_size,
                                        temperature=float(options.get("temperature", 1.0)))
        return (tokens, stats) if return_stats else tokens

    def config(self) -> dict:
        return {"process": self.process.kind, "length": self.length}
