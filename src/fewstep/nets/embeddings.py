"""Time and label embeddings: sinusoidal features of t (and an optional second time s) through MLPs."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal(t: Tensor, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features [B, dim] of ``scale * t`` for t [B] (transformer-style frequencies)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeEmbedding(nn.Module):
    """Embeds t, an optional second time s, and optional class labels into one vector [B, dim].

    The second time gets its own sinusoidal features and 2-layer MLP whose output is *added* to the t
    embedding (as in IMM); with ``two_time=False`` passing ``s`` is an error. Labels use ``num_classes + 1``
    rows, the last one meaning "unconditional".
    """

    def __init__(self, dim: int, *, two_time: bool = False, num_classes: int = 0, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.t_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.s_mlp = (
            nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim)) if two_time else None
        )
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None
        self.num_classes = num_classes

    def forward(self, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """Embedding [B, dim], or [1, dim] when every row shares (t, s) and there are no labels (saves
        compute in samplers, where the whole batch is at one time; broadcasting makes it transparent)."""
        if cond is None and t.numel() > 1 and bool((t == t[0]).all()) and (s is None or bool((s == s[0]).all())):
            t, s = t[:1], (None if s is None else s[:1])
        emb = self.t_mlp(sinusoidal(t, self.freq_dim))
        if s is not None:
            if self.s_mlp is None:
                raise ValueError("this backbone was built without a second time input (two_time=False)")
            emb = emb + self.s_mlp(sinusoidal(s, self.freq_dim))
        if cond is not None:
            if self.label is None:
                raise ValueError("this backbone was built without class conditioning (num_classes=0)")
            emb = emb + self.label(cond)
        return emb
