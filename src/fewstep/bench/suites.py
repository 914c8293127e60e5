"""Benchmark suites: their datasets, reference data and metrics (see docs/benchmarks.md).

A dataset evaluator draws reference and fresh true samples by (seed, repeat) and computes every metric of
the suite on a set of generated samples; ``primary`` names the metric the acceleration factor reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from torch import Tensor

from fewstep.bench.evaluation import DatasetEval, MetricSpec
from fewstep.config import DataCfg
from fewstep.data.source import seeded


class ToyEval(DatasetEval):
    """Energy distance vs 4,096 fresh reference samples per repeat, precision, and (GMM) mode coverage."""

    def __init__(self, name: str, shape: tuple[int, ...], draw: Callable[..., Tensor],
                 inside: Callable[[Tensor], Tensor], *, gmm=None, n_samples: int = 4096) -> None:
        self.name, self.shape, self.draw, self.inside, self.gmm = name, shape, draw, inside, gmm
        self.n_samples = n_samples
        self.primary = "energy"
        ms = [MetricSpec("energy", True), MetricSpec("precision", False)]
        if gmm is not None:
            ms += [MetricSpec("mode_coverage", False), MetricSpec("mode_weight_tv", True)]
        self.metrics = tuple(ms)

    def _reference(self, repeat: int, seed: int) -> Tensor:
        return self.draw(self.n_samples, generator=seeded(seed, repeat, 1))

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        return self.draw(n, generator=seeded(seed, repeat, 2))

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics import toys as mt

        x = x.double().reshape(x.shape[0], -1)
        out = {"energy": mt.energy_distance(x, self._reference(repeat, seed)),
               "precision": float(self.inside(x).double().mean())}
        if self.gmm is not None:
            out["mode_coverage"] = mt.mode_coverage(self.gmm, x)
            out["mode_weight_tv"] = mt.mode_weights_tv(self.gmm, x)
        return out


class DigitsEval(DatasetEval):
    """fd_digits (Frechet distance in the digits classifier's features), class entropy and confidence.

    The 1,797 digits are split once into a ``train`` half (898 images; generative models train on it) and a
    ``test`` half (899; the reference set). Each repeat compares ``n_samples`` generated images with the test
    half; the ``data`` rows compare the train half with it. A model that memorised its training set would
    therefore land on the noise floor, not below it.
    """

    name = "digits8x8"
    shape = (1, 8, 8)
    primary = "fd_digits"
    metrics = (MetricSpec("fd_digits", True), MetricSpec("class_entropy", False), MetricSpec("confidence", False))

    def __init__(self, cache_dir: str | None = None) -> None:
        from fewstep.data.images import load_digits8x8
        from fewstep.metrics.classifier import digits_classifier

        self.reference, _ = load_digits8x8("test")
        self.heldout, _ = load_digits8x8("train")
        self.n_samples = min(self.reference.shape[0], self.heldout.shape[0])
        self.classifier = digits_classifier(cache_dir)
        self._ref_feats = self.classifier(self.reference)

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        if n > self.heldout.shape[0]:
            raise ValueError(f"only {self.heldout.shape[0]} training digits exist")
        return self.heldout[:n]

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.classifier import class_entropy, confidence
        from fewstep.metrics.fid import frechet_distance

        x = x.float().clamp(-1, 1)
        probs = self.classifier.probs(x)
        return {"fd_digits": frechet_distance(self.classifier(x), self._ref_feats),
                "class_entropy": class_entropy(probs), "confidence": confidence(probs)}


class _ClassifierEval(DatasetEval):
    """Fréchet distance (``fd_metric``) in a trained classifier's features against a reference set, with class
    entropy and confidence; the ``data`` rows are slices of the training images. Subclasses set ``fd_metric``
    and call ``_setup``."""

    fd_metric: str

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.primary = cls.fd_metric
        cls.metrics = (MetricSpec(cls.fd_metric, True), MetricSpec("class_entropy", False),
                       MetricSpec("confidence", False))

    def _setup(self, train_x: Tensor, test_x: Tensor, classifier, n_samples: int) -> None:
        """The training images (``data`` rows), the classifier and the test images' features (the reference)."""
        self.train_x, self.classifier, self.n_samples = train_x, classifier, n_samples
        self._ref_feats = self.classifier(test_x)

    def data_samples(self, n: int, repeat: int, seed: int) -> Tensor:
        start = (repeat * n) % max(1, self.train_x.shape[0] - n + 1)
        return self.train_x[start:start + n]

    def evaluate(self, x: Tensor, repeat: int, seed: int) -> dict[str, float]:
        from fewstep.metrics.classifier import class_entropy, confidence
        from fewstep.metrics.fid import frechet_distance

        x = x.float().clamp(-1, 1)
        probs = self.classifier.probs(x)
        return {self.fd_metric: frechet_distance(self.classifier(x), self._ref_feats),
                "class_entropy": class_entropy(probs), "confidence": confidence(probs)}


class MnistEval(_ClassifierEval):
    """fd_lenet (Frechet distance in a LeNet's 128-d features), class entropy and confidence on MNIST 28x28.

    The LeNet trains on the 60k training images (cached, ``metrics.classifier.lenet_classifier``). Each repeat
    compares ``n_samples`` generated images with the 10k test images; the ``data`` rows compare ``n_samples``
    training images (a different slice per repeat) with them. Data come from ``$FEWSTEP_DATA`` / ``./data``
    (``scripts/get_resources.sh`` obtains them).
    """

    name = "mnist"
    shape = (1, 28, 28)
    fd_metric = "fd_lenet"

    def __init__(self, root: str | None = None, cache_dir: str | None = None, n_samples: int = 5000) -> None:
        import torch

        from fewstep.data.images import load_mnist
        from fewstep.metrics.classifier import lenet_classifier

        (train_x, train_y), (test_x, test_y) = load_mnist(root, "train"), load_mnist(root, "test")
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        self._setup(train_x, test_x, lenet_classifier(train_x, train_y, test_x, test_y, cache_dir, device=dev),
                    n_samples)


class Mnist14Eval(_ClassifierEval):
    """fd_mnist14 (Fréchet distance in the 128-d features of a small CNN trained once on the 60k training images at
    14 x 14, cached), class entropy and confidence. Each repeat compares ``n_samples`` generated images with the 10k
    test images; the ``data`` rows compare ``n_samples`` training images (a slice per repeat) with them."""

    name = "mnist14"
    shape = (1, 14, 14)
    fd_metric = "fd_mnist14"

    def __init__(self, root: str | None = None, cache_dir: str | None = None, n_samples: int = 5000) -> None:
        from fewstep.build.datasets import mnist14
        from fewstep.metrics.classifier import image_classifier

        (train_x, train_y), (test_x, test_y) = mnist14(root, "train"), mnist14(root, "test")
        classifier = image_classifier(train_x, train_y, test_x, test_y, name="mnist14", epochs=4, cache_dir=cache_dir)
        self._setup(train_x, test_x, classifier, min(n_samples, test_x.shape[0]))


def make_eval(dataset: str, *, n_samples: int | None = None, cache_dir: str | None = None,
              evaluator_steps: int | None = None) -> DatasetEval:
    """The evaluator of a benchmark dataset (discrete suites: ``suites_text.make_text_eval``)."""
    from fewstep.bench.suites_text import TEXT_BENCH_DATA, make_text_eval
    from fewstep.data import toys
    from fewstep.metrics.toys import gmm_inside

    if dataset in TEXT_BENCH_DATA:
        return make_text_eval(dataset, n_samples=n_samples, cache_dir=cache_dir, evaluator_steps=evaluator_steps)
    if dataset == "gmm8d":
        gmm = toys.make_gmm8d()
        ev = ToyEval("gmm8d", (8,), lambda n, generator: gmm.sample(n, generator=generator),
                     lambda x: gmm_inside(gmm, x), gmm=gmm)
    elif dataset == "checkerboard2d":
        ev = ToyEval("checkerboard2d", (2,), toys.checkerboard_sample, toys.checkerboard_inside)
    elif dataset == "spiral2d":
        ev = ToyEval("spiral2d", (2,), toys.spiral_sample, toys.spiral_inside)
    elif dataset == "digits8x8":
        ev = DigitsEval(cache_dir)
    elif dataset == "mnist":
        ev = MnistEval(cache_dir=cache_dir)
    elif dataset == "mnist14":
        ev = Mnist14Eval(cache_dir=cache_dir)
    else:
        raise ValueError(f"no benchmark evaluator for dataset {dataset!r}")
    if n_samples is not None:
        if isinstance(ev, DigitsEval) and n_samples > ev.n_samples:
            raise ValueError(f"digits8x8 supports at most {ev.n_samples} samples per repeat")
        ev.n_samples = n_samples
    return ev


SUITES: dict[str, tuple[str, ...]] = {
    "toy": ("gmm8d", "checkerboard2d", "spiral2d"),
    "digits": ("digits8x8",),
    "mnist": ("mnist",),
    "mnist14": ("mnist14",),
    "text-hmm": ("hmm-v32-l64",),
    "grid2d": ("grid2d",),
    "text-char": ("tinyshakespeare-l128",),
    "data": ("data",),
}
"""Datasets of each suite."""


GENERATED_SUITES: dict[str, str] = {"text-hmm": "hmm-v32-l64", "grid2d": "grid2d"}
"""Suites whose one dataset is a generated source with settings (seed, sizes) a user may change."""
SOURCE_SETTINGS: dict[str, tuple[str, ...]] = {"text-hmm": ("seed", "vocab", "length", "states", "concentration"),
                                               "grid2d": ("grid",)}
"""The ``--data.*`` fields each generated source reads (any other is refused, never silently ignored)."""


def suite_on_data(suite: str, overrides: dict) -> tuple[DataCfg, tuple[tuple[str, str], ...]]:
    """A generated suite with ``--data.*`` overrides as suite ``data``: its source's config with the overrides
    applied, and the suite's teacher presets for it (``--teacher-preset`` pairs of suite ``data``).

    Raises:
        ValueError: the suite has no settable source, or ``--data.name`` tries to change the source.
    """
    from fewstep.bench.providers_discrete import DISCRETE_BENCH_PRESETS
    from fewstep.bench.suites_text import TEXT_BENCH_DATA

    if suite not in GENERATED_SUITES:
        raise ValueError(f"suite {suite!r} has fixed datasets: --data.* apply to the generated suites "
                         f"{sorted(GENERATED_SUITES)}; for your own data run 'fewstep bench data --data.name ... "
                         "--data.root ...'")
    dataset = GENERATED_SUITES[suite]
    base = TEXT_BENCH_DATA[dataset]
    if "name" in overrides and overrides["name"] != base.name:
        raise ValueError(f"suite {suite!r} generates {base.name} data; for other data run 'fewstep bench data "
                         f"--data.name {overrides['name']} ...'")
    ignored = sorted(set(overrides) - {"name", *SOURCE_SETTINGS[base.name]})
    if ignored:
        raise ValueError(f"suite {suite!r} ({base.name}) does not read --data.{ignored[0]}; its settings are "
                         + ", ".join(f"--data.{f}" for f in SOURCE_SETTINGS[base.name]))
    presets = tuple((f"data/{p}", preset) for p, preset in DISCRETE_BENCH_PRESETS[dataset].items())
    return replace(base, **overrides), presets
