"""A user's own data files (``fewstep.data.files``): each format round-trips, each malformed file is one clear line."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from fewstep.data import files


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


# ------------------------------------------------------------------------------------------ vectors
def test_vectors_round_trip_in_every_format(tmp_path):
    a = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "v.npy", a)
    np.savez(tmp_path / "v.npz", x=a, other=np.zeros(2))
    np.savetxt(tmp_path / "v.csv", a, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "nohead.csv", a, delimiter=",")
    for name in ("v.npy", "v.npz", "v.csv", "nohead.csv"):
        x = files.load_vectors(tmp_path / name)
        assert x.dtype == torch.float32 and x.shape == (50, 3), name
        assert torch.allclose(x, torch.from_numpy(a).float(), atol=1e-6), name


@pytest.mark.parametrize(("content", "match"), [
    (np.zeros((4, 2, 2)), "2-D array"),
    (np.zeros((1, 3)), "at least 2 vectors"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
    (np.array([["a", "b"], ["c", "d"]]), "must be numbers"),
])
def test_malformed_vectors(tmp_path, content, match):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ValueError, match=match) as e:
        files.load_vectors(tmp_path / "bad.npy")
    _one_line(e)


def test_vector_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vector file not found") as e:
        files.load_vectors(tmp_path / "missing.npy")
    _one_line(e)
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match="rectangular CSV") as e:
        files.load_vectors(tmp_path / "ragged.csv")
    _one_line(e)
    (tmp_path / "v.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"\.npy, \.npz or \.csv"):
        files.load_vectors(tmp_path / "v.txt")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable .npy"):
        files.load_vectors(tmp_path / "junk.npy")


# ------------------------------------------------------------------------------------------ mixtures
def test_gmm_json_forms(tmp_path):
    full = {"weights": [1, 3], "means": [[0, 0], [2, 1]], "covariances": [[[1, 0.2], [0.2, 0.5]], [[0.3, 0], [0, 0.3]]]}
    diag = {"weights": [0.5, 0.5], "means": [[0, 0], [2, 1]], "covariances": [[1, 2], [0.5, 0.5]]}
    iso = {"weights": [0.5, 0.5], "means": [[0, 0], [2, 1]], "covariances": [1, 0.25]}
    for name, spec in (("full", full), ("diag", diag), ("iso", iso)):
        (tmp_path / f"{name}.json").write_text(json.dumps(spec))
        g = files.load_gmm(tmp_path / f"{name}.json")
        assert g.means.shape == (2, 2) and g.covs.shape == (2, 2, 2) and abs(float(g.weights.sum()) - 1) < 1e-12
    g = files.load_gmm(tmp_path / "full.json")
    assert torch.allclose(g.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert torch.allclose(files.load_gmm(tmp_path / "iso.json").covs[1], 0.25 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize(("spec", "match"), [
    ({"weights": [1], "means": [[0.0]]}, "missing 'covariances'"),
    ({"weights": [1, 1], "means": [[0.0]], "covariances": [1]}, r"weights \[K\] and means \[K, d\]"),
    ({"weights": [1], "means": [[0.0, 0.0]], "covariances": [[[1, 0.5], [0, 1]]]}, "symmetric"),
    ({"weights": [1], "means": [[0.0, 0.0]], "covariances": [[[1, 2], [2, 1]]]}, "positive definite"),
    ({"weights": [-1, 2], "means": [[0.0], [1.0]], "covariances": [1, 1]}, "weights must be >= 0"),
    ({"weights": [1], "means": [[0.0, 0.0]], "covariances": [[1, 2, 3]]}, r"covariances must be \[K, d, d\]"),
    ({"weights": [1], "means": [["a"]], "covariances": [1]}, "lists of numbers"),
])
def test_malformed_mixtures(tmp_path, spec, match):
    (tmp_path / "g.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=match) as e:
        files.load_gmm(tmp_path / "g.json")
    _one_line(e)
    (tmp_path / "broken.json").write_text("{weights: ")
    with pytest.raises(ValueError, match="not valid JSON"):
        files.load_gmm(tmp_path / "broken.json")


# ------------------------------------------------------------------------------------------ tokens
def test_tokens_file_and_folder(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(10, dtype=np.uint16).reshape(2, 5))
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "1.npy", np.array([5, 6], dtype=np.int32))
    np.save(tmp_path / "dir" / "0.npy", np.array([1, 2, 3], dtype=np.int64))
    one = files.load_tokens(tmp_path / "a.npy")
    assert isinstance(one, np.memmap) and one.tolist() == list(range(10))  # memory-mapped, flattened in order
    t = files.load_tokens(tmp_path / "dir")
    assert np.issubdtype(t.dtype, np.integer) and t.tolist() == [1, 2, 3, 5, 6]


@pytest.mark.parametrize(("array", "match"), [
    (np.array([0.5, 1.0]), "must be integers"),
    (np.array([], dtype=np.int64), "empty"),
    (np.array([3, -1]), ">= 0"),
])
def test_malformed_tokens(tmp_path, array, match):
    np.save(tmp_path / "t.npy", array)
    with pytest.raises(ValueError, match=match) as e:
        files.load_tokens(tmp_path / "t.npy")
    _one_line(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .npy token files"):
        files.load_tokens(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ images
def _write_png(path, a):
    from PIL import Image

    Image.fromarray(a).save(path)


def test_images_folder_classes_npz_idx_and_resize(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(6, 14, 14), dtype=np.uint8)
    for c in ("cat", "dog"):
        (tmp_path / "tree" / c).mkdir(parents=True)
    for i, a in enumerate(imgs):
        _write_png(tmp_path / "tree" / ("cat" if i < 2 else "dog") / f"{i}.png", a)
    x, y = files.load_images(tmp_path / "tree")
    assert x.shape == (6, 1, 14, 14) and y.tolist() == [0, 0, 1, 1, 1, 1]
    assert torch.allclose(x[0, 0], torch.from_numpy(imgs[0]).float() / 127.5 - 1)
    (tmp_path / "flat").mkdir()
    for i, a in enumerate(imgs[:3]):
        _write_png(tmp_path / "flat" / f"{i}.jpg", np.stack([a] * 3, -1))
    x, y = files.load_images(tmp_path / "flat", resize=7)
    assert x.shape == (3, 3, 7, 7) and y is None and float(x.min()) >= -1 and float(x.max()) <= 1
    np.savez(tmp_path / "d.npz", x=imgs, y=np.arange(6))
    x, y = files.load_images(tmp_path / "d.npz")
    assert x.shape == (6, 1, 14, 14) and y.tolist() == list(range(6))
    header = bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in (6, 14, 14))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + imgs.tobytes())
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (6).to_bytes(4, "big") + bytes(range(6)))
    x, y = files.load_images(tmp_path / "train-images-idx3-ubyte.gz")
    assert x.shape == (6, 1, 14, 14) and y.tolist() == list(range(6))


def test_malformed_images(tmp_path):
    (tmp_path / "mixed").mkdir()
    _write_png(tmp_path / "mixed" / "a.png", np.zeros((4, 4), np.uint8))
    _write_png(tmp_path / "mixed" / "b.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="differ in size") as e:
        files.load_images(tmp_path / "mixed")
    _one_line(e)
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="no PNG/JPEG images"):
        files.load_images(tmp_path / "none")
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="must be uint8"):
        files.load_images(tmp_path / "f.npz")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "badimg").mkdir()
    (tmp_path / "badimg" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a readable image"):
        files.load_images(tmp_path / "badimg")
    with pytest.raises(ValueError, match="positive size"):
        np.savez(tmp_path / "ok.npz", x=np.zeros((3, 4, 4), np.uint8))
        files.load_images(tmp_path / "ok.npz", resize=0)


def test_digest_names_the_content(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(4))
    d = files.file_digest(tmp_path / "a.npy")
    assert len(d) == 16 and d == files.file_digest(tmp_path / "a.npy")
    np.save(tmp_path / "a.npy", np.arange(5))
    assert files.file_digest(tmp_path / "a.npy") != d
