"""D-MMD students are sampled with the kernel they are trained for (``sample-x``), not Duo's.

D-MMD trains G(z_t, t) as a generator of x given z_t: x ~ Cat(G), then z_s ~ q(z_s | z_t, x). On a single-token
(L = 1) uniform-process source the exactly optimal student is the true posterior G = p(x0 | z_t) (the
``mean`` oracle of ``_discrete_oracles``); with it the ``sample-x`` chain is the exact reverse process and
reproduces the data law at every k, while Duo's kernel (G plugged into the one-hot posterior, i.e. clean token
drawn from G(x) q_t(z_t | x) / Z) counts the current token twice. At k = 1 both are exact (alpha(1) = 0: the
all-noise token carries no evidence), so Duo's error shows from k = 2 on. Also: the kernel is recorded in the
method's config and in ``DMMDCfg``, ``generate`` honours ``kernel`` / ``temperature`` options, bad names are a
one-line ValueError, and ``fewstep sample``'s loader (``load_trained``) picks the run's kernel (old runs
without the field: ``sample-x``; IDLM runs: ``duo``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from _discrete_oracles import ExactDenoiser
from fewstep.build.distill import build_discrete_distill_method
from fewstep.build.distill_config import with_dmmd_policy
from fewstep.build.runs import load_trained
from fewstep.config import DataCfg, DistillConfig, DMMDCfg, IDLMCfg, NetCfg, UniformCfg, from_dict, to_dict
from fewstep.methods.discrete_mmd import DiscreteMMD
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess
from fewstep.samplers.discrete import sample_token_student
from fewstep.samplers.grids import uniform_grid

pytestmark = pytest.mark.usefixtures("torch_single_thread")

P_DATA = torch.tensor([0.5, 0.2, 0.1, 0.08, 0.06, 0.04, 0.02], dtype=torch.float64)
N = P_DATA.numel()
N_SAMPLES = 40_000
# exact TV(law of the Duo chain with the exact posterior, data law), from the transition matrices below
DUO_TV = {1: 0.0, 2: 0.1311, 4: 0.1745}


class Exact(ExactDenoiser):
    """An exact oracle with the attributes D-MMD reads from its nets (no latent noise)."""

    latent_dim = 0


def exact_method(k: int, kernel: str | None = None, process=None, **options) -> DiscreteMMD:
    """D-MMD with the exactly optimal student (the true posterior p(x0 | z_t)); teacher and aux: p(x0).
    ``kernel`` None: the method's default."""
    proc = process or UniformProcess(N)
    mode = "mean" if proc.kind == "uniform" else "masked"
    student = Exact(P_DATA, N, 1, proc, mode=mode)
    teacher, aux = Exact(P_DATA, N, 1, proc, mode="loo"), Exact(P_DATA, N, 1, proc, mode="loo")
    if proc.kind == "masked":
        teacher, aux = Exact(P_DATA, N, 1, proc), Exact(P_DATA, N, 1, proc)
    options = options | ({} if kernel is None else {"kernel": kernel})
    return DiscreteMMD(teacher, student, aux, length=1, k=k, **options)


def tv(x: torch.Tensor, p: torch.Tensor = P_DATA) -> float:
    freq = torch.bincount(x.reshape(-1), minlength=p.numel()).double() / x.numel()
    return 0.5 * float((freq - p).abs().sum())


def exact_laws(k: int) -> dict[str, torch.Tensor]:
    """The exact law of z_0 of both k-step chains with the exact posterior student (L = 1: N x N matrices)."""
    proc = UniformProcess(N)
    den = Exact(P_DATA, N, 1, proc, mode="mean")
    z = torch.arange(N).reshape(N, 1)
    eye = torch.eye(N, dtype=torch.float64)
    grid = uniform_grid(k)
    law = {name: torch.full((N,), 1.0 / N, dtype=torch.float64) for name in ("sample-x", "duo")}
    for i in range(k):
        t, s = grid[i].expand(N), grid[i + 1].expand(N)
        g = den(z, t).exp()  # [N, 1, N]: row z is G(z, t)
        duo = proc.posterior_probs(z, g, t, s)[:, 0]
        sx = sum(g[:, :, x:x + 1] * proc.posterior_probs(z, eye[x].expand(N, 1, N), t, s) for x in range(N))[:, 0]
        law["duo"], law["sample-x"] = law["duo"] @ duo, law["sample-x"] @ sx
    return law


