"""Exact denoisers of enumerable discrete sources (tests only): the masked posterior p(x^l | visible tokens),
the uniform leave-one-out conditional p(x^l | z_t^{-l}) and the uniform posterior mean p(x^l | z_t)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn


def all_sequences(n: int, length: int) -> Tensor:
    """[n^length, length] int64, lexicographic."""
    return torch.tensor(list(itertools.product(range(n), repeat=length)), dtype=torch.long)


class ExactDenoiser(nn.Module):
    """Exact x0 log-probabilities for data with joint ``p`` [N^L] (lexicographic over ``all_sequences``).

    mode: ``masked`` (SUBS output), ``loo`` (uniform leave-one-out) or ``mean`` (uniform posterior mean).
    """

    def __init__(self, p: Tensor, n: int, length: int, process, *, mode: str = "masked",
                 time_conditioned: bool | None = None) -> None:
        super().__init__()
        self.p, self.n, self.length, self.process, self.mode = p.double(), n, length, process, mode
        self.seqs = all_sequences(n, length)
        self.time_conditioned = mode != "masked" if time_conditioned is None else time_conditioned
        self.calls = 0
        self.rows = 0

    def forward(self, z: Tensor, t: Tensor, *, s: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        self.calls += 1
        self.rows += z.shape[0]
        seqs, n = self.seqs, self.n
        b, length = z.shape
        out = torch.zeros(b, length, n, dtype=torch.float64)
        if self.mode == "masked":
            m = self.process.mask_id
            vis = z != m  # [b, L]
            match = (seqs[None] == z[:, None]) | ~vis[:, None]  # [b, S, L]
            w = self.p[None] * match.all(-1).double()  # [b, S]
        else:
            q = self.process.forward_probs(seqs[None].expand(b, -1, -1).reshape(-1, length),
                                           t.double().repeat_interleave(seqs.shape[0]))  # [b*S, L, N]
            q = q.reshape(b, seqs.shape[0], length, n)
            qz = q.gather(-1, z[:, None, :, None].expand(-1, seqs.shape[0], -1, 1)).squeeze(-1)  # [b, S, L]
        for pos in range(length):
            if self.mode != "masked":
                lik = qz.clone()
                if self.mode == "loo":
                    lik[..., pos] = 1.0
                w = self.p[None] * lik.prod(-1)
            out[:, pos] = torch.stack([w[:, seqs[:, pos] == v].sum(1) for v in range(n)], 1)
        out = out / out.sum(-1, keepdim=True)
        logp = out.clamp_min(1e-300).log()
        if self.mode == "masked":
            logits = torch.cat([logp, torch.zeros(b, length, 1, dtype=torch.float64)], -1)
            return _subs64(logits, z, self.process.mask_id)
        return logp


def _subs64(logits: Tensor, z: Tensor, mask_id: int) -> Tensor:
    """SUBS in float64 (the library's ``subs`` returns float32; exactness tests need float64)."""
    logits = logits.clone()
    logits[..., mask_id] = float("-inf")
    logp = torch.log_softmax(logits, -1)
    carry = torch.full_like(logp, float("-inf")).scatter_(-1, z.unsqueeze(-1), 0.0)
    return torch.where((z != mask_id).unsqueeze(-1), carry, logp)
