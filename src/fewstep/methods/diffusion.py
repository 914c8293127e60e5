"""Gaussian diffusion teacher training: weighted denoising loss E_t w(t) ||D(z_t, t) - x||^2.

The loss is the mean over elements of the squared x-space error times the weight of
``GaussianProcess.loss_weight`` (flat, snr = eps-loss, v, velocity, max_snr_1, edm, sigmoid), with training
times from ``GaussianProcess.sample_t``. Sampling uses the many-step samplers of ``fewstep.samplers``.

Class-conditional teachers train their unconditional branch by label dropout: each label is replaced by the null
label ``num_classes`` with probability ``label_dropout`` (``drop_labels``), so that classifier-free guidance
T(null) + w (T(c) - T(null)) (``methods.mm``) has a trained T(null).
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

AUTO_LABEL_DROPOUT = 0.1
"""``label_dropout=None`` (auto) of a class-conditional run (``build.resolve_label_dropout``)."""


def check_label_dropout(p: float, conditional: bool, num_classes: int | None) -> float:
    """``p`` as a float after checking 0 <= p < 1 and that p > 0 comes with labels and a null label."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {p}")
    if p > 0 and (not conditional or num_classes is None or num_classes <= 0):
        raise ValueError("label_dropout > 0 needs a class-conditional model (conditional=True and num_classes, "
                         "whose index is the null label)")
    return p


def drop_labels(labels: Tensor, p: float, null_label: int, generator: torch.Generator) -> Tensor:
    """``labels`` [B] with each entry replaced by ``null_label`` with probability ``p`` (one uniform draw per
    label from ``generator``; ``p`` = 0 draws nothing and returns ``labels`` itself)."""
    if p <= 0:
        return labels
    drop = rng.rand(labels.shape, generator=generator, device=labels.device, dtype=torch.float64) < p
    return torch.where(drop, torch.full_like(labels, null_label), labels)


class GaussianDiffusion(Method):
    """Denoising-score-matching teacher.

    Args:
        model: the x0-predicting denoiser being trained (role ``model``).
        weighting: x-space loss weight (see ``GaussianProcess.loss_weight``). sigmoid_bias: its b for ``sigmoid``.
        time_sampling: how training times are drawn.
        conditional: feed batch labels to the denoiser (class-conditional teacher).
        num_classes: label count of a conditional denoiser; label ``num_classes`` is the null (unconditional) one.
        label_dropout: probability of training on the null label instead of the batch label (drawn after the
            times and noise from the loss's generator; 0: no draw, the loss is unchanged).
    """

    def __init__(self, model: GaussianDenoiser, *, weighting: Weighting = "edm",
                 time_sampling: TimeSampling = "uniform", conditional: bool = False,
                 num_classes: int | None = None, label_dropout: float = 0.0, sigmoid_bias: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.process: GaussianProcess = model.process
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.sigmoid_bias = float(sigmoid_bias)
        self.conditional = conditional
        self.num_classes = num_classes
        self.label_dropout = check_label_dropout(label_dropout, conditional, num_classes)

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
        if cond is not None and self.label_dropout > 0:
            cond = drop_labels(cond, self.label_dropout, int(self.num_classes), generator)
        x0_hat = nets["model"](z, t, cond=cond)
        w = self.process.loss_weight(t, self.weighting, sigmoid_bias=self.sigmoid_bias).to(x.device)
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
        cfg = {"weighting": self.weighting, "time_sampling": self.time_sampling, "conditional": self.conditional,
               "label_dropout": self.label_dropout}
        return cfg | ({"sigmoid_bias": self.sigmoid_bias} if self.weighting == "sigmoid" else {})