# ------------------------------------------------------------------------------------------------- laws
@pytest.mark.parametrize("k", [1, 2, 4])
def test_exact_chain_laws(k):
    """The transition-matrix laws: sample-x with the exact posterior is the exact reverse chain (TV 0 to
    1e-12); Duo's kernel is exact at k = 1 only and off by DUO_TV at k = 2, 4."""
    law = exact_laws(k)
    assert 0.5 * float((law["sample-x"] - P_DATA).abs().sum()) < 1e-12
    assert 0.5 * float((law["duo"] - P_DATA).abs().sum()) == pytest.approx(DUO_TV[k], abs=1e-4)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_generate_reproduces_the_data_law(k):
    """DiscreteMMD.generate with its default kernel and the exact posterior student reproduces the data law
    (40,000 samples; the expected Monte-Carlo TV is ~0.004). The old generate (always Duo's kernel) fails at
    k = 2, 4 (TV ~0.13 / 0.17)."""
    method = exact_method(k)
    x, stats = method.generate(N_SAMPLES, nets={"student": method.student}, generator=torch.Generator().manual_seed(k),
                               batch_size=None, return_stats=True)
    assert x.shape == (N_SAMPLES, 1) and stats["steps"] == k
    assert tv(x) < 0.02, tv(x)
    assert stats["kernel"] == "sample-x"


@pytest.mark.parametrize("k", [2, 4])
def test_duo_kernel_is_off(k):
    """The same student through Duo's kernel (method option, and generate's explicit override of a sample-x
    method, bit-identical): TV within Monte-Carlo error of the exact DUO_TV, far above sample-x's."""
    duo = exact_method(k, kernel="duo")
    nets = {"student": duo.student}
    x, stats = duo.generate(N_SAMPLES, nets=nets, generator=torch.Generator().manual_seed(k), batch_size=None,
                            return_stats=True)
    assert stats["kernel"] == "duo"
    assert abs(tv(x) - DUO_TV[k]) < 0.02 and tv(x) > 0.1, tv(x)
    y = exact_method(k).generate(N_SAMPLES, nets=nets, generator=torch.Generator().manual_seed(k), batch_size=None,
                                 kernel="duo")
    assert torch.equal(x, y)


def test_generate_forwards_kernel_and_temperature():
    """generate == sample_token_student with the method's kernel (or the override) and the temperature."""
    method = exact_method(2)
    nets = {"student": method.student}
    for opts in ({}, {"kernel": None}, {"kernel": "duo"}, {"temperature": 0.5}, {"kernel": "duo", "temperature": 2.0}):
        kernel = opts.get("kernel") or "sample-x"
        want, _ = sample_token_student(method.student, (512, 1), grid=uniform_grid(2),
                                       generator=torch.Generator().manual_seed(0), batch_size=None, kernel=kernel,
                                       temperature=opts.get("temperature", 1.0))
        got = method.generate(512, nets=nets, generator=torch.Generator().manual_seed(0), batch_size=None, **opts)
        assert torch.equal(got, want), opts
    cold = method.generate(512, nets=nets, generator=torch.Generator().manual_seed(0), temperature=0.5)
    assert not torch.equal(cold, method.generate(512, nets=nets, generator=torch.Generator().manual_seed(0)))


