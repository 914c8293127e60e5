"""Residual MLP backbone for vector data (2-D toys, 8-D GMM, flattened images)."""

from __future__ import annotations

from torch import Tensor, nn

from fewstep.nets.embeddings import TimeEmbedding


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mod = nn.Linear(width, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.mod(emb).chunk(2, dim=1)
        y = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(self.act(self.fc1(self.act(y))))


class MLP(nn.Module):
    """x [B, dim] (or [B, ...] flattened), t [B], optional s [B] and labels [B] -> [B, ...] like x.

    Args:
        dim: number of features per sample.
        width: hidden width. depth: number of residual blocks.
        two_time: accept a second time ``s`` (two-time models such as IMM).
        num_classes: >0 enables label conditioning.
    """

    def __init__(self, dim: int, *, width: int = 256, depth: int = 3, two_time: bool = False,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.dim = dim
        self.emb = TimeEmbedding(width, two_time=two_time, num_classes=num_classes)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        shape = x.shape
        if x.ndim < 2 or x[0].numel() != self.dim:
            raise ValueError(f"MLP expects [B, ...] with {self.dim} features per sample, got {tuple(shape)}")
        h = self.inp(x.reshape(shape[0], -1))
        emb = nn.functional.silu(self.emb(t, s, cond))
        for blk in self.blocks:
            h = blk(h, emb)
        return self.out(self.out_norm(h)).reshape(shape)
