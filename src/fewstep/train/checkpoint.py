"""Checkpoints: safetensors weights, a weights-only ``train_state.pt`` and an atomic ``latest`` pointer.

Layout (docs/architecture.md)::

    run_dir/checkpoints/nimg_000102400/{role}.safetensors  {role}.ema.safetensors  train_state.pt
    run_dir/checkpoints/latest          # text: the name of the last complete checkpoint directory

A checkpoint is written into a hidden temporary directory next to its final place, fsynced, renamed into
place with ``os.replace`` and only then named by ``latest`` (itself written to a temporary file and
replaced), so an exception or a kill at any point leaves ``latest`` on a complete checkpoint. Its
``manifest.json`` holds the size and SHA-256 of every file, written at save time: ``load_latest`` verifies them
and, when the newest checkpoint is damaged afterwards (a truncated copy, a flipped bit, a file removed), warns
(``DamagedCheckpointWarning``), moves it aside as ``damaged_nimg_...`` and falls back to the newest intact one.
Modules are never pickled: weights are unwrapped state dicts (``module.`` / ``_orig_mod.`` prefixes stripped) and
``train_state.pt`` holds only tensors and primitives, read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fewstep.weights import (  # noqa: F401  (re-exported: the weight I/O of a run)
    _fsync_dir,
    _fsync_file,
    _write_text_atomic,
    load_weights,
    save_weights,
    unwrap_module,
    unwrap_state_dict,
    version,
)

_CKPT_RE = re.compile(r"^nimg_(\d{9,})$")
MANIFEST = "manifest.json"


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint failed verification; an older intact one is used instead."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(ckpt_dir: Path) -> None:
    """Record the size and SHA-256 of every file of a checkpoint directory in its ``manifest.json``."""
    files = {f.name: {"bytes": f.stat().st_size, "sha256": _sha256(f)}
             for f in sorted(ckpt_dir.iterdir()) if f.is_file() and f.name != MANIFEST}
    (ckpt_dir / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    _fsync_file(ckpt_dir / MANIFEST)


def verify_checkpoint(ckpt_dir: str | Path) -> str | None:
    """None when every file of the checkpoint matches its manifest, else the first problem in words.

    A checkpoint written before manifests existed is only checked for ``train_state.pt``."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "train_state.pt").is_file():
        return "no train_state.pt"
    path = ckpt_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"{MANIFEST} is unreadable"
    for name, want in sorted(files.items()):
        f = ckpt_dir / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, {want['bytes']} were written"
        if _sha256(f) != want["sha256"]:
            return f"{name} does not match the hash written with it"
    return None
_PRIMITIVES = (str, int, float, bool, type(None))


def _check_plain(obj: object, where: str = "train_state") -> None:
    """Raise if ``obj`` holds anything but tensors, primitives, lists, tuples and str-keyed dicts."""
    if isinstance(obj, (Tensor, *_PRIMITIVES)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, item in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: dict key {key!r} is not str/int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} holds a {type(obj).__name__}; train_state may hold only tensors and primitives")


@dataclass
class Checkpoint:
    """A loaded checkpoint: weights and EMA weights by role, the train state and per-file metadata."""

    path: Path
    nimg: int
    weights: dict[str, dict[str, Tensor]]
    ema: dict[str, dict[str, Tensor]]
    train_state: dict
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(p.name[len("nimg_"):]))


