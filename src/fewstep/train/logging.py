"""Run logging: ``log.jsonl`` (always), ``env.json``, EDM-style status lines, optional TensorBoard.

Loggers receive flat records such as ``{"event": "train", "nimg": 12800, "loss": 0.12, ...}``; only rank 0
writes (the ``enabled`` default), and every line is flushed so a killed run keeps its log.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from fewstep.train import distributed


class Logger(Protocol):
    """Anything that accepts log records."""

    def log(self, record: Mapping[str, Any]) -> None:
        """Record one flat dict (``event``, ``nimg`` and scalars)."""

    def close(self) -> None:
        """Flush and release resources."""


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class JsonlLogger:
    """Appends one JSON object per line to ``run_dir/log.jsonl`` (rank 0 only by default).

    Args:
        run_dir: the run directory (created if needed).
        enabled: write at all; default: only on rank 0.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool | None = None) -> None:
        self.path = Path(run_dir) / "log.jsonl"
        self.enabled = distributed.is_main() if enabled is None else enabled
        self._file = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a")  # kept open for the run

    def log(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (tensors become numbers; ``time`` is added) and flush."""
        if self._file is None:
            return
        row = {"time": round(time.time(), 3), **{str(k): _plain(v) for k, v in record.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a ``log.jsonl`` file (skipping a torn last line)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class TensorBoardLogger:
    """Writes numeric fields as scalars ``{event}/{key}`` at step ``nimg`` (rank 0 only; lazy import).

    Args:
        run_dir: the run directory; events go to ``run_dir/tb``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.writer = None
        if not distributed.is_main():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("TensorBoard logging needs `pip install fewstep[tb]`") from e
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"))

    def log(self, record: Mapping[str, Any]) -> None:
        """Add every numeric field of ``record`` except ``nimg``/``time``."""
        if self.writer is None:
            return
        step = int(record.get("nimg", 0))
        event = str(record.get("event", "train"))
        for key, value in record.items():
            if key in ("nimg", "time", "event"):
                continue
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{event}/{key}", value, step)

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def environment(device: str | torch.device | None = None) -> dict[str, Any]:
    """Versions, git SHA, host and device of this process."""
    import numpy

    from fewstep.train.checkpoint import version

    env: dict[str, Any] = {
        "fewstep": version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "git_sha": _git_sha(),
        "hostname": socket.gethostname(),
        "world": distributed.world(),
        "device": str(device) if device is not None else None,
        "cuda": torch.version.cuda,
    }
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return env


def write_env(run_dir: str | Path, device: str | torch.device | None = None) -> dict[str, Any]:
    """Write ``run_dir/env.json`` (rank 0 only) and return its content."""
    env = environment(device)
    if distributed.is_main():
        path = Path(run_dir) / "env.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(env, indent=2) + "\n")
    return env


def format_count(n: float) -> str:
    """``12800 -> "12.8k"``, ``1_500_000 -> "1.50M"``."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}G"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(int(n))


def format_seconds(seconds: float) -> str:
    """``83 -> "00:01:23"``; days are prefixed (``"1d 02:03:04"``)."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def _num(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def status_line(nimg: int, logs: Mapping[str, float], *, lr: float | None = None,
                sec_per_kimg: float | None = None, elapsed: float | None = None) -> str:
    """EDM-style ``nimg 12.8k  loss 0.123  lr 1e-3  sec/kimg 0.42  elapsed 00:01:23``."""
    parts = [f"nimg {format_count(nimg)}"]
    parts += [f"{key} {_num(float(value))}" for key, value in logs.items()]
    if lr is not None:
        parts.append(f"lr {lr:.3g}")
    if sec_per_kimg is not None:
        parts.append(f"sec/kimg {sec_per_kimg:.3g}")
    if elapsed is not None:
        parts.append(f"elapsed {format_seconds(elapsed)}")
    return "  ".join(parts)


class ProgressBar:
    """A tqdm bar counting samples (nimg) on rank 0 when stdout is a terminal; otherwise a no-op.

    Status lines go through :meth:`write` so they print above the bar instead of breaking it.
    """

    def __init__(self, total: int, initial: int, *, enabled: bool) -> None:
        self._bar = None
        if enabled and distributed.is_main() and sys.stdout.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True,
                             leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
