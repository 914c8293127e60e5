"""Text metrics for discrete samples (docs/evaluation.md; docs/benchmarks.md text suites).

- ``genppl``: generative perplexity under an evaluator language model, with the exact token-accounting rules of
  docs/evaluation.md (chunks of at most the evaluator context, the first token of each chunk unscored, every
  non-EOS token plus the first EOS counted, later EOS and padding excluded, float64 accumulation, pooled over samples).
- ``unigram_entropy`` / ``mean_entropy``: per-sample Shannon entropy of the token histogram (nats).
- ``distinct_n``: fraction of distinct n-grams over the whole sample set (cross-sample repetition, which unigram
  entropy misses).
- ``ngram_counts`` / ``ngram_tv`` / ``table_tv``: empirical n-gram laws and total variation against exact ones
  (``text-hmm`` and ``grid2d`` suites).
- ``oracle_nll``: per-token NLL of samples under the exact source likelihood.

All statistics are computed and returned in float64. Tokens are int64 ``[n, L]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

ScoreFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "distinct_n",
    "genppl",
    "mean_entropy",
    "ngram_counts",
    "ngram_tv",
    "oracle_nll",
    "table_tv",
    "unigram_entropy",
]


def _tokens(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D token tensor [n, L], got {getattr(x, 'shape', type(x))}")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got {x.dtype}")
    return x.long()


def unigram_entropy(x: Tensor) -> Tensor:
    """Per-sample Shannon entropy (nats) of the histogram of each row's token ids.

    Args:
        x: int64 tokens ``[n, L]``.

    Returns:
        float64 ``[n]``: 0 for a constant row, ``ln L`` for a row of L distinct tokens.
    """
    x = _tokens(x)
    n, length = x.shape
    out = torch.zeros(n, dtype=torch.float64, device=x.device)
    if n == 0 or length == 0:
        return out
    x = x - x.min()
    width = int(x.max()) + 1
    rows = torch.arange(n, device=x.device).unsqueeze(1)
    keys, counts = torch.unique((rows * width + x).reshape(-1), return_counts=True)
    p = counts.double() / length
    return out.index_add_(0, keys // width, -p * p.log())


def mean_entropy(x: Tensor) -> float:
    """Mean over samples of ``unigram_entropy(x)`` (nats); ``x`` is int64 ``[n, L]``."""
    return float(unigram_entropy(x).mean())


def distinct_n(x: Tensor, n: int) -> float:
    """Fraction of distinct n-grams among all n-grams of all samples (windows never cross rows).

    Args:
        x: int64 tokens ``[num, L]`` with ``L >= n``.
        n: n-gram order (>= 1).

    Returns:
        ``#distinct / #total`` over the whole sample set; 1 when no n-gram repeats anywhere.
    """
    x = _tokens(x)
    if n < 1 or x.shape[1] < n:
        raise ValueError(f"distinct_n needs 1 <= n <= L, got n={n}, L={x.shape[1]}")
    grams = x.unfold(1, n, 1).reshape(-1, n)
    if grams.shape[0] == 0:
        raise ValueError("distinct_n: no samples")
    return torch.unique(grams, dim=0).shape[0] / grams.shape[0]


def ngram_counts(x: Tensor, order: int, vocab: int) -> Tensor:
    """Empirical n-gram law pooled over every window position of every row.

    Args:
        x: int64 tokens ``[n, L]`` in ``[0, vocab)``, ``L >= order``.
        order: n-gram order.
        vocab: vocabulary size V.

    Returns:
        float64 ``[V] * order`` summing to 1 (entry ``[a, b, c]`` = frequency of the trigram a b c).
    """
    x = _tokens(x)
    if order < 1 or x.shape[1] < order:
        raise ValueError(f"ngram_counts needs 1 <= order <= L, got order={order}, L={x.shape[1]}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab):
        raise ValueError(f"tokens outside [0, {vocab})")
    grams = x.unfold(1, order, 1).reshape(-1, order)
    if grams.shape[0] == 0:
        raise ValueError("ngram_counts: no samples")
    weights = vocab ** torch.arange(order - 1, -1, -1, device=x.device)
    flat = (grams * weights).sum(1)
    counts = torch.bincount(flat, minlength=vocab**order).double()
    return (counts / counts.sum()).reshape([vocab] * order)


def ngram_tv(x: Tensor, reference: Tensor) -> float:
    """Total variation between the empirical n-gram law of ``x`` and an exact one.

    Args:
        x: int64 tokens ``[n, L]``.
        reference: exact law ``[V] * order`` (sums to 1); the order is ``reference.ndim``.

    Returns:
        ``0.5 * sum |empirical - reference|`` in float64.
    """
    order, vocab = reference.ndim, reference.shape[0]
    if order < 1 or any(s != vocab for s in reference.shape):
        raise ValueError(f"reference must be [V] * order, got {tuple(reference.shape)}")
    emp = ngram_counts(x, order, vocab)
    return 0.5 * float((emp - reference.to(emp.device, torch.float64)).abs().sum())


def table_tv(x: Tensor, table: Tensor) -> float:
    """grid2d ``tv``: total variation between the histogram of pairs and an exact joint table.

    Args:
        x: int64 samples ``[n, 2]`` (x-bin, y-bin).
        table: exact joint ``[V, V]`` summing to 1 (``table[i, j]`` = P(x=i, y=j)).

    Returns:
        ``0.5 * sum |histogram - table|`` in float64.
    """
    x = _tokens(x)
    if x.shape[1] != 2 or table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"table_tv expects x [n, 2] and table [V, V], got {tuple(x.shape)}, {tuple(table.shape)}")
    return ngram_tv(x, table)


def oracle_nll(log_prob_fn: Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 4096) -> float:
    """Mean over samples of ``-log p(x) / L`` under an exact source likelihood.

    Args:
        log_prob_fn: maps int64 ``[b, L]`` to float64 ``[b]`` exact log-probabilities.
        x: int64 tokens ``[n, L]``.
        batch_size: rows per call of ``log_prob_fn``.

    Returns:
        The per-token NLL (nats), float64.
    """
    x = _tokens(x)
    n, length = x.shape
    if n == 0 or length == 0:
        raise ValueError("oracle_nll: empty sample")
    total = 0.0
    for start in range(0, n, batch_size):
        lp = log_prob_fn(x[start:start + batch_size])
        if lp.shape != (min(batch_size, n - start),):
            raise ValueError(f"log_prob_fn must return [b], got {tuple(lp.shape)}")
        total += float(lp.double().sum())
    return -total / (n * length)


def _sequences(tokens: Tensor | Sequence[Sequence[int]], attention_mask: Tensor | None) -> list[Tensor]:
    """Unpadded 1-D int64 sequences from lists, or from a padded tensor with its attention mask."""
    if isinstance(tokens, Tensor):
        if tokens.ndim != 2:
            raise ValueError(f"token tensor must be [n, L], got {tuple(tokens.shape)}")
        tokens = tokens.long().cpu()
        if attention_mask is None:
            return list(tokens.unbind(0))
        if attention_mask.shape != tokens.shape:
            raise ValueError("attention_mask must have the shape of tokens")
        mask = attention_mask.cpu().bool()
        return [row[m] for row, m in zip(tokens, mask)]
    if attention_mask is not None:
        raise ValueError("attention_mask is only accepted with a padded token tensor")
    return [torch.as_tensor(list(s), dtype=torch.long) for s in tokens]


def _chunks(seqs: list[Tensor], context: int, eos_id: int | None, max_length: int | None
            ) -> list[tuple[Tensor, Tensor]]:
    """Split sequences into (chunk ids, counted-position mask) pairs of at most ``context`` tokens."""
    out = []
    for seq in seqs:
        if max_length is not None:
            seq = seq[:max_length]
        if eos_id is None:
            counted = torch.ones(seq.shape, dtype=torch.bool)
        else:
            is_eos = seq == eos_id
            counted = ~is_eos
            first = torch.nonzero(is_eos)
            if first.numel():
                counted[first[0, 0]] = True
        for start in range(0, seq.shape[0], context):
            ids, w = seq[start:start + context], counted[start:start + context].clone()
            w[0] = False  # the first token of a chunk has no context: unscored
            if w.any():
                out.append((ids, w))
    return out


@torch.no_grad()
def genppl(score_fn: ScoreFn, tokens: Tensor | Sequence[Sequence[int]], *, context: int,
           eos_id: int | None = None, attention_mask: Tensor | None = None, max_length: int | None = None,
           batch_size: int = 16, pad_id: int | None = None, device: str | torch.device | None = None
           ) -> tuple[float, float, int]:
    """Generative perplexity of sequences already tokenised for the evaluator (docs/evaluation.md).

    Token accounting, per sequence (after removing padding and truncating to ``max_length``):

    - the sequence is cut into consecutive non-overlapping chunks of at most ``context`` tokens, each scored by
      one evaluator call; the first token of every chunk is unscored (no context);
    - every non-EOS token is counted, plus the first EOS of the sequence (located over the whole sequence,
      position 0 included, so a leading EOS uses up the "first EOS"); later EOS tokens are excluded;
    - padding is excluded through the attention mask, so a pad id equal to EOS is never counted.

    NLLs are ``-log_softmax(logits.double())`` gathered at the next token and summed in float64;
    ``GenPPL = exp(sum NLL / count)`` pooled over all sequences.

    Args:
        score_fn: ``score_fn(ids, attention_mask) -> logits``: ids int64 ``[b, T]`` (right-padded, ``T <= context``),
            attention_mask int64 ``[b, T]`` (1 = real token), logits ``[b, T, V]`` (any float dtype) where
            ``logits[:, j]`` predicts token ``j + 1`` (a causal LM).
        tokens: either a list of variable-length token-id lists (no padding), or a padded int tensor ``[n, L]``
            together with ``attention_mask``; a tensor without a mask is taken as all real tokens.
        context: evaluator context length (maximum chunk length).
        eos_id: the evaluator's EOS id; None disables the EOS rules.
        attention_mask: ``[n, L]`` 0/1 mask for a padded ``tokens`` tensor.
        max_length: truncate each sequence to this many tokens first (None keeps all and chunks the rest).
        batch_size: chunks per evaluator call.
        pad_id: id used to right-pad chunks in a batch (default ``eos_id`` or 0; always masked out).
        device: device for the ids passed to ``score_fn`` (default CPU).

    Returns:
        ``(ppl, total_nll, count)``: GenPPL, the float64 NLL sum (nats) and the number of scored tokens.
    """
    if context < 2:
        raise ValueError(f"context must be >= 2, got {context}")
    chunks = _chunks(_sequences(tokens, attention_mask), context, eos_id, max_length)
    pad = pad_id if pad_id is not None else (eos_id if eos_id is not None else 0)
    total, count = 0.0, 0
    for start in range(0, len(chunks), batch_size):
        group = chunks[start:start + batch_size]
        width = max(ids.shape[0] for ids, _ in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        weight = torch.zeros((len(group), width), dtype=torch.bool)
        for i, (c, w) in enumerate(group):
            ids[i, :c.shape[0]], mask[i, :c.shape[0]], weight[i, :c.shape[0]] = c, 1, w
        ids_d, mask_d = (ids, mask) if device is None else (ids.to(device), mask.to(device))
        logits = score_fn(ids_d, mask_d)
        if logits.ndim != 3 or logits.shape[:2] != ids.shape:
            raise ValueError(f"score_fn must return [b, T, V] logits for ids {tuple(ids.shape)}, "
                             f"got {tuple(logits.shape)}")
        logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
        target = ids_d[:, 1:].unsqueeze(-1)
        nll = -logp.gather(-1, target).squeeze(-1)
        w = weight[:, 1:].to(nll.device)
        total += float(torch.where(w, nll, torch.zeros((), dtype=torch.float64, device=nll.device)).sum())
        count += int(w.sum())
    if count == 0:
        raise ValueError("genppl: no scored tokens (every sequence is shorter than 2 tokens)")
    return math.exp(total / count), total, count
