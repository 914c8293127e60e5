"""Small evaluation classifiers whose penultimate features define ``fd_digits`` / ``fd_lenet``.

A classifier is trained once with a fixed seed on a fixed split (on the CPU with one intra-op thread, so the
weights are bit-identical from run to run whatever the caller's thread count), then cached as
safetensors (metadata: held-out accuracy, seed, data, architecture) under the cache directory
(``$FEWSTEP_CACHE`` if set, else ``~/.cache/fewstep``). The cache key holds the architecture/version tag, the
seed and a hash of the training data, so a changed network or data set never reuses stale weights.

- digits: sklearn 8x8 digits, fixed 80/20 split by a seeded permutation; 3 conv layers and a 128-d
  penultimate layer; trains in seconds on the CPU (held-out accuracy: benchmarks/teachers.md, digits).
- lenet: LeNet-style network for 28x28 images (MNIST, Fashion-MNIST) on the given train/test tensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIGITS_ARCH = "digits-cnn3-f128-v1"
LENET_ARCH = "lenet-c32c64-f128-v1"


def default_cache_dir() -> Path:
    """``$FEWSTEP_CACHE`` if set, else ``~/.cache/fewstep``."""
    env = os.environ.get("FEWSTEP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fewstep"


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run these tiny networks with one intra-op thread on the CPU (restored afterwards).

    Their small batches gain little from threads and, on a loaded 2-core machine, stall at thread barriers
    (training was much slower with 2 threads than with 1; benchmarks/teachers.md).
    """
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _FeatureNet(nn.Module):
    """``body`` maps images to penultimate features [B, F]; ``head`` maps features to logits [B, K]."""

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DigitsNet(_FeatureNet):
    """CNN for [B, 1, 8, 8]: conv32-conv64-pool-conv64-pool -> 128-d features -> 10 logits."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, feat_dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
            nn.Flatten(), nn.Linear(64 * 4, feat_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feat_dim, n_classes)
        self.input_hw = (8, 8)


class LeNet(_FeatureNet):
    """LeNet-style CNN for [B, C, 28, 28]: conv5x5(32)-pool-conv5x5(64)-pool -> 128-d features -> logits."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, feat_dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),  # 5x5
            nn.Flatten(), nn.Linear(64 * 25, feat_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feat_dim, n_classes)
        self.input_hw = (28, 28)


