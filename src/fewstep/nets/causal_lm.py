"""A small GPT-style causal transformer over tokens (the text-char evaluator).

The design follows the well-known recipe popularised by nanoGPT (Andrej Karpathy, MIT licence): learned token
and positional embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final LayerNorm and
an output head tied to the token embedding, GPT-2 style initialisation (std 0.02, residual projections scaled
by 1/sqrt(2 * layers)). This is an independent implementation.

Positional embeddings are initialised at the same scale as token embeddings (std 0.02): with a much smaller
positional scale a small model can stay context-blind for a long time (docs/methods/idlm.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalLM"]


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        h = h + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return h + self.drop(self.out(F.gelu(self.fc(self.ln2(h)))))


class CausalLM(nn.Module):
    """Decoder-only transformer: ``forward(ids [B, T]) -> logits [B, T, V]`` float32, ``T <= length``.

    ``logits[:, j]`` is the (unnormalised) prediction of token ``j + 1`` given tokens ``0..j``.

    Args:
        vocab: vocabulary size V.
        length: maximum context (number of positional embeddings).
        d: model width (divisible by ``heads``).
        layers: number of transformer blocks.
        heads: attention heads.
        dropout: dropout rate (0 by default).
        generator: draws the initial weights (None uses the global RNG, like torch modules).
    """

    def __init__(self, vocab: int, length: int, d: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.0, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"d={d} is not divisible by heads={heads}")
        self.vocab, self.length = vocab, length
        # with a generator, torch's default initialisers must not advance the global RNG either
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(length, d)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(_Block(d, heads, dropout) for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.ndim == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, std=std, generator=generator)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``[B, T, V]`` (float32) for token ids ``[B, T]`` (int64)."""
        if ids.ndim != 2:
            raise ValueError(f"CausalLM expects ids [B, T], got {tuple(ids.shape)}")
        t = ids.shape[1]
        if t > self.length:
            raise ValueError(f"sequence length {t} exceeds the model context {self.length}")
        pos = torch.arange(t, device=ids.device)
        h = self.drop(self.tok(ids) + self.pos(pos))
        for blk in self.blocks:
            h = blk(h)
        return F.linear(self.ln_f(h), self.tok.weight).float()
