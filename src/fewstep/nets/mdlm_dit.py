"""The diffusion transformer of the public MDLM / Duo language models, with their parameter names.

Written for fewstep from the published architecture (Sahoo et al. 2024, MDLM; Sahoo et al. 2025, Duo; both
Apache-2.0 code at github.com/kuleshov-group/mdlm and github.com/s-sahoo/duo), so that their checkpoints load
key for key: a bidirectional pre-LayerNorm transformer over token embeddings with rotary position embeddings
(GPT-NeoX half-split, base 10,000, on the whole head), adaLN-zero conditioning on the noise level
(a sinusoidal embedding of ``sigma``, 256 frequencies, through a two-layer MLP, then SiLU), and an adaLN-modulated
output layer. LayerNorms have a weight and no bias and run in float32.

Parameter names (``state_dict`` keys) are those of the reference ``DIT`` module:
``vocab_embed.embedding``, ``sigma_map.mlp.{0,2}``, ``rotary_emb.inv_freq``,
``blocks.N.{norm1,attn_qkv,attn_out,norm2,mlp.0,mlp.2,adaLN_modulation}``,
``output_layer.{norm_final,linear,adaLN_modulation}``. The numerical equivalence with the reference code is
tested on a fixture of its outputs (``tests/nets/test_mdlm_dit.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

FREQUENCIES = 256
"""Size of the sinusoidal noise-level embedding."""


class _Embedding(nn.Module):
    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab, dim))
        nn.init.normal_(self.embedding, std=dim**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embedding[tokens]


class _LayerNorm(nn.Module):
    """LayerNorm without bias, computed in float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.float(), [x.shape[-1]]) * self.weight[None, None, :]


class _NoiseEmbedding(nn.Module):
    """sigma [B] -> [B, cond]: cos/sin of sigma times 256 geometric frequencies (period 1 to 10,000), then an MLP."""

    def __init__(self, cond: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCIES, cond), nn.SiLU(), nn.Linear(cond, cond))

    def forward(self, sigma: Tensor) -> Tensor:
        half = FREQUENCIES // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
        args = sigma[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class _Rotary(nn.Module):
    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))

    def forward(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(cos, sin), each [1, L, 1, head_dim] (the frequencies repeated for the two halves)."""
        pos = torch.arange(length, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, half-split convention: x cos + (-x2, x1) sin for x = (x1, x2) along the head dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, cond: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1 = _LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = _LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.adaLN_modulation = nn.Linear(cond, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: Tensor, rot: tuple[Tensor, Tensor], c: Tensor) -> Tensor:
        b, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.attn_qkv(h).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        q, k = _rotate(q, *rot), _rotate(k, *rot)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        a = a.transpose(1, 2).reshape(b, n, d)
        p = self.dropout if self.training else 0.0
        x = x + gate1 * F.dropout(self.attn_out(a), p, self.training)
        return x + gate2 * F.dropout(self.mlp(self.norm2(x) * (1 + scale2) + shift2), p, self.training)


class _Final(nn.Module):
    def __init__(self, dim: int, vocab: int, cond: int) -> None:
        super().__init__()
        self.norm_final = _LayerNorm(dim)
        self.linear = nn.Linear(dim, vocab)
        self.adaLN_modulation = nn.Linear(cond, 2 * dim)
        for layer in (self.linear, self.adaLN_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class MDLMDiT(nn.Module):
    """tokens [B, L] (int64), sigma [B] -> logits [B, L, vocab].

    Args:
        vocab: vocabulary size of the checkpoint (GPT-2's 50,257 plus the mask token for MDLM: 50,258).
        dim, heads, blocks, cond: ``hidden_size``, ``n_heads``, ``n_blocks``, ``cond_dim`` of the checkpoint.
        dropout: residual dropout (training only).
    """

    def __init__(self, vocab: int, *, dim: int = 768, heads: int = 12, blocks: int = 12, cond: int = 128,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"hidden size {dim} must split into {heads} heads of even size")
        self.vocab = vocab
        self.vocab_embed = _Embedding(vocab, dim)
        self.sigma_map = _NoiseEmbedding(cond)
        self.rotary_emb = _Rotary(dim // heads)
        self.blocks = nn.ModuleList(_Block(dim, heads, cond, dropout) for _ in range(blocks))
        self.output_layer = _Final(dim, vocab, cond)

    def forward(self, tokens: Tensor, sigma: Tensor) -> Tensor:
        if tokens.ndim != 2 or sigma.shape != tokens.shape[:1]:
            raise ValueError(f"MDLMDiT takes tokens [B, L] and sigma [B], got {tuple(tokens.shape)} and "
                             f"{tuple(sigma.shape)}")
        return self.forward_embedded(self.vocab_embed(tokens), sigma)

    def forward_embedded(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The network after its token embedding: x [B, L, dim], sigma [B] -> logits [B, L, vocab]."""
        c = F.silu(self.sigma_map(sigma))
        rot = self.rotary_emb(x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, rot, c)
        return self.output_layer(x, c)


CONFIG_KEYS = ("vocab_size", "hidden_size", "n_heads", "n_blocks", "cond_dim", "length", "time_conditioning")
"""The sizes an imported MDLM / Duo transformer is rebuilt from (``NetCfg.imported``)."""


class MDLMTokenNet(nn.Module):
    """An :class:`MDLMDiT` as a fewstep token backbone ``net(z, t, s=None) -> logits``.

    The reference models are conditioned on the noise level sigma = -log alpha(t) of their keep schedule (MDLM's
    public OWT model is not time-conditioned: sigma = 0). ``schedule`` is the process's keep schedule, so the
    network sees the sigma it was trained with at every time of the process. Soft inputs [B, L, V] (probabilities)
    embed as their expectation of the token embeddings.

    Args:
        config: the sizes (:data:`CONFIG_KEYS`).
        schedule: the keep schedule alpha(t) of the process (``processes.categorical``).
    """

    def __init__(self, config: dict, schedule) -> None:
        super().__init__()
        missing = [k for k in CONFIG_KEYS if k not in config]
        if missing:
            raise ValueError(f"the MDLM / Duo model config lacks {', '.join(missing)}")
        self.dit = MDLMDiT(int(config["vocab_size"]), dim=int(config["hidden_size"]), heads=int(config["n_heads"]),
                           blocks=int(config["n_blocks"]), cond=int(config["cond_dim"]),
                           dropout=float(config.get("dropout", 0.0)))
        self.length = int(config["length"])
        self.time_conditioned = bool(config["time_conditioning"])
        self.schedule = schedule

    def forward(self, z: Tensor, t: Tensor, s: Tensor | None = None) -> Tensor:
        if s is not None:
            raise ValueError("an MDLM / Duo transformer takes one time")
        if z.shape[1] > self.length:
            raise ValueError(f"sequence length {z.shape[1]} exceeds the model's {self.length}")
        if self.time_conditioned:
            sigma = -torch.log(self.schedule.alpha(t.double()).clamp_min(1e-12)).float()
        else:
            sigma = torch.zeros(z.shape[0], device=z.device)
        if z.dtype == torch.long:
            return self.dit(z, sigma)
        emb = self.dit.vocab_embed.embedding
        if z.shape[-1] != emb.shape[0]:
            raise ValueError(f"soft input has width {z.shape[-1]}, expected {emb.shape[0]}")
        x = z.to(emb.dtype) @ emb
        return self.dit.forward_embedded(x, sigma)