class ImageNet(_FeatureNet):
    """A small CNN for [B, C, H, W] images of any size: conv32-pool-conv64-adaptive 4x4 pool -> 128-d features."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, feat_dim: int = 128,
                 input_hw: tuple[int, int] = (28, 28)) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64 * 16, feat_dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(feat_dim, n_classes)
        self.input_hw = tuple(input_hw)


class Classifier:
    """A trained classifier used as a :class:`~fewstep.metrics.fid.FeatureExtractor`.

    Calling it returns the penultimate (post-ReLU) features; :meth:`probs` gives class probabilities.
    Inputs are images [B, C, H, W] in [-1, 1] (clamp generated samples first if they may overshoot).

    Attributes:
        name: feature-set name ("digits", "lenet", ...).
        net: the network (eval mode).
        held_out_accuracy: accuracy on the held-out split, measured after training.
        meta: the safetensors metadata (strings).
        path: the cache file the weights came from or were written to.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        held_out_accuracy: float,
        meta: dict[str, str],
        path: Path | None = None,
        batch_size: int = 1024,
    ) -> None:
        self.net, self.name, self.held_out_accuracy = net.eval(), name, held_out_accuracy
        self.meta, self.path, self.batch_size = meta, path, batch_size

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _batched(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        hw = tuple(self.net.input_hw)
        if x.dim() != 4 or tuple(x.shape[-2:]) != hw:
            raise ValueError(f"{self.name} classifier expects [B, C, {hw[0]}, {hw[1]}], got {tuple(x.shape)}")
        out = []
        with torch.inference_mode(), _one_cpu_thread(self.device):
            for i in range(0, x.shape[0], self.batch_size):
                out.append(fn(x[i : i + self.batch_size].to(self.device, torch.float32)).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def __call__(self, images: Tensor) -> Tensor:
        """Penultimate features [B, 128] (float32, CPU) of images [B, C, H, W] in [-1, 1]."""
        return self._batched(self.net.features, images)

    def logits(self, images: Tensor) -> Tensor:
        """Class logits [B, K]."""
        return self._batched(self.net, images)

    def probs(self, images: Tensor) -> Tensor:
        """Class probabilities [B, K] (softmax of the logits)."""
        return self.logits(images).softmax(dim=1)


def class_entropy(probs: Tensor) -> float:
    """Entropy (natural log) of the histogram of argmax predicted classes.

    Args:
        probs: class probabilities (or logits) [N, K].

    Returns:
        The entropy in nats: log K for perfectly balanced predictions, 0 when every sample gets one class.
    """
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be [N, K] with N >= 1, got {tuple(probs.shape)}")
    counts = torch.bincount(probs.argmax(1).cpu(), minlength=probs.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return max(0.0, float(-(p * p.log()).sum()))


def confidence(probs: Tensor) -> float:
    """Mean max class probability of probs [N, K] (sharpness of the samples)."""
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be [N, K] with N >= 1, got {tuple(probs.shape)}")
    return float(probs.double().max(1).values.mean())


# ----------------------------------------------------------------------------------------- training/cache
def _fingerprint(*tensors: Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        a = t.detach().cpu().contiguous()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()[:12]


def _accuracy(net: nn.Module, x: Tensor, y: Tensor, device: torch.device) -> float:
    net.eval()
    correct = 0
    with torch.inference_mode(), _one_cpu_thread(device):
        for i in range(0, x.shape[0], 1024):
            pred = net(x[i : i + 1024].to(device)).argmax(1).cpu()
            correct += int((pred == y[i : i + 1024]).sum())
    return correct / max(1, x.shape[0])


@dataclass(frozen=True)
class _Recipe:
    seed: int
    epochs: int
    batch_size: int
    lr: float


def _train(net: nn.Module, x: Tensor, y: Tensor, r: _Recipe, device: torch.device) -> None:
    """Adam with cosine decay; minibatch order from a generator seeded by ``r.seed`` (no global RNG).

    On the CPU it runs with one intra-op thread, so the weights do not depend on the caller's thread count.
    """
    with _one_cpu_thread(device):
        net.to(device).train()
        g = torch.Generator().manual_seed(r.seed + 1)
        total = r.epochs * math.ceil(x.shape[0] / r.batch_size)
        opt = torch.optim.Adam(net.parameters(), lr=r.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        for _ in range(r.epochs):
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0], r.batch_size):
                idx = perm[i : i + r.batch_size]
                loss = F.cross_entropy(net(x[idx].to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    net.eval()


def _save_atomic(net: nn.Module, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _try_load(net: nn.Module, path: Path, expect: dict[str, str]) -> dict[str, str] | None:
    """Load cached weights if the file exists and its metadata matches ``expect``; else None."""
    if not path.is_file():
        return None
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        if any(meta.get(k) != v for k, v in expect.items()):
            return None
        net.load_state_dict(load_file(str(path)))
    except Exception:  # corrupt or incompatible file: retrain and overwrite
        return None
    return meta


def _get_or_train(
    make_net: Callable[[], nn.Module], *, name: str, arch: str, data: str, recipe: _Recipe,
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], cache_dir: str | os.PathLike[str] | None,
    device: str | torch.device,
) -> Classifier:  # fmt: skip
    device = torch.device(device)
    fp = _fingerprint(*train, *test)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = root / "classifiers" / f"{name}-{arch}-seed{recipe.seed}-{fp}.safetensors"
    expect = {
        "fewstep_classifier": name,
        "arch": arch,
        "seed": str(recipe.seed),
        "data": data,
        "data_sha1": fp,
    }

    def fresh() -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the caller's RNG
            torch.manual_seed(recipe.seed)
            return make_net()

    net = fresh()
    meta = _try_load(net, path, expect)
    if meta is None:
        net = fresh()  # a failed load may have left some weights overwritten
        t0 = time.perf_counter()
        _train(net, *train, recipe, device)
        seconds = time.perf_counter() - t0
        acc = _accuracy(net, *test, device)
        sizes = {"n_train": str(train[0].shape[0]), "n_test": str(test[0].shape[0])}
        meta = {**expect, "held_out_accuracy": repr(acc), "train_seconds": f"{seconds:.3f}", **sizes}
        meta.update(epochs=str(recipe.epochs), batch_size=str(recipe.batch_size), lr=repr(recipe.lr))
        _save_atomic(net, path, meta)
    net.to(device).eval().requires_grad_(False)
    acc = float(meta["held_out_accuracy"])
    return Classifier(net, name=name, held_out_accuracy=acc, meta=meta, path=path)


def digits_split(seed: int = 0) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The fixed 80/20 split of sklearn digits: ((x_train [1438, 1, 8, 8], y), (x_test [359, 1, 8, 8], y))."""
    from fewstep.data.images import load_digits8x8

    x, y = load_digits8x8()
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    n_train = int(round(0.8 * x.shape[0]))
    tr, te = perm[:n_train], perm[n_train:]
    return (x[tr], y[tr]), (x[te], y[te])


def digits_classifier(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    epochs: int = 40,
    device: str | torch.device = "cpu",
) -> Classifier:
    """The ``digits`` classifier (8x8 sklearn digits), trained on first use and cached.

    Args:
        cache_dir: cache root (default: ``$FEWSTEP_CACHE`` or ``~/.cache/fewstep``); weights go to
            ``<cache_dir>/classifiers/``.
        seed: split, initialisation and minibatch seed.
        epochs: training epochs (part of the data/architecture contract: keep the default for benchmarks).
        device: where to train and evaluate.

    Returns:
        A :class:`Classifier` named "digits" with 128-d features.
    """
    train, test = digits_split(seed)
    recipe = _Recipe(seed=seed, epochs=epochs, batch_size=64, lr=2e-3)
    return _get_or_train(
        DigitsNet,
        name="digits",
        arch=f"{DIGITS_ARCH}-e{epochs}",
        data="sklearn-digits-80/20",
        recipe=recipe,
        train=train,
        test=test,
        cache_dir=cache_dir,
        device=device,
    )


def lenet_classifier(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    cache_dir: str | os.PathLike[str] | None = None,
    name: str = "lenet",
    *,
    seed: int = 0,
    epochs: int = 4,
    device: str | torch.device = "cpu",
) -> Classifier:
    """A LeNet-style classifier for 28x28 images (MNIST, Fashion-MNIST), trained on first use and cached.

    Args:
        train_x: training images [N, C, 28, 28] in [-1, 1]; train_y: labels [N] int64.
        test_x: held-out images [M, C, 28, 28]; test_y: labels [M].
        cache_dir: cache root (see :func:`digits_classifier`).
        name: feature-set name and cache-file prefix (e.g. "lenet", "lenet-fashion").
        seed: initialisation and minibatch seed.
        epochs: training epochs.
        device: where to train and evaluate (training on a GPU is not bit-identical to the CPU).

    Returns:
        A :class:`Classifier` with 128-d features.
    """
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.dim() != 4 or tuple(x.shape[-2:]) != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(
                f"{what} data must be [N, C, 28, 28] with labels [N]: {tuple(x.shape)}, {tuple(y.shape)}"
            )
    n_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    c = train_x.shape[1]
    train, test = (train_x.float(), train_y.long()), (test_x.float(), test_y.long())
    return _get_or_train(
        lambda: LeNet(c, n_classes),
        name=name,
        arch=f"{LENET_ARCH}-c{c}-k{n_classes}-e{epochs}",
        data=name,
        recipe=_Recipe(seed=seed, epochs=epochs, batch_size=128, lr=1e-3),
        train=train,
        test=test,
        cache_dir=cache_dir,
        device=device,
    )


IMAGE_ARCH = "image-c32c64a4-f128-v1"


def image_classifier(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, name: str,
                     cache_dir: str | os.PathLike[str] | None = None, seed: int = 0, epochs: int = 8,
                     device: str | torch.device = "cpu") -> Classifier:
    """A classifier for labelled images of any size [N, C, H, W] in [-1, 1] (a user's own data), trained on first
    use and cached under its data fingerprint; its penultimate features define a Fréchet distance for that data.

    Returns:
        A :class:`Classifier` named ``name`` with 128-d features (its held-out accuracy is in ``meta``).
    """
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.dim() != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"{what} data must be [N, C, H, W] with labels [N]: {tuple(x.shape)}, {tuple(y.shape)}")
    n_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    c, hw = train_x.shape[1], tuple(train_x.shape[-2:])
    return _get_or_train(
        lambda: ImageNet(c, n_classes, input_hw=hw),
        name=name,
        arch=f"{IMAGE_ARCH}-c{c}-{hw[0]}x{hw[1]}-k{n_classes}-e{epochs}",
        data=name,
        recipe=_Recipe(seed=seed, epochs=epochs, batch_size=64, lr=1e-3),
        train=(train_x.float(), train_y.long()),
        test=(test_x.float(), test_y.long()),
        cache_dir=cache_dir,
        device=device,
    )
