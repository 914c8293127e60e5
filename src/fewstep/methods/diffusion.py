"""Gaussian diffusion teacher training: weighted denoising loss E_t w(t) ||D(z_t, t) - x||^2.

The loss is the mean over elements of the squared x-space error times the weight of
``GaussianProcess.loss_weight`` (flat, snr = eps-loss, v, velocity, max_snr_1, edm, sigmoid), with training
times from ``GaussianProcess.sample_t``. Sampling uses the many-step samplers of ``fewstep.samplers``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from fewstep import rng
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.base import Batch, LossOutput, Method
from fewstep.processes.gaussian import GaussianProcess, TimeSampling, Weighting
from fewstep.samplers.gaussian import sample
from fewstep.samplers.grids import make_grid


class GaussianDiffusion(Method):
    """Denoising-score-matching teacher.

    Args:
        model: the x0-predicting denoiser being trained (role ``model``).
        weighting: x-space loss weight (see ``GaussianProcess.loss_weight``).
        time_sampling: how training times are drawn.
        conditional: feed batch labels to the denoiser (class-conditional teacher).
    """

    def __init__(self, model: GaussianDenoiser, *, weighting: Weighting = "edm",
                 time_sampling: TimeSampling = "uniform", conditional: bool = False) -> None:
        super().__init__()
        self.model = model
        self.process: GaussianProcess = model.process
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.conditional = conditional

    def trainable(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        n = x.shape[0]
        t = self.process.sample_t(n, generator=generator, device=x.device, kind=self.time_sampling)
        noise = rng.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = self.process.add_noise(x, t, noise=noise)
        cond = batch.get("label") if self.conditional else None
        x0_hat = nets["model"](z, t, cond=cond)
        w = self.process.loss_weight(t, self.weighting).to(x.device)
        err = (x0_hat.float() - x.float()) ** 2
        per_sample = err.reshape(n, -1).mean(1)
        loss = (w * per_sample).mean()
        return LossOutput(loss, {"loss": loss.detach(), "mse": per_sample.mean().detach()})

    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, sampler: str = "ancestral", grid: str = "uniform",
                 shape: tuple[int, ...] | None = None, device: torch.device | str = "cpu",
                 **options: object) -> Tensor:
        """``n`` samples [n, *shape] float64 with the named teacher sampler on the named grid."""
        if shape is None:
            raise ValueError("generate needs the sample shape (without batch dim)")
        t_grid = make_grid(grid, steps, self.process.schedule)
        return sample(nets["model"], self.process, (n, *shape), sampler=sampler, grid=t_grid,
                      generator=generator, device=device, cond=cond)

    def config(self) -> dict:
        return {"weighting": self.weighting, "time_sampling": self.time_sampling, "conditional": self.conditional}


