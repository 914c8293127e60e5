"""Sampling temperature of categorical denoisers (``denoisers.categorical.Tempered``, ``sample_discrete``)."""

from __future__ import annotations

import pytest
import torch

from _discrete_oracles import ExactDenoiser
from fewstep.denoisers.categorical import Tempered
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers.discrete import sample_discrete
from fewstep.samplers.grids import uniform_grid

N, L = 3, 2


def _p(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N**L, generator=g, dtype=torch.float64) ** 3 + 0.02  # peaked: temperature matters
    return p / p.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_tempered_is_the_power_family_and_keeps_carry_over(temperature: float) -> None:
    proc = MaskedProcess(N)
    net = ExactDenoiser(_p(0), N, L, proc)
    z = torch.tensor([[N, N], [1, N], [N, 2]])  # all-mask, one visible token each side
    t = torch.full((3,), 0.7)
    base, hot = net(z, t), Tempered(net, temperature)(z, t)
    want = torch.softmax(base / temperature, -1)  # p^(1/T) / Z per position
    torch.testing.assert_close(hot.exp(), want)
    assert torch.equal(hot[1, 0], base[1, 0]) and torch.equal(hot[2, 1], base[2, 1])  # carry-over rows kept
    assert torch.isinf(hot[..., N]).all()  # the mask is never predicted
    h = -(hot.exp() * hot.clamp_min(-1e30)).sum(-1)[0]
    h1 = -(base.exp() * base.clamp_min(-1e30)).sum(-1)[0]
    assert (h > h1).all() if temperature > 1 else (h < h1).all() if temperature < 1 else torch.allclose(h, h1)
    assert Tempered(net, temperature).time_conditioned == net.time_conditioned
    with pytest.raises(ValueError, match="temperature"):
        Tempered(net, 0.0)


@pytest.mark.parametrize("temperature", [0.6, 1.6])
def test_one_step_masked_sampler_draws_the_tempered_marginals(temperature: float) -> None:
    """From all-mask in one step every position is drawn independently from its tempered marginal."""
    p = _p(1)
    proc = MaskedProcess(N)
    net = ExactDenoiser(p, N, L, proc)
    tokens, _ = sample_discrete(net, (40000, L), grid=uniform_grid(1),
                                generator=torch.Generator().manual_seed(0), temperature=temperature)
    pm = p.reshape(N, N)
    marg = [pm.sum(1), pm.sum(0)]
    tempered = [m ** (1 / temperature) / (m ** (1 / temperature)).sum() for m in marg]
    law = torch.outer(tempered[0], tempered[1]).reshape(-1)
    emp = torch.bincount(tokens[:, 0] * N + tokens[:, 1], minlength=N * N).double() / tokens.shape[0]
    assert 0.5 * float((emp - law).abs().sum()) < 0.012
    untempered = torch.outer(marg[0], marg[1]).reshape(-1)
    assert 0.5 * float((emp - untempered).abs().sum()) > 0.05  # the test can tell the temperature apart


def test_uniform_sampler_takes_the_temperature() -> None:
    proc = UniformProcess(N)
    net = ExactDenoiser(_p(2), N, L, proc, mode="mean")
    a, _ = sample_discrete(net, (4000, L), grid=uniform_grid(2), generator=torch.Generator().manual_seed(0))
    b, _ = sample_discrete(net, (4000, L), grid=uniform_grid(2), generator=torch.Generator().manual_seed(0),
                           temperature=1.0)
    c, _ = sample_discrete(net, (4000, L), grid=uniform_grid(2), generator=torch.Generator().manual_seed(0),
                           temperature=3.0)
    assert torch.equal(a, b) and not torch.equal(a, c)

    def ent(x: torch.Tensor) -> float:
        f = torch.bincount(x[:, 0] * N + x[:, 1], minlength=N * N).double() / x.shape[0]
        return float(-(f * f.clamp_min(1e-12).log()).sum())

    assert ent(c) > ent(a) + 0.05  # a hotter denoiser spreads the samples


def test_sample_cli_temperature(tmp_path, capsys) -> None:
    from safetensors import safe_open

    from fewstep.cli import main

    run = tmp_path / "teacher"
    assert main(["train", "--preset", "hmm-mdlm", "--train.total-nimg", "256", "--train.batch-size", "64",
                 "--net.width", "32", "--net.depth", "1", "--data.length", "8", "--train.device", "cpu",
                 "--run-dir", str(run)]) == 0
    outs = {}
    for temp in ("1.0", "3.0"):
        out = tmp_path / temp
        assert main(["sample", "--run", str(run), "--steps", "4", "--n", "64", "--device", "cpu", "--out", str(out),
                     "--temperature", temp]) == 0
        stem = "samples_ancestral_4" + ("" if temp == "1.0" else f"_T{float(temp):g}")
        with safe_open(str(out / f"{stem}.safetensors"), "pt") as f:
            outs[temp] = f.get_tensor("x")
            assert f.metadata()["temperature"] == temp
    capsys.readouterr()
    assert not torch.equal(outs["1.0"], outs["3.0"])
    with pytest.raises(SystemExit) as e:
        main(["sample", "--run", str(run), "--steps", "4", "--n", "8", "--device", "cpu", "--temperature", "0"])
    assert str(e.value).startswith("error:") and "temperature" in str(e.value)
