"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def torch_single_thread() -> Iterator[None]:
    """Run a test with one intra-op thread, restoring the previous setting afterwards.

    The toy tests issue thousands of tiny ops; on a 2-core machine shared with other processes the
    intra-op pool's synchronisation makes them 5-50x slower than running single-threaded.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
