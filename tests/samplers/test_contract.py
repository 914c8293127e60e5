"""The one sampler contract (``fewstep.samplers`` docstring, docs/concepts.md "Sampler"):

    fn(denoiser, [process,] shape, *, grid, generator, device="cpu", cond=None, **method options)

checked on every public entry point by signature, and by running each on a tiny exact denoiser: the output has
the requested shape and the dtype of the rule (float64 samples, int64 tokens with a stats dict).
"""

from __future__ import annotations

import inspect

import pytest
import torch

from _discrete_oracles import ExactDenoiser
from _shared import gen, gmm2d
from fewstep.data.toys import GMMOracle
from fewstep.denoisers.imm import ddim as ddim_map
from fewstep.processes.gaussian import GaussianProcess
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers import (
    ancestral,
    ddim,
    euler,
    heun,
    imm_grid,
    multistep,
    sample,
    sample_discrete,
    sample_imm,
    sample_masked,
    sample_student,
    sample_token_student,
    sample_uniform,
    student_grid,
    uniform_grid,
)
from fewstep.schedules import CosineSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")  # see tests/conftest.py
P = inspect.Parameter
SCHED = CosineSchedule()
PROC = GaussianProcess(SCHED)
V, L = 3, 2  # vocabulary and length of the token oracles

ENTRY_POINTS = {"sample": sample, "sample_student": sample_student, "sample_imm": sample_imm,
                "sample_masked": sample_masked, "sample_uniform": sample_uniform, "sample_discrete": sample_discrete,
                "sample_token_student": sample_token_student}
WITH_PROCESS = {"sample", "sample_student"}
TOKEN_SAMPLERS = {"sample_masked", "sample_uniform", "sample_discrete", "sample_token_student"}
STEP_FUNCTIONS = {"ancestral": ancestral, "ddim": ddim, "euler": euler, "heun": heun, "multistep": multistep}


class OracleMap(torch.nn.Module):
    """An exact IMM map: f_{s,t}(x) = ddim(x, E[x0 | x_t]) with the GMM oracle (sigma_d = 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.schedule, self.sigma_d, self.oracle = SCHED, 1.0, GMMOracle(gmm2d(), SCHED)

    def forward(self, x, s, t, cond=None):
        return ddim_map(x, self.oracle(x.double(), t.double()), src_t=t, dst_s=s, schedule=self.schedule)


def _token_law(seed: int) -> torch.Tensor:
    p = torch.rand(V**L, generator=gen(seed), dtype=torch.float64) + 0.1
    return p / p.sum()


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_signature(name: str) -> None:
    params = inspect.signature(ENTRY_POINTS[name]).parameters
    names = list(params)
    positional = [n for n, p in params.items() if p.kind == P.POSITIONAL_OR_KEYWORD]
    assert names[0] == "denoiser" and params["denoiser"].kind == P.POSITIONAL_OR_KEYWORD
    assert positional == (["denoiser", "process", "shape"] if name in WITH_PROCESS else ["denoiser", "shape"])
    for kw in ("grid", "generator", "device", "cond"):
        assert params[kw].kind == P.KEYWORD_ONLY, (name, kw)
    assert params["grid"].default is P.empty and params["generator"].default is P.empty
    assert params["device"].default == "cpu" and params["cond"].default is None
    assert "steps" not in params and "n" not in params and "length" not in params


@pytest.mark.parametrize("name", sorted(STEP_FUNCTIONS))
def test_step_functions_take_a_state_and_a_positional_grid(name: str) -> None:
    params = inspect.signature(STEP_FUNCTIONS[name]).parameters
    assert list(params)[:4] == ["denoiser", "process", "z", "grid"]
    assert all(params[n].kind == P.POSITIONAL_OR_KEYWORD for n in ("denoiser", "process", "z", "grid"))
    assert params["generator"].kind == P.KEYWORD_ONLY and params["cond"].kind == P.KEYWORD_ONLY
    assert params["cond"].default is None


def _run(name: str, shape: tuple[int, ...]):
    g = gen(0)
    oracle = GMMOracle(gmm2d(), SCHED)
    if name == "sample":
        return sample(oracle, PROC, shape, grid=uniform_grid(3), generator=g, sampler="ancestral")
    if name == "sample_student":
        return sample_student(oracle, PROC, shape, grid=student_grid(2), generator=g)
    if name == "sample_imm":
        return sample_imm(OracleMap(), shape, grid=imm_grid(2, SCHED, t_max=0.99, t_min=0.0), generator=g,
                          sampler="restart")
    masked = ExactDenoiser(_token_law(1), V, L, MaskedProcess(V))
    uniform = ExactDenoiser(_token_law(2), V, L, UniformProcess(V), mode="loo")
    if name == "sample_masked":
        return sample_masked(masked, shape, grid=uniform_grid(3), generator=g)
    if name == "sample_uniform":
        return sample_uniform(uniform, shape, grid=uniform_grid(3), generator=g)
    if name == "sample_token_student":
        return sample_token_student(uniform, shape, grid=uniform_grid(3), generator=g, kernel="sample-x")
    return sample_discrete(uniform, shape, grid=uniform_grid(3), generator=g, device="cpu")


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_output_shape_and_dtype(name: str) -> None:
    """shape = (5, ...) in, [5, ...] out: float64 samples, or (int64 tokens, stats); same generator, same output."""
    if name in TOKEN_SAMPLERS:
        out = _run(name, (5, L))
        assert isinstance(out, tuple) and len(out) == 2
        tokens, stats = out
        assert tokens.shape == (5, L) and tokens.dtype == torch.int64
        assert bool(((tokens >= 0) & (tokens < V)).all())
        assert isinstance(stats, dict) and stats["steps"] == 3 and stats["nfe"] > 0
        assert torch.equal(tokens, _run(name, (5, L))[0])
    else:
        x = _run(name, (5, 2))
        assert torch.is_tensor(x) and x.shape == (5, 2) and x.dtype == torch.float64
        assert torch.equal(x, _run(name, (5, 2)))


def test_grid_and_generator_are_required() -> None:
    oracle = GMMOracle(gmm2d(), SCHED)
    with pytest.raises(TypeError):
        sample_student(oracle, PROC, (5, 2), generator=gen(0))  # no grid
    with pytest.raises(TypeError):
        sample_student(oracle, PROC, (5, 2), grid=student_grid(1))  # no generator
    with pytest.raises(TypeError):
        sample_student(oracle, PROC, (5, 2), steps=1, generator=gen(0))  # no step count inside a sampler


def test_categorical_samplers_check_shape_and_refuse_cond() -> None:
    net = ExactDenoiser(_token_law(1), V, L, MaskedProcess(V))
    with pytest.raises(ValueError, match="token shape"):
        sample_masked(net, (5,), grid=uniform_grid(2), generator=gen(0))
    with pytest.raises(ValueError, match="unconditional"):
        sample_discrete(net, (5, L), grid=uniform_grid(2), generator=gen(0), cond=torch.zeros(5, dtype=torch.long))


def test_low_precision_opt_out_still_returns_int64_tokens() -> None:
    net = ExactDenoiser(_token_law(2), V, L, UniformProcess(V), mode="loo")
    tokens, _ = sample_uniform(net, (5, L), grid=uniform_grid(2), generator=gen(0),
                               dtype_categorical=torch.float32, allow_low_precision=True)
    assert tokens.shape == (5, L) and tokens.dtype == torch.int64
