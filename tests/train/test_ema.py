"""EMA: the cached foreach update (issue 28) equals a per-parameter lerp bit for bit, follows a moved module and
copies buffers."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fewstep.train.ema import EMA


def _reference_update(avg: nn.Module, src: nn.Module, beta: float) -> None:
    """The per-parameter update the EMA replaced (name lookup every step, one lerp_ per tensor)."""
    with torch.no_grad():
        params = dict(src.named_parameters())
        for name, p in avg.named_parameters():
            p.copy_(params[name]) if beta == 0.0 else p.lerp_(params[name].detach(), 1.0 - beta)
        buffers = dict(src.named_buffers())
        for name, b in avg.named_buffers():
            b.copy_(buffers[name])


def _step(net: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        net[1].running_mean.add_(1.0)


def test_foreach_update_is_bit_identical_to_per_parameter_lerp() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.Linear(32, 8))
    ref = copy.deepcopy(net).eval().requires_grad_(False)
    ema = EMA(net, halflife_nimg=1_000, rampup_ratio=0.05)
    gen = torch.Generator().manual_seed(1)
    for it in range(25):
        _step(net, gen)
        beta = ema.update(net, 128, 128 * (it + 1))
        _reference_update(ref, net, beta)
    assert 0.0 < beta < 1.0
    for (name, a), b in zip(ref.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)


def test_update_follows_a_module_moved_after_the_first_update() -> None:
    """``.to()`` replaces the tensors the cache holds: the next update must read the moved weights."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = EMA(net, halflife_nimg=0)
    ema.update(net, 1, 1)
    net.double()
    with torch.no_grad():
        net[0].weight.fill_(3.0)
    ema.update(net, 1, 2)  # half-life 0: the average equals the weights
    assert torch.equal(ema.module[0].weight, torch.full((4, 4), 3.0))
    assert ema.module[0].weight.dtype == torch.float32
