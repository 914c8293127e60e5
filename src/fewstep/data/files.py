"""A user's own data files, from local paths only: vectors, Gaussian mixtures, token arrays and images.

Every loader checks what it reads and raises one clear line for a missing or malformed file (wrong dtype, ragged
or empty arrays, NaN, labels out of range), never returns a silently wrong array. ``file_digest`` names the
content (a hash of the bytes), which a run stores as its data identity.

- ``load_vectors``: ``.npy`` / ``.npz`` / ``.csv`` of shape [N, d] -> float32 [N, d].
- ``load_gmm``: a ``.json`` mixture ``{"weights": [K], "means": [K, d], "covariances": ...}`` -> ``GMM``.
- ``load_tokens``: a ``.npy`` of integer token ids (any shape, flattened in order; memory-mapped) or a folder of
  them -> a 1-D integer array [T].
- ``load_images``: a PNG/JPEG folder (class sub-folders give labels), an ``.npz`` or IDX files -> float32
  [N, C, H, W] in [-1, 1] (uint8 pixels / 127.5 - 1) and labels [N] or None; optional square resize.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fewstep.data.toys import GMM

PathLike = str | os.PathLike[str]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _existing(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p} (pass a local path with --data.root)")
    return p


def file_digest(path: PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes (a folder: of its files' names and bytes, sorted)."""
    p = _existing(path, "data")
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _first_array(path: Path, keys: tuple[str, ...]) -> np.ndarray:
    """The array of an ``.npy``, or of an ``.npz`` under the first of ``keys`` present (else its first array)."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            if not z.files:
                raise ValueError(f"{path}: the .npz holds no array")
            key = next((k for k in keys if k in z.files), z.files[0])
            return z[key]
    except (OSError, ValueError) as e:
        if "holds no array" in str(e):
            raise
        raise ValueError(f"{path}: not a readable {path.suffix} array file ({e})") from None


def load_vectors(path: PathLike) -> Tensor:
    """Vectors [N, d] (float32) from ``.npy``, ``.npz`` (key ``x``, else the first array) or ``.csv`` (numbers,
    comma-separated, an optional header line)."""
    p = _existing(path, "vector file")
    if p.suffix == ".csv":
        try:
            a = np.genfromtxt(p, delimiter=",", dtype=np.float64, invalid_raise=True)
        except ValueError as e:
            raise ValueError(f"{p}: not a rectangular CSV of numbers ({str(e).splitlines()[0]})") from None
        if a.ndim >= 1 and a.size and np.isnan(a.reshape(a.shape[0], -1)[0] if a.ndim == 2 else a[:1]).all():
            a = a[1:]  # a header line reads as NaNs
        a = a[:, None] if a.ndim == 1 else a
    elif p.suffix in (".npy", ".npz"):
        a = _first_array(p, ("x",))
    else:
        raise ValueError(f"{p}: vectors must be a .npy, .npz or .csv file, got {p.suffix or 'no suffix'}")
    if a.ndim != 2:
        raise ValueError(f"{p}: vectors must be a 2-D array [N, d], got shape {tuple(a.shape)}")
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise ValueError(f"{p}: need at least 2 vectors of dimension >= 1, got shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{p}: vectors must be numbers, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{p}: vectors contain NaN or infinite values ({int((~np.isfinite(a)).sum())} entries)")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_gmm(path: PathLike) -> GMM:
    """A Gaussian mixture from JSON: ``weights`` [K] (normalised), ``means`` [K, d] and ``covariances`` as full
    [K, d, d], diagonal [K, d] or isotropic variances [K]; every covariance must be symmetric positive definite."""
    p = _existing(path, "mixture file")
    try:
        spec = json.loads(p.read_text())
        w = torch.tensor(spec["weights"], dtype=torch.float64)
        mu = torch.tensor(spec["means"], dtype=torch.float64)
        cov = torch.tensor(spec["covariances"], dtype=torch.float64)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    except KeyError as e:
        raise ValueError(f"{p}: a mixture needs 'weights', 'means' and 'covariances' (missing {e})") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: weights, means and covariances must be (nested) lists of numbers ({e})") from None
    if mu.ndim != 2 or w.shape != (mu.shape[0],):
        raise ValueError(f"{p}: need weights [K] and means [K, d], got {tuple(w.shape)} and {tuple(mu.shape)}")
    k, d = mu.shape
    if cov.shape == (k,):
        cov = cov[:, None, None] * torch.eye(d, dtype=torch.float64)
    elif cov.shape == (k, d):
        cov = torch.diag_embed(cov)
    elif cov.shape != (k, d, d):
        raise ValueError(f"{p}: covariances must be [K, d, d], [K, d] or [K] for K={k}, d={d}, got {tuple(cov.shape)}")
    if not all(bool(torch.isfinite(v).all()) for v in (w, mu, cov)):
        raise ValueError(f"{p}: the mixture contains NaN or infinite values")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"{p}: weights must be >= 0 with a positive sum")
    if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-10):
        raise ValueError(f"{p}: covariances must be symmetric")
    if bool((torch.linalg.eigvalsh(cov) <= 0).any()):
        raise ValueError(f"{p}: covariances must be positive definite")
    return GMM(w / w.sum(), mu, cov)


def load_tokens(path: PathLike) -> np.ndarray:
    """Token ids [T] (a 1-D integer array) from a ``.npy`` of non-negative integers (any shape, flattened in order;
    memory-mapped, not read into memory) or a folder of such files (concatenated in sorted name order)."""
    p = _existing(path, "token file")
    files = sorted(p.glob("*.npy")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no .npy token files in {p}")
    parts = []
    for f in files:
        if f.suffix != ".npy":
            raise ValueError(f"{f}: tokens must be a .npy array of integers, got {f.suffix or 'no suffix'}")
        try:
            a = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not a readable .npy array ({e})") from None
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{f}: token ids must be integers, got dtype {a.dtype}")
        if a.size == 0:
            raise ValueError(f"{f}: the token array is empty")
        if int(a.min()) < 0:
            raise ValueError(f"{f}: token ids must be >= 0, found {int(a.min())}")
        parts.append(a.reshape(-1))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _resize(x: Tensor, size: int) -> Tensor:
    """Square area/bilinear resize of [N, C, H, W] images in [-1, 1] to [N, C, size, size]."""
    mode = "area" if size <= min(x.shape[-2:]) else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(x, size=(size, size), mode=mode, **kw).clamp(-1, 1)


def _image_folder(root: Path) -> tuple[Tensor, Tensor | None]:
    """PNG/JPEG images of ``root`` (labels None) or of its class sub-folders (labels = sorted folder index)."""
    from PIL import Image

    from fewstep.data.images import from_uint8

    classes = sorted(q for q in root.iterdir() if q.is_dir())
    groups = [(i, sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for i, c in enumerate(classes)]
    if not classes:
        groups = [(None, sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES))]
    arrays, labels = [], []
    for label, files in groups:
        for f in files:
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16") else "RGB"), dtype=np.uint8)
            except OSError as e:
                raise ValueError(f"{f}: not a readable image ({e})") from None
            arrays.append(a[..., None] if a.ndim == 2 else a)
            labels.append(label)
    if not arrays:
        raise FileNotFoundError(f"no PNG/JPEG images in {root} (or in its class sub-folders)")
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) != 1:
        raise ValueError(f"{root}: images differ in size or channels {shapes[:3]}: pass --data.resize N")
    x = from_uint8(torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()))
    return x, (torch.tensor(labels, dtype=torch.int64) if classes else None)


def load_images(path: PathLike, *, resize: int | None = None) -> tuple[Tensor, Tensor | None]:
    """Images ``(x [N, C, H, W] float32 in [-1, 1], labels [N] int64 or None)`` from a PNG/JPEG folder (class
    sub-folders give labels), an ``.npz`` (uint8 ``x``/``images``, optional ``y``/``labels``) or an IDX image
    file (with ``*labels*`` beside it when present, e.g. MNIST's ``train-labels-idx1-ubyte``)."""
    from fewstep.data.images import from_uint8, load_npz_images, read_idx

    p = _existing(path, "image data")
    labels: Tensor | None
    if p.is_dir():
        x, labels = _image_folder(p)
    elif p.suffix == ".npz":
        x, labels = load_npz_images(p)
    elif "idx" in p.name:
        a = read_idx(p)
        if a.ndim != 3:
            raise ValueError(f"{p}: IDX images must be [N, H, W], got shape {a.shape}")
        x = from_uint8(torch.from_numpy(a.copy())[:, None])
        lab = p.with_name(p.name.replace("images-idx3", "labels-idx1"))
        labels = torch.from_numpy(read_idx(lab).astype(np.int64)) if lab != p and lab.is_file() else None
    else:
        raise ValueError(f"{p}: images must be a folder of PNG/JPEG files, an .npz or an IDX file")
    if x.shape[0] < 2:
        raise ValueError(f"{p}: need at least 2 images, got {x.shape[0]}")
    if labels is not None:
        if labels.shape != (x.shape[0],):
            raise ValueError(f"{p}: {labels.shape[0]} labels for {x.shape[0]} images")
        if int(labels.min()) < 0:
            raise ValueError(f"{p}: labels must be >= 0, found {int(labels.min())}")
    if resize is not None:
        if resize < 1:
            raise ValueError(f"--data.resize must be a positive size, got {resize}")
        x = _resize(x, int(resize))
    return x, labels
