"""A bidirectional transformer over tokens with adaLN time conditioning (a small DiT for text).

Input: hard tokens z [B, L] (int64) or a soft input [B, L, V] (probabilities; embedded as p @ E). Output:
raw logits [B, L, V_out]; the denoiser wrapper (``denoisers.categorical``) turns them into log-probabilities.

Time conditioning (``time_conditioned=True``) follows DiT's adaLN-Zero (Peebles & Xie 2023; the MDLM/Duo
DiTs use the same pattern): each block's LayerNorms are modulated by shift/scale from the time embedding and
its residual branches are gated, all modulation weights zero-initialised. An optional second time input s is
added to the t embedding (two-time students). ``time_conditioned=False`` gives a time-free denoiser (MDLM
shows time conditioning is unnecessary for masked diffusion), which enables exact caching in samplers.

Token and positional embeddings share one initialisation scale: a calibration run with positional
embeddings far smaller than token embeddings produced a context-blind teacher (docs/methods/idlm.md).

Latent noise (``latent_dim > 0``): an extra input eps [B, L, latent_dim] enters through a zero-initialised
linear map added to the token embeddings (docs/methods/idlm.md, "one-step latent mixture"), so a student
built from a teacher's weights starts exactly at the teacher and can learn to use the noise. Zero is a saddle,
though: while the map is zero the output ignores eps, so the gradient of any loss w.r.t. the map, a sum of
(dL/dh) eps^T with dL/dh independent of eps, has expectation zero and the map only random-walks (on text-hmm
it stayed near zero through a whole IDLM run; benchmarks/idlm.md, the latent-noise student off its saddle).
``latent_init_std > 0`` starts it off the saddle.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fewstep.nets.attention import SelfAttention
from fewstep.nets.embeddings import TimeEmbedding


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, *, cond: bool, dropout: float, impl: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not cond)
        self.attn = SelfAttention(dim, heads, impl=impl)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not cond)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)
        self.mod = nn.Linear(dim, 6 * dim) if cond else None
        if self.mod is not None:
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(self, h: Tensor, emb: Tensor | None) -> Tensor:
        if self.mod is None:
            h = h + self.drop(self.attn(self.norm1(h)))
            return h + self.drop(self.mlp(self.norm2(h)))
        sh1, sc1, g1, sh2, sc2, g2 = self.mod(emb).unsqueeze(1).chunk(6, dim=-1)
        h = h + (1 + g1) * self.drop(self.attn(self.norm1(h) * (1 + sc1) + sh1))
        return h + (1 + g2) * self.drop(self.mlp(self.norm2(h) * (1 + sc2) + sh2))


class TextDiT(nn.Module):
    """Tokens [B, L] (or soft [B, L, V_in]), t [B], optional s [B] -> logits [B, L, V_out].

    Args:
        vocab_in: input vocabulary (masked: N + 1 with the mask). vocab_out: output width (usually vocab_in).
        length: maximum sequence length (learned positional embeddings).
        dim, depth, heads: width, number of blocks, attention heads.
        time_conditioned: adaLN conditioning on t (False: a time-free network; t is ignored).
        two_time: accept a second time s (needs time_conditioned).
        dropout: dropout on the residual branches. attn_impl: ``sdpa`` or ``math``.
        latent_dim: width of an optional latent-noise input (0: none).
        latent_init_std: std of the latent map's normal initialisation (0: zeros, the teacher's function).
    """

    def __init__(self, vocab_in: int, vocab_out: int, length: int, *, dim: int = 128, depth: int = 4, heads: int = 4,
                 time_conditioned: bool = True, two_time: bool = False, dropout: float = 0.0,
                 attn_impl: str = "sdpa", latent_dim: int = 0, latent_init_std: float = 0.0) -> None:
        super().__init__()
        if two_time and not time_conditioned:
            raise ValueError("a second time input needs time_conditioned=True")
        self.vocab_in, self.vocab_out, self.length = vocab_in, vocab_out, length
        self.time_conditioned, self.two_time = time_conditioned, two_time
        self.tok = nn.Embedding(vocab_in, dim)
        self.pos = nn.Parameter(torch.empty(length, dim))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)  # same scale as the tokens (see module docstring)
        self.emb = TimeEmbedding(dim, two_time=two_time) if time_conditioned else None
        self.blocks = nn.ModuleList(_Block(dim, heads, cond=time_conditioned, dropout=dropout, impl=attn_impl)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=not time_conditioned)
        self.final_mod = nn.Linear(dim, 2 * dim) if time_conditioned else None
        if self.final_mod is not None:
            nn.init.zeros_(self.final_mod.weight)
            nn.init.zeros_(self.final_mod.bias)
        self.head = nn.Linear(dim, vocab_out)
        self.latent_dim = latent_dim
        self.latent = nn.Linear(latent_dim, dim, bias=False) if latent_dim > 0 else None
        if latent_init_std < 0:
            raise ValueError(f"latent_init_std must be >= 0, got {latent_init_std}")
        if self.latent is not None:
            nn.init.normal_(self.latent.weight, std=latent_init_std) if latent_init_std > 0 else \
                nn.init.zeros_(self.latent.weight)

    def forward(self, z: Tensor, t: Tensor, s: Tensor | None = None, cond: Tensor | None = None,
                latent: Tensor | None = None) -> Tensor:
        if z.dtype == torch.long:
            b, n = z.shape
            h = self.tok(z)
        else:
            b, n, v = z.shape
            if v != self.vocab_in:
                raise ValueError(f"soft input has width {v}, expected {self.vocab_in}")
            h = z.to(self.tok.weight.dtype) @ self.tok.weight
        if n > self.length:
            raise ValueError(f"sequence length {n} exceeds the model's {self.length}")
        h = h + self.pos[:n]
        if latent is not None:
            if self.latent is None or latent.shape != (b, n, self.latent_dim):
                raise ValueError(f"latent noise must be [B, L, latent_dim] = {(b, n, self.latent_dim)} "
                                 f"(the net was built with latent_dim={self.latent_dim}), got {tuple(latent.shape)}")
            h = h + self.latent(latent.to(h.dtype))
        emb = None
        if self.emb is not None:
            emb = nn.functional.silu(self.emb(t, s))
        elif s is not None:
            raise ValueError("this network has no time input (time_conditioned=False), so no second time either")
        for blk in self.blocks:
            h = blk(h, emb)
        h = self.norm(h)
        if self.final_mod is not None:
            shift, scale = self.final_mod(emb).unsqueeze(1).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        return self.head(h)