def test_masked_kernels_have_one_law():
    """Masked process: the option is accepted and recorded, and both kernels give the same tokens."""
    method = exact_method(2, kernel="duo", process=MaskedProcess(N))
    assert method.config()["kernel"] == "duo"
    nets = {"student": method.student}
    a = method.generate(256, nets=nets, generator=torch.Generator().manual_seed(0))
    b = method.generate(256, nets=nets, generator=torch.Generator().manual_seed(0), kernel="sample-x")
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------- config / errors
def test_config_records_the_kernel():
    assert exact_method(2).config()["kernel"] == "sample-x"
    assert exact_method(2, kernel="duo").config()["kernel"] == "duo"
    assert DMMDCfg().kernel == "sample-x"
    old = to_dict(DistillConfig(method=DMMDCfg(), discrete=UniformCfg()))
    del old["method"]["kernel"]
    assert from_dict(DistillConfig, old).method.kernel == "sample-x"


def test_bad_kernel_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown sampling kernel 'bogus'; use sample-x or duo") as e:
        exact_method(2, kernel="bogus")
    assert "\n" not in str(e.value)
    method = exact_method(2)
    with pytest.raises(ValueError, match="unknown sampling kernel 'ancestral'") as e:
        method.generate(8, nets={"student": method.student}, generator=torch.Generator().manual_seed(0),
                        kernel="ancestral")
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- fewstep sample path
def _distill_cfg(method) -> DistillConfig:
    return DistillConfig(teacher="unused", data=DataCfg(name="text-hmm", vocab=N, length=3),
                         net=NetCfg(kind="text_dit", width=16, depth=1, heads=2), method=method,
                         discrete=UniformCfg())


def _fake_run(root: Path, cfg: DistillConfig, *, drop_kernel: bool = False) -> Path:
    """A distillation run folder with config.json and student weights (no training)."""
    root.mkdir(parents=True)
    cfg = with_dmmd_policy(cfg)  # what a run's config.json records: the resolved latent student
    method = build_discrete_distill_method(cfg, None)
    d = to_dict(cfg)
    if drop_kernel:
        del d["method"]["kernel"]
    (root / "config.json").write_text(json.dumps(d))
    save_file({k: v.contiguous() for k, v in method.student.state_dict().items()}, str(root / "student.safetensors"))
    return root


@pytest.mark.parametrize(("method", "drop", "want"), [(DMMDCfg(steps=2), False, "sample-x"),
                                                      (DMMDCfg(steps=2, kernel="duo"), False, "duo"),
                                                      (DMMDCfg(steps=2, kernel="duo"), True, "sample-x"),
                                                      (IDLMCfg(), False, "duo")])
def test_sample_loader_uses_the_runs_kernel(tmp_path, method, drop, want):
    """load_trained (``fewstep sample``) of a D-MMD run samples with its config's kernel (an old config.json
    without the field: sample-x); an IDLM run with duo; an explicit ``kernel`` option wins."""
    cfg = _distill_cfg(method)
    if method.name == "dmmd":
        assert build_discrete_distill_method(cfg, None).kernel == method.kernel  # the trainer's method too
    run = _fake_run(tmp_path / "run", cfg, drop_kernel=drop)
    _, sampler, nets = load_trained(run, ema=False)
    assert sampler.kernel == want
    _, stats = sampler.generate(16, steps=2, nets=nets, generator=torch.Generator().manual_seed(0), return_stats=True)
    assert stats["kernel"] == want
    other = "duo" if want == "sample-x" else "sample-x"
    _, stats = sampler.generate(16, steps=2, nets=nets, generator=torch.Generator().manual_seed(0), return_stats=True,
                                kernel=other)
    assert stats["kernel"] == other
    with pytest.raises(ValueError, match="unknown sampling kernel"):
        sampler.generate(4, steps=2, nets=nets, generator=torch.Generator().manual_seed(0), kernel="bogus")



