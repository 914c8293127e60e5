"""Discrete teachers end to end: the Monte-Carlo training loss vs the exact NELBO, short training lowers the
loss, the text transformer, CLI train -> sample, and the quick discrete bench suites."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _discrete_oracles import ExactDenoiser, all_sequences
from fewstep.bench.runner import BenchOptions, run_bench
from fewstep.denoisers.categorical import CategoricalDenoiser
from fewstep.methods.discrete_diffusion import DiscreteDiffusion
from fewstep.nets.text_dit import TextDiT
from fewstep.processes.masked import MaskedProcess
from fewstep.processes.uniform import UniformProcess

N, L = 3, 2


def _p_data(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N ** L, generator=g, dtype=torch.float64) + 0.2
    return p / p.sum()


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_monte_carlo_loss_matches_the_exact_nelbo(kind):
    """The training loss with the exact (leave-one-out) denoiser averages to H(p_data) within 4 SE."""
    p = _p_data(0)
    proc = MaskedProcess(N) if kind == "masked" else UniformProcess(N)
    net = ExactDenoiser(p, N, L, proc, mode="masked" if kind == "masked" else "loo")
    method = DiscreteDiffusion(net, length=L)
    seqs = all_sequences(N, L)
    g = torch.Generator().manual_seed(1)
    vals = []
    for _ in range(60):
        idx = torch.searchsorted(p.cumsum(0), torch.rand(256, generator=g, dtype=torch.float64) * p.sum())
        x = seqs[idx.clamp(max=seqs.shape[0] - 1)]
        vals.append(float(method.loss("main", {"x": x}, {"model": net}, g).loss) * L)
    v = torch.tensor(vals, dtype=torch.float64)
    entropy = float(-(p * p.log()).sum())
    assert abs(float(v.mean()) - entropy) < 4 * float(v.std()) / math.sqrt(len(vals)) + 1e-3


def test_text_dit_shapes_soft_input_and_attention_fallback():
    torch.manual_seed(0)
    net = TextDiT(6, 6, 8, dim=32, depth=2, heads=4, time_conditioned=True, two_time=True)
    z = torch.randint(0, 6, (3, 8))
    t, s = torch.rand(3), torch.rand(3) * 0.5
    out = net(z, t, s)
    assert out.shape == (3, 8, 6)
    soft = torch.nn.functional.one_hot(z, 6).float()
    assert torch.allclose(net(soft, t, s), out, atol=1e-5)  # a one-hot soft input embeds like the token
    net_math = TextDiT(6, 6, 8, dim=32, depth=2, heads=4, two_time=True, attn_impl="math")
    net_math.load_state_dict(net.state_dict())
    assert torch.allclose(net_math(z, t, s), out, atol=1e-5)
    free = TextDiT(6, 6, 8, dim=32, depth=1, heads=4, time_conditioned=False)
    assert torch.equal(free(z, torch.zeros(3)), free(z, torch.ones(3)))  # time-free: t is ignored
    with pytest.raises(ValueError, match="exceeds"):
        net(torch.randint(0, 6, (1, 9)), torch.rand(1), torch.rand(1))


def test_text_dit_is_context_aware():
    """Changing one input token changes the predictions at other positions (positional embeddings and
    attention reach across the sequence)."""
    torch.manual_seed(0)
    net = TextDiT(8, 8, 6, dim=32, depth=2, heads=4, time_conditioned=False)
    z = torch.randint(0, 8, (1, 6))
    z2 = z.clone()
    z2[0, 0] = (z[0, 0] + 1) % 8
    a, b = net(z, torch.zeros(1)), net(z2, torch.zeros(1))
    assert (a[0, 3] - b[0, 3]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_short_training_lowers_the_loss(kind):
    from fewstep.data.hmm import make_hmm

    hmm = make_hmm(4, 6, trans_concentration=0.1, emit_concentration=0.1, seed=0)
    proc = MaskedProcess(6) if kind == "masked" else UniformProcess(6)
    torch.manual_seed(0)
    net = TextDiT(proc.width, proc.width, 8, dim=32, depth=2, heads=4, time_conditioned=kind == "uniform")
    method = DiscreteDiffusion(CategoricalDenoiser(net, proc), length=8)
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = hmm.sample(512, 8, generator=torch.Generator().manual_seed(5))

    def eval_loss() -> float:
        with torch.no_grad():
            return sum(float(method.loss("main", {"x": fixed}, {"model": method.model},
                                         torch.Generator().manual_seed(i)).loss) for i in range(4)) / 4

    before = eval_loss()
    for _ in range(60):
        x = hmm.sample(128, 8, generator=g)
        opt.zero_grad()
        method.loss("main", {"x": x}, {"model": method.model}, g).loss.backward()
        opt.step()
    assert eval_loss() < before - 0.1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fewstep.cli", *args], capture_output=True, text=True, timeout=300)


TINY = ["--net.width", "32", "--net.depth", "1", "--train.total-nimg", "1024", "--train.batch-size", "64",
        "--train.warmup-nimg", "0", "--train.ckpt-every-nimg", "512", "--train.log-every-nimg", "512",
        "--train.device", "cpu"]


def test_cli_train_and_sample_text_hmm(tmp_path: Path):
    run = tmp_path / "hmm"
    r = run_cli("train", "--preset", "hmm-mdlm", "--data.length", "16", "--run-dir", str(run), *TINY)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"]["name"] == "mdlm" and cfg["data"]["vocab"] == 32
    r = run_cli("sample", "--run", str(run), "--steps", "1,64", "--n", "16", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "network evaluations per sample" in r.stdout
    from safetensors.torch import load_file

    x = load_file(str(tmp_path / "s" / "samples_ancestral_64.safetensors"))["x"]
    assert x.dtype == torch.int64 and x.shape == (16, 16) and int(x.max()) < 32  # no mask left
    assert (tmp_path / "s" / "samples_ancestral_1.txt").read_text().strip()


def test_cli_text_char_on_a_local_file(tmp_path: Path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 200)
    run = tmp_path / "char"
    r = run_cli("train", "--preset", "shakespeare-uniform", "--data.root", str(text), "--data.length", "16",
                "--run-dir", str(run), *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "config.json").read_text())["data"]["vocab"] == len(set(text.read_text()))
    r = run_cli("sample", "--run", str(run), "--steps", "4", "--n", "4", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    decoded = (tmp_path / "s" / "samples_ancestral_4.txt").read_text()
    assert set(decoded) <= set(text.read_text()) | {"\n"}


def test_discrete_method_on_continuous_data_is_a_clear_error():
    r = run_cli("train", "--preset", "tiny", "--method", "mdlm", "--dry-run")
    assert r.returncode == 0  # a dry run only prints
    r = run_cli("train", "--preset", "tiny", "--method", "mdlm", "--run-dir", "/tmp/never")
    assert r.returncode != 0 and "token data" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("suite", ["text-hmm", "grid2d"])
def test_quick_discrete_bench(tmp_path: Path, suite: str):
    opts = BenchOptions(suite=suite, methods=("teacher",), teacher_nfe=(1, 4, 64), quick=True, device="cpu",
                        out=str(tmp_path / "b"), repeats=1)
    rows = run_bench(opts, log=lambda s: None)
    procs = {r["process"] for r in rows if r["method"] == "teacher"}
    assert procs == {"masked", "uniform"}
    data = [r for r in rows if r["method"] == "data"]
    assert data and all(r["process"] == "none" for r in data)
    masked64 = [r for r in rows if r["process"] == "masked" and r["nfe"] == 64]
    assert masked64 and all(r["nfe_spent"] <= (64 if suite == "text-hmm" else 2) for r in masked64)
    report = (tmp_path / "b" / "report.md").read_text()
    assert "masked" in report and "uniform" in report
    lines = (tmp_path / "b" / "results.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line)["value"], float) for line in lines)


def test_char_eval_on_a_local_file(tmp_path: Path):
    from fewstep.bench.suites_text import CharEval
    from fewstep.config import DataCfg

    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 300)
    ev = CharEval("local", DataCfg(name="text-char", root=str(text), length=32), n_samples=20,
                  cache_dir=str(tmp_path / "cache"), evaluator_steps=20)
    real = ev.data_samples(20, 0, 0)
    assert real.shape == (20, 32) and real.dtype == torch.int64
    noise = torch.randint(0, ev.vocab.size, (20, 32), generator=torch.Generator().manual_seed(0))
    m_real, m_noise = ev.evaluate(real, 0, 0), ev.evaluate(noise, 0, 0)
    assert m_real["genppl"] < m_noise["genppl"]  # even a 20-step evaluator prefers real text to noise
    assert m_real["genppl__se"] >= 0 and 0 < m_real["entropy"] <= math.log(32)
    ev.save_samples(real, tmp_path / "s.png", "title")
    assert "quick brown" in (tmp_path / "s.txt").read_text() or "fox" in (tmp_path / "s.txt").read_text()
    assert ev.row_extra["evaluator_steps"] == 20