def latest_dir(run_dir: str | Path) -> Path | None:
    """The directory named by ``run_dir/checkpoints/latest`` (None when there is no checkpoint yet)."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    target = pointer.parent / pointer.read_text().strip()
    if not _CKPT_RE.match(target.name) or not target.is_dir():
        raise FileNotFoundError(f"{pointer} names a missing checkpoint directory: {target.name!r}")
    return target


def save_checkpoint(run_dir: str | Path, nimg: int, weights: Mapping[str, Mapping[str, Tensor]],
                    ema: Mapping[str, Mapping[str, Tensor]], train_state: dict, config: dict | None = None, *,
                    keep: int = 2) -> Path:
    """Atomically write ``run_dir/checkpoints/nimg_{nimg:09d}`` and point ``latest`` at it.

    Args:
        run_dir: the run directory.
        nimg: samples seen; names the checkpoint.
        weights: state dict of each trainable role. ema: EMA state dict of each role (may be a subset).
        train_state: optimizer states, counters, ... (tensors and primitives only).
        config: the run config, stored as JSON in every weights file's metadata.
        keep: number of newest checkpoints kept (older ones are deleted after ``latest`` moved; 0 keeps all).

    Returns:
        The final checkpoint directory.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"nimg_{nimg:09d}"
    current = latest_dir(run_dir)
    if current is not None and current.name == final.name:
        raise FileExistsError(f"{final} is already the latest checkpoint")
    _check_plain(train_state)
    for stale in root.glob(".tmp_*"):  # leftovers of a killed save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp_{final.name}_{os.getpid()}"
    tmp.mkdir()
    config_json = json.dumps(config or {}, sort_keys=True, default=str)
    try:
        for role, sd in weights.items():
            if "." in role or "/" in role:
                raise ValueError(f"role names may not contain '.' or '/': {role!r}")
            meta = {"role": role, "config": config_json, "nimg": str(nimg)}
            save_weights(tmp / f"{role}.safetensors", sd, {**meta, "ema": "false"})
            if role in ema:
                save_weights(tmp / f"{role}.ema.safetensors", ema[role], {**meta, "ema": "true"})
        torch.save(train_state, tmp / "train_state.pt")
        _fsync_file(tmp / "train_state.pt")
        write_manifest(tmp)
        _fsync_dir(tmp)
        if final.exists():  # a complete but unreferenced directory from an interrupted save
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _write_text_atomic(root / "latest", final.name + "\n")
    if keep > 0:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            if old.name != final.name:
                shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load one checkpoint directory (weights, EMA weights, weights-only train state)."""
    ckpt_dir = Path(ckpt_dir)
    state_path = ckpt_dir / "train_state.pt"
    if not state_path.is_file():
        raise FileNotFoundError(f"incomplete checkpoint (no train_state.pt): {ckpt_dir}")
    train_state = torch.load(state_path, map_location=device, weights_only=True)
    weights: dict[str, dict[str, Tensor]] = {}
    ema: dict[str, dict[str, Tensor]] = {}
    meta: dict[str, dict[str, str]] = {}
    for f in sorted(ckpt_dir.glob("*.safetensors")):
        stem = f.name[: -len(".safetensors")]
        sd, md = load_weights(f, device)
        if stem.endswith(".ema"):
            ema[stem[: -len(".ema")]] = sd
        else:
            weights[stem] = sd
        meta[stem] = md
    m = _CKPT_RE.match(ckpt_dir.name)
    nimg = int(train_state.get("nimg", int(m.group(1)) if m else 0))
    return Checkpoint(ckpt_dir, nimg, weights, ema, train_state, meta)


def load_latest(run_dir: str | Path, device: str | torch.device = "cpu", *, repair: bool = True
                ) -> Checkpoint | None:
    """The newest intact checkpoint of a run (normally the one ``latest`` names), or None when it has none.

    Each candidate, newest first, is verified against its manifest and loaded; a damaged one is reported with a
    ``DamagedCheckpointWarning`` and, with ``repair`` (one process of a run), renamed ``damaged_<name>`` with
    ``latest`` pointed at the intact checkpoint, so the run continues from there.

    Raises:
        ValueError: the run has checkpoints but none of them is intact (each one's problem listed).
    """
    candidates = _candidates(run_dir)
    if not candidates:
        latest_dir(run_dir)  # a ``latest`` naming a missing directory (and nothing else) is an error
        return None
    problems = []
    for ckpt_dir in candidates:
        reason = verify_checkpoint(ckpt_dir)
        if reason is None:
            try:
                ckpt = load_checkpoint(ckpt_dir, device)
            except Exception as e:  # a legacy checkpoint without manifest that does not load
                reason = " ".join(str(e).split())[:200]
        if reason is not None:
            problems.append(f"{ckpt_dir.name}: {reason}")
            continue
        if problems:
            warnings.warn(f"damaged checkpoint(s) in {ckpt_dir.parent} ({'; '.join(problems)}); continuing from "
                          f"{ckpt_dir.name}", DamagedCheckpointWarning, stacklevel=2)
            if repair:
                _set_aside(candidates[: len(problems)], ckpt_dir)
        return ckpt
    if problems:
        raise ValueError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(problems)}; move "
                         "the folder away to start again")
    return None


def _candidates(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories newest first, the one ``latest`` names (when it exists) leading."""
    newest = checkpoint_dirs(run_dir)[::-1]
    try:
        named = latest_dir(run_dir)
    except FileNotFoundError:
        named = None
    return ([named] if named is not None else []) + [d for d in newest if d != named]


def _set_aside(damaged: list[Path], intact: Path) -> None:
    for d in damaged:
        target = d.with_name(f"damaged_{d.name}")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(d, target)
    _write_text_atomic(intact.parent / "latest", intact.name + "\n")


def intact_latest(run_dir: str | Path) -> Path | None:
    """The newest checkpoint directory that passes ``verify_checkpoint`` (a warning when it is not the one
    ``latest`` names); None when the run has no checkpoint."""
    candidates = _candidates(run_dir)
    if not candidates:
        return latest_dir(run_dir)
    problems = []
    for ckpt_dir in candidates:
        reason = verify_checkpoint(ckpt_dir)
        if reason is None:
            if problems:
                warnings.warn(f"damaged checkpoint(s) in {ckpt_dir.parent} ({'; '.join(problems)}); using "
                              f"{ckpt_dir.name}", DamagedCheckpointWarning, stacklevel=2)
            return ckpt_dir
        problems.append(f"{ckpt_dir.name}: {reason}")
    if problems:
        raise ValueError(f"no intact checkpoint in {Path(run_dir) / 'checkpoints'}: {'; '.join(problems)}")
    return None


def find_weights(path: str | Path, role: str | None = None, *, ema: bool = True) -> Path:
    """Resolve a run dir, its ``checkpoints`` dir, a checkpoint dir or a ``.safetensors`` file to a file.

    Args:
        path: where to look.
        role: network role (e.g. ``"model"``, ``"student"``); None picks the only role present.
        ema: prefer ``{role}.ema.safetensors`` (falls back to the raw weights when there is no EMA file).

    Returns:
        Path of the weights file.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"not a .safetensors file: {path}")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no such run, checkpoint or weights file: {path}")
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "latest").is_file() or (path.name == "checkpoints" and checkpoint_dirs(path.parent)):
        resolved = intact_latest(path.parent)
        assert resolved is not None
        path = resolved
    roles = sorted({f.name.split(".")[0] for f in path.glob("*.safetensors")})
    if not roles:
        raise FileNotFoundError(f"no checkpoint or weights under {path}")
    if role is None:
        if len(roles) != 1:
            raise ValueError(f"{path} holds several roles {roles}; choose one")
        role = roles[0]
    if role not in roles:
        raise FileNotFoundError(f"no weights for role {role!r} in {path} (available: {roles})")
    if ema and (path / f"{role}.ema.safetensors").is_file():
        return path / f"{role}.ema.safetensors"
    return path / f"{role}.safetensors"
