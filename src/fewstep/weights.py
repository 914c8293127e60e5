"""Weight files: state dicts as ``.safetensors`` written atomically (temp file, fsync, ``os.replace``) and read
back without unpickling; the helpers that strip DDP / compile wrappers. Used by checkpoints and by any layer
that caches a trained network (e.g. text evaluators)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import metadata as _metadata
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn


def version() -> str:
    """The installed fewstep version (``"unknown"`` when not installed)."""
    try:
        return _metadata.version("fewstep")
    except _metadata.PackageNotFoundError:
        return "unknown"


def unwrap_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes from state-dict keys."""
    out = {k.replace("_orig_mod.", ""): v for k, v in state_dict.items()}
    while out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def unwrap_module(module: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories cannot be opened on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_weights(path: str | Path, state_dict: Mapping[str, Tensor],
                 metadata: Mapping[str, object] | None = None) -> Path:
    """Write a state dict to a ``.safetensors`` file (atomically: temp file + ``os.replace``).

    Args:
        path: destination file.
        state_dict: tensors by name; wrapper prefixes are stripped, tensors copied to contiguous CPU memory.
        metadata: string metadata; non-string values are stored as JSON. ``"fewstep"`` (the version) is
            added when absent.

    Returns:
        The path written.
    """
    path = Path(path)
    clean = unwrap_state_dict(state_dict)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in clean.items()}
    meta = {"fewstep": version()}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.chmod(tmp, 0o644)  # safetensors creates 0600 files; checkpoints are meant to be shared
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_weights(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a ``.safetensors`` file: ``(state_dict, metadata)``; a clear error if it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as e:
        raise ValueError(f"not a valid safetensors file: {path} ({e})") from e
    return tensors, meta
