"""Helpers shared by several test files (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from fewstep.data.toys import GMM

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gmm2d() -> GMM:
    """3 components with different weights and full covariances, well separated."""
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.5, -2.5]], dtype=F64)
    covs = torch.tensor(
        [[[0.30, 0.10], [0.10, 0.20]], [[0.10, 0.00], [0.00, 0.40]], [[0.25, -0.08], [-0.08, 0.15]]],
        dtype=F64,
    )
    return GMM(weights, means, covs)


def train_mm(m, nets: dict, opts: dict, draw_x, iters: int, g: torch.Generator) -> None:
    """Plain MM loop for tests: each iteration draws x = draw_x(g) and runs every phase with its optimizer
    (clip-norm 1), like the Trainer but without checkpoints."""
    for _ in range(iters):
        x = draw_x(g)
        for phase in m.phases():
            (role,) = phase.trains
            opts[role].zero_grad()
            m.loss(phase.name, {"x": x}, nets, g).loss.backward()
            torch.nn.utils.clip_grad_norm_(nets[role].parameters(), 1.0)
            opts[role].step()
