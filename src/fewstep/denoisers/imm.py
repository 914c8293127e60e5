"""The two-time map f_{s,t}: x_t -> x_s of Inductive Moment Matching (Zhou, Ermon, Song, ICML 2025, arXiv
2503.07565; docs/methods/imm.md), re-implemented from the paper.

Interpolant x_t = alpha_t x + sigma_t sigma_d eps (prior N(0, sigma_d^2 I)). A backbone G with two time inputs
gives the denoiser g = c_skip(t) x_t + c_out(t) G(c_in(t) x_t, t, second) and the map is its DDIM step

    f_{s,t}(x_t) = ddim(x_t, g, src_t=t, dst_s=s) = c_skip(s, t) x_t + c_out(s, t) G,

with c_in(t) = 1 / (sigma_d sqrt(alpha_t^2 + sigma_t^2)) and (table of docs/methods/imm.md):

- identity:   c_skip(t) = 0, c_out(t) = 1; c_skip(s,t) = sigma_s/sigma_t, c_out(s,t) = alpha_s - sigma_s alpha_t/sigma_t
- simple-edm: c_skip(t) = alpha_t/n^2, c_out(t) = -sigma_d sigma_t/n with n^2 = alpha_t^2 + sigma_t^2;
  c_skip(s,t) = (alpha_s alpha_t + sigma_s sigma_t)/n^2, c_out(s,t) = -sigma_d (alpha_s sigma_t - sigma_s alpha_t)/n
- euler-fm:   c_skip(t) = 1, c_out(t) = -t sigma_d; c_skip(s,t) = 1, c_out(s,t) = -(t - s) sigma_d

The (s, t) coefficients are evaluated in closed form in float64, so f_{t,t} = x_t holds
exactly for simple-edm and euler-fm and nothing divides by sigma_t = 0 at t = 0. Euler-FM needs the flow
schedule. The second time input is ``s`` (default) or the stride ``t - s``; the backbone embeds times as
1000 tau (``nets.embeddings.sinusoidal``), the paper's c_noise.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fewstep.denoisers.call import input_dtype
from fewstep.processes.base import bcast
from fewstep.schedules import Schedule

IMMParam = Literal["simple-edm", "euler-fm", "identity"]
IMM_PARAMS = ("simple-edm", "euler-fm", "identity")
SecondTime = Literal["s", "stride"]


def ddim(x_src: Tensor, x0: Tensor, *, src_t: Tensor, dst_s: Tensor, schedule: Schedule) -> Tensor:
    """alpha_s x0 + (sigma_s / sigma_t)(x_src - alpha_t x0): the DDIM move of x_src [B, ...] from src_t [B] to
    dst_s [B] given the clean estimate x0 (keyword-only times; sigma_d cancels). Needs sigma(src_t) > 0."""
    a_t, s_t = schedule(src_t.double()).alpha, schedule(src_t.double()).sigma
    o_s = schedule(dst_s.double())
    ratio = o_s.sigma / s_t
    return bcast(o_s.alpha - ratio * a_t, x0) * x0.double() + bcast(ratio, x_src) * x_src.double()


def map_coefficients(kind: IMMParam, schedule: Schedule, s: Tensor, t: Tensor,
                     sigma_d: float) -> tuple[Tensor, Tensor]:
    """(c_skip(s, t), c_out(s, t)) [B] in float64 for f_{s,t} = c_skip x_t + c_out G."""
    s, t = s.double(), t.double()
    if kind == "euler-fm":
        if schedule.name != "flow":
            raise ValueError("the euler-fm parametrisation needs the flow schedule")
        return torch.ones_like(t), -(t - s) * sigma_d
    ot, os_ = schedule(t), schedule(s)
    if kind == "simple-edm":
        norm2 = ot.alpha**2 + ot.sigma**2
        return ((os_.alpha * ot.alpha + os_.sigma * ot.sigma) / norm2,
                -sigma_d * (os_.alpha * ot.sigma - os_.sigma * ot.alpha) / norm2.sqrt())
    if kind == "identity":
        if bool((ot.sigma <= 0).any()):
            raise ValueError("the identity parametrisation needs t > 0 (sigma_s / sigma_t); use t_min > 0")
        return os_.sigma / ot.sigma, os_.alpha - os_.sigma * ot.alpha / ot.sigma
    raise ValueError(f"unknown IMM parametrisation {kind!r}; choose one of {IMM_PARAMS}")


def denoiser_coefficients(kind: IMMParam, schedule: Schedule, t: Tensor, sigma_d: float) -> tuple[Tensor, Tensor]:
    """(c_skip(t), c_out(t)) [B] float64 of the denoiser g = c_skip x_t + c_out G (the table's left half)."""
    t = t.double()
    if kind == "euler-fm":
        if schedule.name != "flow":
            raise ValueError("the euler-fm parametrisation needs the flow schedule")
        return torch.ones_like(t), -t * sigma_d
    o = schedule(t)
    if kind == "simple-edm":
        norm2 = o.alpha**2 + o.sigma**2
        return o.alpha / norm2, -sigma_d * o.sigma / norm2.sqrt()
    if kind == "identity":
        return torch.zeros_like(t), torch.ones_like(t)
    raise ValueError(f"unknown IMM parametrisation {kind!r}; choose one of {IMM_PARAMS}")


class IMMMap(nn.Module):
    """f_{s,t}(x_t) = c_skip(s,t) x_t + c_out(s,t) G(c_in(t) x_t, t, second) around a two-time backbone.

    Args:
        net: backbone G(x, t, s, cond=...) built with ``two_time=True`` (``nets.MLP`` / ``nets.UNet``).
        schedule: the interpolant's schedule (flow or cosine). sigma_d: data scale (prior std).
        param: ``simple-edm`` (default), ``euler-fm`` (flow only) or ``identity``.
        second_time: the backbone's second time input: ``s`` or the stride ``t - s``.
    """

    def __init__(self, net: nn.Module, schedule: Schedule, *, sigma_d: float = 0.5, param: IMMParam = "simple-edm",
                 second_time: SecondTime = "s") -> None:
        super().__init__()
        if param not in IMM_PARAMS:
            raise ValueError(f"unknown IMM parametrisation {param!r}; choose one of {IMM_PARAMS}")
        if param == "euler-fm" and schedule.name != "flow":
            raise ValueError("the euler-fm parametrisation needs the flow schedule")
        if second_time not in ("s", "stride"):
            raise ValueError(f"second_time must be 's' or 'stride', got {second_time!r}")
        if not sigma_d > 0:
            raise ValueError(f"sigma_d must be positive, got {sigma_d}")
        self.net, self.schedule, self.sigma_d = net, schedule, float(sigma_d)
        self.param, self.second_time = param, second_time

    def raw(self, x_t: Tensor, s: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """The backbone output G [B, ...] (float32 or the net's dtype) at input c_in(t) x_t."""
        o = self.schedule(t.double())
        c_in = 1.0 / (self.sigma_d * (o.alpha**2 + o.sigma**2).sqrt())
        dt = input_dtype(self.net)
        second = s if self.second_time == "s" else t.double() - s.double()
        kw = {} if cond is None else {"cond": cond}
        return self.net((bcast(c_in, x_t) * x_t.double()).to(dt), t.to(dt), second.to(dt), **kw)

    def combine(self, x_t: Tensor, g_raw: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """c_skip(s,t) x_t + c_out(s,t) G in float32 (float64 when x_t is float64), coefficients in float64."""
        c_skip, c_out = map_coefficients(self.param, self.schedule, s, t, self.sigma_d)
        dt = torch.float64 if x_t.dtype == torch.float64 else torch.float32
        return (bcast(c_skip, x_t).to(dt) * x_t.to(dt) + bcast(c_out, x_t).to(dt) * g_raw.to(dt))

    def forward(self, x_t: Tensor, s: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """f_{s,t}(x_t) [B, ...]: x_t [B, ...], target times s [B] <= source times t [B]."""
        return self.combine(x_t, self.raw(x_t, s, t, cond), s, t)

    def guided(self, x_t: Tensor, s: Tensor, t: Tensor, cond: Tensor | None, guidance: float | None,
               null_label: int | None) -> Tensor:
        """f_{s,t} with classifier-free guidance of the network output: c_skip(s,t) x_t + c_out(s,t) G_w,
        G_w = G(null) + w (G(c) - G(null)) (float64), both branches in one doubled batch; plain f without
        ``guidance`` or labels."""
        if guidance is None or cond is None:
            return self(x_t, s, t, cond)
        if null_label is None:
            raise ValueError("classifier-free guidance needs the unconditional label (num_classes)")
        n = x_t.shape[0]
        both = self.raw(torch.cat([x_t, x_t]), torch.cat([s, s]), torch.cat([t, t]),
                        torch.cat([cond, torch.full_like(cond, null_label)])).double()
        c, u = both[:n], both[n:]
        return self.combine(x_t, u + guidance * (c - u), s, t)

    def denoise(self, x_t: Tensor, s: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """g = c_skip(t) x_t + c_out(t) G (the clean estimate the map is a DDIM step of)."""
        c_skip, c_out = denoiser_coefficients(self.param, self.schedule, t, self.sigma_d)
        g = self.raw(x_t, s, t, cond)
        dt = torch.float64 if x_t.dtype == torch.float64 else torch.float32
        return bcast(c_skip, x_t).to(dt) * x_t.to(dt) + bcast(c_out, x_t).to(dt) * g.to(dt)
