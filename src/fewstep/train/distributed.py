"""Process-group helpers for ``torchrun`` + DDP.

``init()`` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``) and joins a process
group (nccl on CUDA, gloo on CPU). Without those variables, or with ``WORLD_SIZE=1``, there is one
process and every collective below is a no-op, so library code calls them unconditionally.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init(backend: str | None = None, *, timeout_s: float = 1800.0) -> None:
    """Join the process group described by the environment (idempotent; no-op for one process).

    Args:
        backend: ``"nccl"`` / ``"gloo"``; default nccl when CUDA is available, else gloo (CPU training
            on a CUDA machine must ask for gloo; the ``Trainer`` picks it from its device).
        timeout_s: collective timeout in seconds (a stuck rank fails instead of hanging forever).
    """
    if dist.is_initialized() or _env_int("WORLD_SIZE", 1) <= 1:
        return
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))


def rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    """World size (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 without a process group)."""
    return _env_int("LOCAL_RANK", 0) if dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (the rank that writes files and prints)."""
    return rank() == 0


def print0(*args: object, **kwargs: object) -> None:
    """``print`` on rank 0 only (flushed)."""
    if is_main():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)  # type: ignore[call-overload]


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is left untouched)."""
    out = tensor.detach().clone()
    if dist.is_initialized() and world() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world()
    return out


def any_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps stop decisions consistent)."""
    return any_true_each((flag,), device)[0]


def any_true_each(flags: tuple[bool, ...], device: torch.device | str = "cpu") -> tuple[bool, ...]:
    """``any_true`` of several flags with one all-reduce."""
    if not (dist.is_initialized() and world() > 1):
        return tuple(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v > 0) for v in t.tolist())


def local_device(device: torch.device | str) -> torch.device:
    """The device of this rank: ``"cuda"`` becomes ``cuda:LOCAL_RANK``; others are returned as is."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank())
    return dev


def wrap_ddp(module: nn.Module, device: torch.device | str, *, find_unused: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` when world > 1, else ``module`` itself.

    Args:
        module: a trainable network already on ``device`` (never a frozen teacher).
        device: its device; CUDA modules get ``device_ids=[index]``, CPU ones none.
        find_unused: let DDP tolerate parameters that get no gradient in a forward.
    """
    if world() <= 1:
        return module
    dev = torch.device(device)
    ids = [dev.index if dev.index is not None else local_rank()] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def cleanup() -> None:
    """Leave the process group (safe to call without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
