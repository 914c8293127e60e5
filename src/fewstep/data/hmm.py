"""A random hidden Markov model token source with exact likelihoods (the ``text-hmm`` suite).

Hidden states h_0..h_{L-1} follow a Markov chain (``init``, ``trans``); each emits one token x_i ~ ``emit[h_i]``.
Everything exact is float64: ``log_prob`` runs the scaled forward algorithm, ``ngram_marginals`` propagates the
hidden-state marginal and gives the n-gram law pooled over window positions. ``make_hmm`` draws Dirichlet-sparse
rows and starts the chain in its stationary distribution, so the token process is stationary and every window
position has the same n-gram law (``HMM`` itself accepts any ``init``; pooling is exact for either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def _inverse_cdf(probs: Tensor, u: Tensor) -> Tensor:
    """Categorical draws by inverting row CDFs.

    Args:
        probs: float64 ``[n, K]`` rows summing to 1.
        u: float64 ``[n]`` uniforms in [0, 1).

    Returns:
        int64 ``[n]`` indices k with ``cdf[k-1] <= u < cdf[k]`` (zero-mass categories are never drawn).
    """
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, u.contiguous().unsqueeze(-1), right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class HMM:
    """A hidden Markov model: ``init`` [H], ``trans`` [H, H] (row-stochastic), ``emit`` [H, V]; float64."""

    init: Tensor
    trans: Tensor
    emit: Tensor

    def __post_init__(self) -> None:
        for field in ("init", "trans", "emit"):
            object.__setattr__(self, field, torch.as_tensor(getattr(self, field), dtype=torch.float64))
        h = self.init.shape[0]
        if self.init.ndim != 1 or self.trans.shape != (h, h) or self.emit.ndim != 2 or self.emit.shape[0] != h:
            raise ValueError(f"HMM shapes disagree: init {tuple(self.init.shape)}, trans {tuple(self.trans.shape)}, "
                             f"emit {tuple(self.emit.shape)}")
        for field, p in (("init", self.init), ("trans", self.trans), ("emit", self.emit)):
            if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-9):
                raise ValueError(f"HMM {field} rows must be probability vectors")

    @property
    def states(self) -> int:
        """Number of hidden states H."""
        return self.init.shape[0]

    @property
    def vocab(self) -> int:
        """Vocabulary size V."""
        return self.emit.shape[1]

    def sample(self, n: int, length: int, *, generator: torch.Generator) -> Tensor:
        """Draw sequences by float64 inverse-CDF sampling.

        Args:
            n: number of sequences.
            length: sequence length L.
            generator: the only randomness; ``n * length * 2`` float64 uniforms are drawn at once.

        Returns:
            int64 ``[n, L]`` tokens.
        """
        u = torch.rand(n, length, 2, generator=generator, dtype=torch.float64)
        out = torch.empty(n, length, dtype=torch.long)
        h = _inverse_cdf(self.init.expand(n, -1), u[:, 0, 0].contiguous()) if length else None
        for i in range(length):
            if i:
                h = _inverse_cdf(self.trans[h], u[:, i, 0])
            out[:, i] = _inverse_cdf(self.emit[h], u[:, i, 1])
        return out

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-likelihood by the scaled forward algorithm.

        Args:
            x: int64 ``[n, L]`` tokens in ``[0, V)``.

        Returns:
            float64 ``[n]``: log p(x).
        """
        x = torch.as_tensor(x, dtype=torch.long)
        if x.ndim != 2:
            raise ValueError(f"expected tokens [n, L], got shape {tuple(x.shape)}")
        if x.numel() and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"tokens outside [0, {self.vocab})")
        emit_t = self.emit.T  # [V, H]
        logp = torch.zeros(x.shape[0], dtype=torch.float64)
        alpha = self.init.expand(x.shape[0], -1)
        for i in range(x.shape[1]):
            if i:
                alpha = alpha @ self.trans
            alpha = alpha * emit_t[x[:, i]]
            c = alpha.sum(-1, keepdim=True)
            logp += c.squeeze(-1).log()
            alpha = alpha / c
        return logp

    def state_marginals(self, length: int) -> Tensor:
        """Hidden-state marginals ``P(h_i)``, float64 ``[length, H]``."""
        rows, m = [], self.init
        for i in range(length):
            if i:
                m = m @ self.trans
            rows.append(m)
        return torch.stack(rows) if rows else torch.empty(0, self.states, dtype=torch.float64)

    def ngram_marginals(self, length: int, order: int) -> Tensor:
        """Exact n-gram law pooled (averaged) over the ``length - order + 1`` windows of a length-``length`` sequence.

        The window law is linear in the hidden marginal of its first position, so pooling equals one window
        evaluated at the averaged marginal ``mean_{i <= length - order} P(h_i)``; the joint of (h_j, x_i..x_j) is
        then extended one token at a time.

        Args:
            length: sequence length L.
            order: n-gram order n, ``1 <= n <= L``.

        Returns:
            float64 tensor of shape ``[V] * order`` summing to 1; entry (a, b, ...) is the fraction of windows,
            in expectation, reading a, b, ....
        """
        if not 1 <= order <= length:
            raise ValueError(f"need 1 <= order <= length, got order={order}, length={length}")
        m = self.state_marginals(length - order + 1).mean(0)  # [H]
        joint = m[:, None] * self.emit  # [H, V]: P(h_j, x_i..x_j), tokens flattened
        for _ in range(order - 1):
            joint = ((self.trans.T @ joint)[:, :, None] * self.emit[:, None, :]).reshape(self.states, -1)
        return joint.sum(0).reshape([self.vocab] * order)


