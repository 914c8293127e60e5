"""GaussianDenoiser parametrisations and the MLP / UNet backbones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from fewstep.denoisers import GaussianDenoiser
from fewstep.nets import MLP, UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import CosineSchedule, FlowSchedule, Schedule

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py
SCHEDULES = [CosineSchedule(), FlowSchedule()]
IDS = ["cosine", "flow"]
PARAMS = ["edm", "x0", "eps", "v", "velocity"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomize(net: nn.Module, seed: int, std: float = 0.2) -> nn.Module:
    """Backbones zero-initialise their output layers; give every parameter random values instead."""
    g = _gen(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g))
    return net.eval()


class Oracle(nn.Module):
    """A fake backbone that returns the exact target of a parametrisation for known (x, eps)."""

    def __init__(self, process: GaussianProcess, param: str, x: Tensor, eps: Tensor, t: Tensor) -> None:
        super().__init__()
        self.process, self.param, self.x, self.eps, self.t = process, param, x, eps, t
        self.seen: dict[str, Tensor | None] = {}

    def forward(self, h: Tensor, t: Tensor, s: Tensor | None, cond: Tensor | None) -> Tensor:
        self.seen = {"h": h, "t": t, "s": s, "cond": cond}
        o = self.process.schedule(self.t)
        a, sg, da, ds = (
            v.view(-1, *([1] * (self.x.ndim - 1))) for v in (o.alpha, o.sigma, o.d_alpha, o.d_sigma)
        )
        x, eps = self.x, self.eps
        if self.param == "x0":
            return x.float()
        if self.param == "eps":
            return eps.float()
        if self.param == "v":
            return (a * eps - sg * x).float()
        if self.param == "velocity":
            return (da * x + ds * eps).float()
        sd = self.process.sigma_data
        den = a**2 * sd**2 + sg**2
        c_skip, c_out = a * sd**2 / den, sg * sd / den.sqrt()
        z = a * x + sg * eps
        return ((x - c_skip * z) / c_out).float()


# ------------------------------------------------------------------------------------------ denoiser
@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("param", PARAMS)
def test_exact_target_recovers_x(schedule: Schedule, param: str) -> None:
    proc = GaussianProcess(schedule, sigma_data=0.5)
    g = _gen(0)
    b = 64
    t = torch.rand(b, generator=g, dtype=F64) * 0.9 + 0.05
    x = 0.5 * torch.randn(b, 1, 4, 4, generator=g, dtype=F64)
    eps = torch.randn(b, 1, 4, 4, generator=g, dtype=F64)
    o = schedule(t)
    z = o.alpha.view(-1, 1, 1, 1) * x + o.sigma.view(-1, 1, 1, 1) * eps
    net = Oracle(proc, param, x, eps, t)
    den = GaussianDenoiser(net, proc, param)  # type: ignore[arg-type]
    out = den(z, t.float())
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.double(), x, rtol=1e-4, atol=1e-4)
    # the backbone sees c_in z (unit variance for data of std sigma_data) and float32 times
    c_in = 1.0 / torch.sqrt(o.alpha**2 * 0.25 + o.sigma**2)
    torch.testing.assert_close(net.seen["h"].double(), c_in.view(-1, 1, 1, 1) * z, rtol=1e-5, atol=1e-5)
    assert net.seen["t"].dtype == torch.float32 and net.seen["s"] is None


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("param", ["edm", "x0", "v", "velocity"])
def test_well_defined_at_t1(schedule: Schedule, param: str) -> None:
    """x0-, v-, velocity- and EDM-nets are exact and finite at t = 1 (alpha = 0)."""
    proc = GaussianProcess(schedule, sigma_data=0.5)
    g = _gen(1)
    x, eps = torch.randn(8, 3, generator=g, dtype=F64), torch.randn(8, 3, generator=g, dtype=F64)
    t = torch.ones(8, dtype=F64)
    z = schedule(t).alpha[:, None] * x + eps
    out = GaussianDenoiser(Oracle(proc, param, x, eps, t), proc, param)(z, t)  # type: ignore[arg-type]
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.double(), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_edm_at_t1_is_sigma_data_times_output(schedule: Schedule) -> None:
    proc = GaussianProcess(schedule, sigma_data=0.7)
    net = _randomize(MLP(3, width=16, depth=1), 0)
    den = GaussianDenoiser(net, proc, "edm")
    z = torch.randn(5, 3, generator=_gen(0))
    t = torch.ones(5)
    with torch.no_grad():
        out = den(z, t)
    assert bool(torch.isfinite(out).all()) and float(out.abs().max()) > 0
    torch.testing.assert_close(
        out, 0.7 * net(z, t).detach(), rtol=1e-5, atol=1e-6
    )  # c_skip = 0, c_in = 1 at t = 1
    # the eps parametrisation is clamped there: finite too
    assert bool(torch.isfinite(GaussianDenoiser(net, proc, "eps")(z, t)).all())


@pytest.mark.parametrize("param", PARAMS)
def test_denoiser_shapes_dtypes_with_real_backbones(param: str) -> None:
    proc = GaussianProcess(CosineSchedule())
    t = torch.tensor([0.1, 0.5, 0.9])
    mlp = GaussianDenoiser(_randomize(MLP(2, width=32, depth=2), 0), proc, param)  # type: ignore[arg-type]
    for z in (torch.randn(3, 2, generator=_gen(0)), torch.randn(3, 2, generator=_gen(0), dtype=F64)):
        out = mlp(z, t)
        assert out.shape == (3, 2) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    unet = GaussianDenoiser(_randomize(UNet(1, base=8, mults=(1, 2)), 1, std=0.1), proc, param)  # type: ignore
    out = unet(torch.randn(3, 1, 8, 8, generator=_gen(1), dtype=F64), t.double())
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_denoiser_errors_and_two_time() -> None:
    proc = GaussianProcess(CosineSchedule())
    with pytest.raises(ValueError, match="parametrization"):
        GaussianDenoiser(MLP(2), proc, "score")  # type: ignore[arg-type]
    z, t, s = torch.zeros(4, 2), torch.full((4,), 0.5), torch.full((4,), 0.2)
    one = GaussianDenoiser(MLP(2, width=16, depth=1), proc, "x0")
    with pytest.raises(ValueError, match="two_time"):
        one(z, t, s=s)
    with pytest.raises(ValueError):
        one(z, torch.full((3,), 0.5))
    two = GaussianDenoiser(_randomize(MLP(2, width=16, depth=1, two_time=True), 0), proc, "x0")
    a, b = two(z, t, s=s), two(z, t, s=torch.full((4,), 0.4))
    assert a.shape == (4, 2) and not torch.allclose(a, b), "s must reach the backbone"
    with pytest.raises(ValueError):
        two(z, t, s=torch.full((4, 1), 0.2))


# ------------------------------------------------------------------------------------------ nets
@pytest.mark.parametrize("shape", [(5, 2), (5, 8), (5, 1, 8, 8)])
def test_mlp_shapes(shape: tuple[int, ...]) -> None:
    dim = math.prod(shape[1:])
    net = _randomize(MLP(dim, width=32, depth=2), 0)
    x = torch.randn(*shape, generator=_gen(0))
    out = net(x, torch.rand(shape[0], generator=_gen(1)))
    assert out.shape == x.shape and out.dtype == torch.float32
    with pytest.raises(ValueError, match="features"):
        net(torch.randn(shape[0], dim + 1), torch.rand(shape[0]))


def test_fresh_nets_output_zero() -> None:
    """Zero-initialised output layers: a fresh backbone predicts 0 (D = c_skip z for EDM)."""
    x = torch.randn(2, 1, 8, 8, generator=_gen(0))
    t = torch.tensor([0.2, 0.7])
    assert torch.equal(MLP(64)(x, t), torch.zeros_like(x))
    assert torch.equal(UNet(1, base=8)(x, t), torch.zeros_like(x))


@pytest.mark.parametrize(
    ("size", "mults"), [(8, (1, 2)), (28, (1, 2, 2)), (28, (1, 2, 2, 2)), (7, (1, 2, 2))]
)
def test_unet_shapes(size: int, mults: tuple[int, ...]) -> None:
    net = _randomize(UNet(1, base=8, mults=mults), 0, std=0.1)
    x = torch.randn(2, 1, size, size, generator=_gen(0))
    out = net(x, torch.tensor([0.3, 0.6]))
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    rgb = UNet(3, base=8, mults=(1, 2), blocks=2, attention=False)
    assert rgb(torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.6])).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        net(torch.randn(2, 3, size, size), torch.tensor([0.3, 0.6]))


def _build(kind: str, **kw) -> nn.Module:
    if kind == "mlp":
        return _randomize(MLP(4, width=32, depth=2, **kw), 3)
    return _randomize(UNet(1, base=8, mults=(1, 2), **kw), 3, std=0.1)


def _input(kind: str, b: int) -> Tensor:
    return (
        torch.randn(b, 4, generator=_gen(5)) if kind == "mlp" else torch.randn(b, 1, 8, 8, generator=_gen(5))
    )


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_two_time_and_labels(kind: str) -> None:
    x = _input(kind, 3)
    t, s = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.1, 0.2, 0.0])
    one = _build(kind)
    with pytest.raises(ValueError, match="two_time"):
        one(x, t, s)
    with pytest.raises(ValueError, match="num_classes"):
        one(x, t, None, torch.tensor([0, 1, 2]))
    two = _build(kind, two_time=True)
    out = two(x, t, s)
    assert out.shape == x.shape
    assert not torch.allclose(out, two(x, t, s + 0.05)), "output must depend on s"
    cond = _build(kind, num_classes=10)
    labels = torch.tensor([0, 3, 10])  # 10 = unconditional row
    out = cond(x, t, None, labels)
    assert out.shape == x.shape
    assert not torch.allclose(out, cond(x, t, None, torch.tensor([1, 4, 9])))
    both = _build(kind, two_time=True, num_classes=10)
    assert both(x, t, s, labels).shape == x.shape


@pytest.mark.parametrize("kind", ["mlp", "unet"])
@pytest.mark.parametrize("variant", ["t", "ts", "labels"])
def test_shared_time_shortcut_matches_per_row(kind: str, variant: str) -> None:
    """A batch at one time (one embedding row, broadcast) equals running each row on its own."""
    kw = {"two_time": variant == "ts", "num_classes": 5 if variant == "labels" else 0}
    net = _build(kind, **kw)
    b = 4
    x = _input(kind, b)
    t = torch.full((b,), 0.42)
    s = torch.full((b,), 0.1) if variant == "ts" else None
    cond = torch.tensor([0, 2, 5, 1]) if variant == "labels" else None
    with torch.no_grad():
        batch = net(x, t, s, cond)
        rows = torch.cat(
            [
                net(
                    x[i : i + 1],
                    t[i : i + 1],
                    None if s is None else s[i : i + 1],
                    None if cond is None else cond[i : i + 1],
                )
                for i in range(b)
            ]
        )
        torch.testing.assert_close(batch, rows, rtol=1e-5, atol=1e-5)
        # a batch that mixes times (per-row embeddings) agrees row by row with shared-time batches
        t_mix = torch.tensor([0.42, 0.8, 0.42, 0.8])
        mixed = net(x, t_mix, s, cond)
        torch.testing.assert_close(mixed[0::2], batch[0::2], rtol=1e-5, atol=1e-5)
        other = net(x, torch.full((b,), 0.8), s, cond)
        torch.testing.assert_close(mixed[1::2], other[1::2], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(batch, other), "output must depend on t"
        if s is not None:  # shared t but per-row s: no shortcut may drop the other rows' s
            s_var = torch.tensor([0.1, 0.3, 0.0, 0.2])
            per_row = torch.cat([net(x[i : i + 1], t[i : i + 1], s_var[i : i + 1]) for i in range(b)])
            torch.testing.assert_close(net(x, t, s_var), per_row, rtol=1e-5, atol=1e-5)


def test_unet_gradients_flow() -> None:
    net = _randomize(UNet(1, base=8, mults=(1, 2), two_time=True), 0, std=0.1).train()
    x = torch.randn(2, 1, 8, 8, generator=_gen(0))
    net(x, torch.tensor([0.5, 0.5]), torch.tensor([0.1, 0.2])).square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert net.emb.s_mlp is not None and float(net.emb.s_mlp[0].weight.grad.abs().sum()) > 0
