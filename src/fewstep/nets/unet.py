"""A small U-Net for images (8x8 digits up to 28x28/32x32), with time (and optional second time) conditioning.

Resolution levels halve the spatial size; each level has ``blocks`` residual blocks with GroupNorm,
SiLU and an additive (scale, shift) time modulation; self-attention is optional at the lowest level.
Odd sizes (e.g. 7x7 from 28x28) are handled by padding in the down path and cropping on the way up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fewstep.nets.embeddings import TimeEmbedding


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.mod = nn.Linear(emb_dim, 2 * cout)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.mod(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.n2(h) * (1 + scale) + shift
        h = self.c2(self.drop(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, c: int, heads: int = 4) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        att = torch.softmax(q.transpose(-1, -2) @ k / (c // self.heads) ** 0.5, dim=-1)  # [b, H, hw, hw]
        out = (v @ att.transpose(-1, -2)).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """x [B, C, H, W], t [B], optional s [B] and labels [B] -> [B, C, H, W].

    Args:
        channels: image channels. base: channels at full resolution. mults: channel multiplier per level.
        blocks: residual blocks per level. attention: self-attention at the lowest resolution.
        two_time: second time input. num_classes: label conditioning (0 = off). dropout: in res blocks.
    """

    def __init__(self, channels: int = 1, *, base: int = 32, mults: tuple[int, ...] = (1, 2, 2), blocks: int = 1,
                 attention: bool = True, two_time: bool = False, num_classes: int = 0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        emb_dim = 4 * base
        self.channels = channels
        self.emb = TimeEmbedding(emb_dim, two_time=two_time, num_classes=num_classes)
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        chans = [base]
        c = base
        for i, m in enumerate(mults):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, base * m, emb_dim, dropout))
                c = base * m
                chans.append(c)
            self.down.append(level)
            if i < len(mults) - 1:
                chans.append(c)
        self.downsample = nn.ModuleList(nn.Conv2d(base * m, base * m, 3, stride=2, padding=1) for m in mults[:-1])
        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, dropout)
        self.up = nn.ModuleList()
        for m in reversed(mults):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(ResBlock(c + chans.pop(), base * m, emb_dim, dropout))
                c = base * m
            self.up.append(level)
        self.out_norm = _norm(c)
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"UNet expects [B, {self.channels}, H, W], got {tuple(x.shape)}")
        emb = F.silu(self.emb(t, s, cond))
        h = self.inp(x)
        skips = [h]
        for i, level in enumerate(self.down):
            for blk in level:
                h = blk(h, emb)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for j, level in enumerate(self.up):
            if j > 0:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            for blk in level:
                skip = skips.pop()
                h = blk(torch.cat([h[..., : skip.shape[-2], : skip.shape[-1]], skip], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))
