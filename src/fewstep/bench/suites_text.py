"""Benchmark evaluators of the discrete suites (docs/benchmarks.md: text-hmm, grid2d, text-char).

- ``HMMEval`` (text-hmm): ``oracle_nll`` (exact source NLL per token; lower than the source's own value means
  collapse), ``entropy`` (mean per-sample unigram entropy), ``ngram_tv1..3`` (TV of pooled 1/2/3-gram
  frequencies against the exact forward-algorithm marginals) and ``distinct2`` (cross-sample repetition).
- ``GridEval`` (grid2d): ``tv`` between the histogram of the samples and the exact 32 x 32 table (the ``data``
  row is ``tv_floor``: the same statistic for as many true samples).
- ``CharEval`` (text-char): ``genppl`` under the library's causal character evaluator (trained once with a fixed
  seed and cached), always with ``entropy`` and ``distinct4``; the ``data`` rows score held-out text windows.

Each evaluator also returns ``<metric>__se``: an in-sample standard error (per-sample spread / sqrt(n)), used
when a configuration is sampled once (``bench.runner`` prefers the spread over repeats when there are several).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from fewstep.bench.evaluation import DatasetEval, MetricSpec
from fewstep.config import DataCfg
from fewstep.data.source import seeded

TEXT_BENCH_DATA: dict[str, DataCfg] = {
    "hmm-v32-l64": DataCfg(name="text-hmm", vocab=32, length=64, states=8, concentration=0.1),
    "grid2d": DataCfg(name="grid2d", length=2),
    "tinyshakespeare-l128": DataCfg(name="text-char", length=128),
}
"""Datasets of the discrete suites by their benchmark name (``build.datasets.dataset_id``)."""


def _se(values: Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else 0.0


class HMMEval(DatasetEval):
    """text-hmm: exact oracle NLL, entropy, n-gram TVs against the exact marginals."""

    primary = "oracle_nll"
    metrics = (MetricSpec("oracle_nll", True), MetricSpec("entropy", False), MetricSpec("ngram_tv1", True),
               MetricSpec("ngram_tv2", True), MetricSpec("ngram_tv3", True), MetricSpec("distinct2", False))
    process = "none"

    def __init__(self, name: str, cfg: DataCfg, n_samples: int = 4000) -> None:
        from fewstep.build.datasets import make_hmm_for

        self.name, self.cfg, self.n_samples = name, cfg, n_samples
        self.shape = (cfg.length,)
        self.hmm = make_hmm_for(cfg)
        self.reference = {k: self.hmm.ngram_marginals(cfg.length, k) for k in (1, 2, 3)}

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        return self.hmm.sample(n, self.cfg.length, generator=seeded(seed, repeat, 2))

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.text import distinct_n, ngram_tv, unigram_entropy

        x = x.long()
        nll = -self.hmm.log_prob(x) / x.shape[1]
        ent = unigram_entropy(x)
        out = {"oracle_nll": float(nll.mean()), "oracle_nll__se": _se(nll), "entropy": float(ent.mean()),
               "entropy__se": _se(ent)}
        for k in (1, 2, 3):
            out[f"ngram_tv{k}"] = ngram_tv(x, self.reference[k])
        out["distinct2"] = distinct_n(x, 2)
        return out

    def save_samples(self, x: Tensor, path: Path, title: str) -> None:
        """The first 16 samples as token ids, one per line."""
        rows = [" ".join(str(int(v)) for v in r) for r in x[:16]]
        path.with_suffix(".txt").write_text(f"# {title}\n" + "\n".join(rows) + "\n")


class GridEval(DatasetEval):
    """grid2d: TV of the sample histogram against the exact joint table."""

    primary = "tv"
    metrics = (MetricSpec("tv", True), MetricSpec("tv_product", True))
    process = "none"

    def __init__(self, name: str, cfg: DataCfg, n_samples: int = 20000) -> None:
        from fewstep.data.grid2d import grid2d_table

        self.name, self.cfg, self.n_samples = name, cfg, n_samples
        self.shape = (2,)
        self.table = grid2d_table(cfg.grid, bins=32)

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        from fewstep.data.grid2d import sample_table

        return sample_table(self.table, n, generator=seeded(seed, repeat, 2))

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        """``tv`` and ``tv_product`` (TV of the product of the samples' two marginals against the table: how
        much of the joint structure the samples carry, 0.5 for independent tokens with exact marginals)."""
        from fewstep.data.grid2d import histogram
        from fewstep.metrics.text import table_tv

        x = x.long()
        hist = histogram(x, tuple(self.table.shape))
        prod = torch.outer(hist.sum(1), hist.sum(0))
        return {"tv": table_tv(x, self.table), "tv_product": 0.5 * float((prod - self.table).abs().sum())}

    def save_samples(self, x: Tensor, path: Path, title: str) -> None:
        """The sample histogram beside the exact table (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from fewstep.data.grid2d import histogram

        fig, axes = plt.subplots(1, 2, figsize=(6, 3))
        for ax, img, name in ((axes[0], histogram(x.long(), tuple(self.table.shape)), "samples"),
                              (axes[1], self.table, "exact")):
            ax.imshow(img.numpy(), cmap="magma", origin="lower")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        fig.suptitle(title, fontsize=9)
        fig.savefig(path.with_suffix(".png"), dpi=80, bbox_inches="tight")
        plt.close(fig)


class CharEval(DatasetEval):
    """text-char: GenPPL under the cached causal evaluator, entropy and distinct-4."""

    primary = "genppl"
    metrics = (MetricSpec("genppl", True), MetricSpec("entropy", False), MetricSpec("distinct4", False))
    process = "none"

    def __init__(self, name: str, cfg: DataCfg, n_samples: int = 1000, cache_dir: str | None = None,
                 device: str = "cpu", evaluator_steps: int | None = None) -> None:
        from fewstep.build.datasets import char_data
        from fewstep.metrics.text_evaluator import train_causal_evaluator

        self.name, self.cfg, self.n_samples = name, cfg, n_samples
        self.shape = (cfg.length,)
        train, self.val, self.vocab = char_data(cfg)
        steps = {} if evaluator_steps is None else {"steps": evaluator_steps}
        tag = "" if evaluator_steps is None else f"-s{evaluator_steps}"
        root = Path(cache_dir) if cache_dir else Path(os.environ.get("FEWSTEP_DATA", "data")) / "cache"
        cache = root / f"char-evaluator-{name}{tag}.safetensors"
        self.evaluator = train_causal_evaluator(train, self.val, self.vocab.size, length=cfg.length, cache=cache,
                                                device=device, **steps)
        self.evaluator_steps = evaluator_steps or 2000
        self.heldout_ppl = self.evaluator.heldout_ppl

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        """``n`` held-out windows of the validation split (random starts; real text scored like samples)."""
        length = self.cfg.length
        g = seeded(seed, repeat, 2)
        starts = torch.randint(0, self.val.numel() - length, (n,), generator=g)
        return torch.stack([self.val[s:s + length] for s in starts.tolist()])

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.text import distinct_n, unigram_entropy

        x = x.long()
        parts = [self.evaluator.score(c) for c in x.chunk(min(5, x.shape[0]))]  # 5 chunks: an in-sample SE
        total, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
        ppl = math.exp(total / count)
        chunk_nll = torch.tensor([p[0] / p[1] for p in parts], dtype=torch.float64)
        ent = unigram_entropy(x)
        return {"genppl": ppl, "genppl__se": ppl * _se(chunk_nll), "entropy": float(ent.mean()),
                "entropy__se": _se(ent), "distinct4": distinct_n(x, 4)}

    @property
    def row_extra(self) -> dict:
        """Recorded with every row: the evaluator's held-out perplexity on the whole validation split."""
        return {"evaluator_heldout_ppl": self.heldout_ppl, "evaluator_steps": self.evaluator_steps}

    def save_samples(self, x: Tensor, path: Path, title: str) -> None:
        """The first 16 samples as decoded text."""
        texts = self.vocab.decode(x[:16].long())
        path.with_suffix(".txt").write_text(f"# {title}\n\n" + "\n\n---\n\n".join(texts) + "\n")


def make_text_eval(dataset: str, *, n_samples: int | None = None, cache_dir: str | None = None,
                   evaluator_steps: int | None = None) -> DatasetEval:
    """The evaluator of a discrete benchmark dataset."""
    if dataset not in TEXT_BENCH_DATA:
        raise ValueError(f"no benchmark evaluator for dataset {dataset!r}")
    cfg = TEXT_BENCH_DATA[dataset]
    kw = {} if n_samples is None else {"n_samples": n_samples}
    if cfg.name == "text-hmm":
        return HMMEval(dataset, cfg, **kw)
    if cfg.name == "grid2d":
        return GridEval(dataset, cfg, **kw)
    return CharEval(dataset, cfg, cache_dir=cache_dir, evaluator_steps=evaluator_steps, **kw)