def _dirichlet_rows(rng: np.random.Generator, rows: int, size: int, concentration: float, floor: float) -> Tensor:
    """``rows`` Dirichlet(concentration) vectors of length ``size``, floored, renormalised; float64 ``[rows, size]``."""
    g = rng.gamma(concentration, 1.0, size=(rows, size))
    g[g.sum(1) == 0, :] = 1.0  # an all-zero gamma row (possible for tiny concentrations) becomes uniform
    p = g / g.sum(1, keepdims=True) + floor
    return torch.from_numpy(p / p.sum(1, keepdims=True))


def stationary(trans: Tensor) -> Tensor:
    """Stationary law ``pi = pi @ trans`` of an irreducible row-stochastic ``[H, H]`` matrix; float64 ``[H]``."""
    h = trans.shape[0]
    a = trans.to(torch.float64).T - torch.eye(h, dtype=torch.float64)
    a[-1] = 1.0
    b = torch.zeros(h, dtype=torch.float64)
    b[-1] = 1.0
    pi = torch.linalg.solve(a, b).clamp_(min=0)
    return pi / pi.sum()


def make_hmm(states: int = 16, vocab: int = 32, *, trans_concentration: float = 0.1,
             emit_concentration: float = 0.1, floor: float = 1e-4, seed: int = 0) -> HMM:
    """A random HMM with Dirichlet-sparse transition and emission rows.

    Rows are Dirichlet(concentration) draws from ``np.random.default_rng(seed)`` (transitions first, then
    emissions), plus ``floor`` and renormalised, so every probability is > 0 and the chain is irreducible and
    aperiodic. ``init`` is the stationary distribution of ``trans`` (the token process is stationary).

    Args:
        states: hidden states H.
        vocab: vocabulary size V.
        trans_concentration: Dirichlet concentration of each transition row (small = sparse).
        emit_concentration: Dirichlet concentration of each emission row.
        floor: added to every probability before renormalising.
        seed: numpy seed; the same arguments give the same HMM on every machine.

    Returns:
        The HMM (float64 ``init [H]``, ``trans [H, H]``, ``emit [H, V]``).
    """
    if states < 1 or vocab < 1:
        raise ValueError("states and vocab must be positive")
    rng = np.random.default_rng(seed)
    trans = _dirichlet_rows(rng, states, states, trans_concentration, floor)
    emit = _dirichlet_rows(rng, states, vocab, emit_concentration, floor)
    return HMM(stationary(trans), trans, emit)


_NAME = re.compile(r"hmm-v(\d+)-l(\d+)(?:-h(\d+))?")


def text_hmm(name: str, *, seed: int = 0) -> tuple[HMM, int]:
    """Parse a ``text-hmm`` source name ``hmm-v{V}-l{L}[-h{H}]`` (default H = 16).

    Args:
        name: e.g. ``"hmm-v32-l64"`` or ``"hmm-v64-l32-h8"``.
        seed: passed to ``make_hmm``.

    Returns:
        ``(make_hmm(H, V, seed=seed), L)``.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown text-hmm source {name!r}; expected 'hmm-v<vocab>-l<length>[-h<states>]'")
    vocab, length = int(match.group(1)), int(match.group(2))
    states = int(match.group(3)) if match.group(3) else 16
    if min(vocab, length, states) < 1:
        raise ValueError(f"text-hmm source {name!r}: vocab, length and states must be positive")
    return make_hmm(states, vocab, seed=seed), length
