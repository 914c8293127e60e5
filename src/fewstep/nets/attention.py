"""Multi-head self-attention with PyTorch SDPA and a plain (math) fallback.

The fallback is used where SDPA is unavailable or unsuitable (forward-mode AD, debugging) and is the
reference the SDPA path is tested against. No CUDA-only imports.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, impl: str = "sdpa") -> Tensor:
    """softmax(q k^T / sqrt(d)) v for q, k, v [B, H, L, d] -> [B, H, L, d]; ``impl`` is ``sdpa`` or ``math``."""
    if impl == "sdpa" and hasattr(nn.functional, "scaled_dot_product_attention"):
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if impl not in ("sdpa", "math"):
        raise ValueError(f"unknown attention impl {impl!r}; use 'sdpa' or 'math'")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return scores.softmax(-1) @ v


class SelfAttention(nn.Module):
    """Bidirectional (or causal) multi-head self-attention over [B, L, d]."""

    def __init__(self, dim: int, heads: int, *, causal: bool = False, impl: str = "sdpa") -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.causal, self.impl = heads, causal, impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: Tensor) -> Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, causal=self.causal, impl=self.impl)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))