def test_teacher_moment_is_the_posterior_mean_and_the_exact_posterior_is_the_fixed_point():
    """Uniform D-MMD compares the generator's posterior mean E_g[x | z_s] (what the auxiliary learns) with the
    teacher's. A NELBO-trained uniform teacher outputs the leave-one-out conditional (``loo``); its posterior mean
    is that output reweighted by the current token's likelihood. ``teacher_moment="posterior"`` (default) gives
    exactly the posterior mean, so at the exact posterior student (aux = its posterior mean = the data's) the
    generator gradient vanishes; the first implementation (``denoiser``) keeps pushing it (towards a
    leave-one-out denoiser, the one Duo's kernel samples well)."""
    from fewstep.methods.discrete_mmd import dmmd_generator_terms

    proc = UniformProcess(N)
    loo, mean = Exact(P_DATA, N, 1, proc, mode="loo"), Exact(P_DATA, N, 1, proc, mode="mean")
    z = torch.arange(N).reshape(N, 1).repeat(5, 1)
    s = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64).repeat_interleave(N)
    want = mean(z, s).exp()
    post = DiscreteMMD(loo, mean, Exact(P_DATA, N, 1, proc, mode="loo"), length=1, k=4)
    old = DiscreteMMD(loo, mean, Exact(P_DATA, N, 1, proc, mode="loo"), length=1, k=4, teacher_moment="denoiser")
    assert post.config()["teacher_moment"] == "posterior" and old.config()["teacher_moment"] == "denoiser"
    torch.testing.assert_close(post.teacher_probs(loo, z, s).double(), want, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(post.moment_logp(loo(z, s), z, s).exp(), want)  # float64, the log-space form
    assert float((old.teacher_probs(loo, z, s).double() - want).abs().max()) > 0.05
    probs = torch.softmax(torch.randn(z.shape[0], 1, N, generator=torch.Generator().manual_seed(0)), -1)
    probs.requires_grad_(True)
    pos = torch.ones_like(z, dtype=torch.bool)
    # converged auxiliaries: the new one (loo-parametrised like the teacher) reads as the posterior mean; the old
    # one fits E_g[x | z_s] = the posterior mean directly
    for method, log_phi, zero in ((post, post.moment_logp(loo(z, s), z, s), True), (old, mean(z, s), False)):
        log_theta = method.teacher_probs(loo, z, s).clamp_min(1e-30).log()
        grad, = torch.autograd.grad(dmmd_generator_terms(probs, log_phi.float(), log_theta, pos).sum(), probs)
        assert (float(grad.abs().max()) < 1e-5) == zero, float(grad.abs().max())
    with pytest.raises(ValueError, match="teacher_moment"):
        DiscreteMMD(loo, mean, Exact(P_DATA, N, 1, proc, mode="loo"), length=1, teacher_moment="other")


def test_fixed_gap_trains_on_the_sampler_grid_gap():
    """gap=fixed: every draw has t = min(t_max, s + 1/k); uniform: t - s spreads over (0, 1/k]. Same stream."""
    uniform, fixed = exact_method(4), exact_method(4, gap="fixed")
    x0 = torch.zeros(4096, 1, dtype=torch.long)
    du = uniform.draw(x0, torch.Generator().manual_seed(3))
    df = fixed.draw(x0, torch.Generator().manual_seed(3))
    hi = fixed.process.t_max
    want = torch.clamp(df.s.clamp_min(0) + 0.25, max=hi)
    inside = df.t < hi - 1e-9
    assert torch.allclose((df.t - df.s)[inside], torch.full_like(df.t[inside], 0.25), atol=1e-9)
    assert torch.allclose(df.t[inside], want[inside], atol=1e-9)
    gaps = (du.t - du.s)[du.t < hi - 1e-9]
    assert float(gaps.min()) < 0.05 and float(gaps.max()) > 0.2 and float(gaps.max()) <= 0.25 + 1e-9
    with pytest.raises(ValueError, match="unknown gap"):
        exact_method(4, gap="random")
