"""A diffusers model (``UNet2DModel``, ``UNet2DConditionModel``, ``DiTTransformer2DModel``) as an x0 denoiser.

The model was trained as a discrete DDPM: it takes the raw z_t (variance preserving, no input scaling) and the
timestep n = 0..N-1 of alpha-bar_n, and predicts eps, v or x0 (``prediction_type`` epsilon / v_prediction /
sample). On the library's continuous time (``schedules.DDPMSchedule``: timestep n at t = (n + 1) / N) the
adapter feeds the model the timestep t N - 1 (continuous between training timesteps, floored at 0) and turns its
output into x0 with diffusers' own formulas, in float64:

- epsilon: x0 = (z - sqrt(1 - abar) eps) / sqrt(abar)
- v_prediction: x0 = sqrt(abar) z - sqrt(1 - abar) v
- sample: x0 = output

At every training timestep this is exactly the ``pred_original_sample`` of diffusers' schedulers (tested), so
the model is the same function it was in its home library. diffusers is an optional dependency
(``pip install 'fewstep[diffusers]'``), imported only when such a model is built.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from fewstep.processes.base import bcast, check_times
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import DDPMSchedule

MODEL_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel")
"""diffusers model classes the adapter takes (class labels where the config has them)."""

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
"""diffusers ``prediction_type`` -> the library's parametrisation name."""


def require_diffusers():
    """The ``diffusers`` module, or an ImportError saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise ImportError("diffusers teachers need the optional diffusers package: "
                          "pip install 'fewstep[diffusers]' (or pip install diffusers)") from None
    return diffusers


def model_class_name(config: dict[str, Any]) -> str:
    """The supported diffusers class of a model config (its ``_class_name``), or a one-line ValueError."""
    name = config.get("_class_name")
    if name not in MODEL_CLASSES:
        raise ValueError(f"unsupported diffusers model class {name!r}; supported: {', '.join(MODEL_CLASSES)}")
    return name


def model_from_config(config: dict[str, Any] | str) -> nn.Module:
    """A randomly initialised diffusers model of ``config`` (a dict or its JSON string, with ``_class_name``)."""
    if isinstance(config, str):
        config = json.loads(config)
    cls = getattr(require_diffusers(), model_class_name(config))
    return cls.from_config(config)


def model_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    """Sample shape [C, H, W] a model config takes (``in_channels`` and ``sample_size``)."""
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        h, w = int(size[0]), int(size[1])
    elif isinstance(size, int):
        h = w = size
    else:
        raise ValueError(f"the diffusers model config has no usable sample_size ({size!r})")
    return int(config.get("in_channels", 3)), h, w


def model_classes(config: dict[str, Any]) -> int:
    """Number of class labels of a model config (0: unconditional). DiT: ``num_embeds_ada_norm`` (its null label
    is that index); U-Nets: ``num_class_embeds`` with the default class embedding."""
    name = model_class_name(config)
    if name == "DiTTransformer2DModel":
        return int(config.get("num_embeds_ada_norm") or 0)
    if config.get("class_embed_type") not in (None,):
        raise ValueError(f"{name} with class_embed_type {config.get('class_embed_type')!r} is not supported "
                         "(class labels need the default embedding, num_class_embeds)")
    return int(config.get("num_class_embeds") or 0)


def check_model_config(config: dict[str, Any]) -> None:
    """One-line errors for configs the adapter cannot drive (cross-attention needs text embeddings)."""
    name = model_class_name(config)
    if name == "UNet2DConditionModel":
        blocks = list(config.get("down_block_types", [])) + list(config.get("up_block_types", []))
        blocks.append(config.get("mid_block_type") or "")
        if any("CrossAttn" in b for b in blocks):
            raise ValueError("this UNet2DConditionModel has cross-attention blocks (a text-conditioned model): only "
                             "class-conditional or unconditional models are supported")
    model_shape(config)
    model_classes(config)


class DiffusersDenoiser(nn.Module):
    """D(z_t, t, s=None, cond=None) -> x0_hat of a diffusers model; output dtype: the input's, at least float32.

    Args:
        net: the diffusers model (``UNet2DModel``, ``UNet2DConditionModel`` without cross-attention, or
            ``DiTTransformer2DModel``).
        process: a ``GaussianProcess`` on a :class:`~fewstep.schedules.DDPMSchedule` (the model's betas).
        parametrization: ``eps``, ``v`` or ``x0`` (:data:`PREDICTIONS` of its ``prediction_type``).
    """

    def __init__(self, net: nn.Module, process: GaussianProcess, parametrization: str = "eps") -> None:
        super().__init__()
        if not isinstance(process.schedule, DDPMSchedule):
            raise ValueError("a diffusers model needs its DDPM schedule (process.schedule 'ddpm')")
        if parametrization not in PREDICTIONS.values():
            raise ValueError(f"a diffusers model predicts eps, v or x0, not {parametrization!r}")
        config = dict(net.config)
        check_model_config(config)
        self.net, self.process, self.parametrization = net, process, parametrization
        self.kind = model_class_name(config)
        self.num_classes = model_classes(config)
        channels = int(config.get("in_channels", 3))
        out_channels = int(config.get("out_channels") or 0)
        self.learned_sigma = self.kind == "DiTTransformer2DModel" and out_channels == 2 * channels

    def network(self, z: Tensor, timestep: Tensor, cond: Tensor | None) -> Tensor:
        """The raw model output for input ``z`` [B, C, H, W] at diffusers timesteps ``timestep`` [B]."""
        if self.kind == "DiTTransformer2DModel":
            if cond is None:  # DiT is always class-conditional: its null label is the unconditional branch
                cond = torch.full((z.shape[0],), self.num_classes, dtype=torch.long, device=z.device)
            out = self.net(z, timestep=timestep, class_labels=cond).sample
            return out[:, : z.shape[1]] if self.learned_sigma else out
        labels = cond if self.num_classes > 0 else None
        if self.kind == "UNet2DConditionModel":
            return self.net(z, timestep, encoder_hidden_states=None, class_labels=labels).sample
        return self.net(z, timestep, class_labels=labels).sample

    def forward(self, x_t: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        check_times(x_t, t, s)
        if s is not None:
            raise ValueError("a diffusers model takes one time (no second time s)")
        if self.num_classes > 0 and cond is not None and self.kind != "DiTTransformer2DModel":
            cond = cond.long()
        schedule: DDPMSchedule = self.process.schedule
        t64 = t.detach().double()
        param = next(self.net.parameters())
        out = self.network(x_t.to(param.dtype), schedule.timestep(t64).to(param.device), cond)
        dtype = torch.promote_types(x_t.dtype, torch.float32)
        if self.parametrization == "x0":
            return out.to(dtype)
        o = schedule(t64)
        z, out = x_t.double(), out.double()
        a, sg = bcast(o.alpha.to(z.device), z), bcast(o.sigma.to(z.device), z)
        x0 = (z - sg * out) / a if self.parametrization == "eps" else a * z - sg * out
        return x0.to(dtype)
