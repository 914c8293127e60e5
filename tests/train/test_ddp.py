"""2 gloo ranks with per-rank batch b against 1 process with batch 2b (spec/architecture.md section 5).

(a) A method without randomness must end with the same weights (and EMA) up to float rounding.
(b) Gaussian diffusion draws different noise per rank, so only its mean loss is compared (tolerance 15%:
    the spread of a 20-iteration mean loss over noise seeds is a few percent); both ranks must still end
    with identical weights.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fewstep.train.checkpoint import load_weights
from fewstep.train.logging import read_jsonl

WORKER = Path(__file__).parents[1] / "_ddp_worker.py"
LOSS_RTOL = 0.15


def _worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_fewstep_ddp_worker", WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch(out_dir: Path) -> None:
    dist_vars = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in dist_vars}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # --standalone lets the launcher pick a free port on localhost for the rendezvous
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(out_dir)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"2-rank run timed out (hang?)\n{e.stdout}\n{e.stderr}")
    assert proc.returncode == 0, f"2-rank run failed\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def _mean_loss(run_dir: Path) -> float:
    rows = [r for r in read_jsonl(run_dir / "log.jsonl") if r["event"] == "train"]
    assert len(rows) == 1  # log_every_nimg == total: one mean over all iterations and ranks
    return rows[0]["loss"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ddp, single = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("single")
    _launch(ddp)
    _worker().run(single)
    return ddp, single


def test_deterministic_method_matches_single_process(runs: tuple[Path, Path]) -> None:
    ddp, single = runs
    for kind in ("det", "det_ema"):
        ref, _ = load_weights(single / f"{kind}_rank0.safetensors")
        for rank in (0, 1):
            got, _ = load_weights(ddp / f"{kind}_rank{rank}.safetensors")
            for key, value in ref.items():
                msg = f"{kind} rank {rank} {key}"
                torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-5, msg=msg)
    assert not torch.equal(ref["0.weight"], _initial_regression_weight())  # training moved the weights


def _initial_regression_weight() -> torch.Tensor:
    torch.manual_seed(0)
    return _worker().Regression().net[0].weight.detach()


def test_diffusion_mean_loss_matches_and_ranks_agree(runs: tuple[Path, Path]) -> None:
    ddp, single = runs
    loss_ddp, loss_single = _mean_loss(ddp / "diff_run"), _mean_loss(single / "diff_run")
    assert abs(loss_ddp - loss_single) <= LOSS_RTOL * loss_single, (loss_ddp, loss_single)
    for kind in ("diff", "diff_ema"):
        w0, _ = load_weights(ddp / f"{kind}_rank0.safetensors")
        w1, _ = load_weights(ddp / f"{kind}_rank1.safetensors")
        assert all(torch.equal(w0[k], w1[k]) for k in w0), f"{kind}: ranks diverged"
    rows = read_jsonl(ddp / "diff_run" / "log.jsonl")
    assert rows[0]["world"] == 2 and rows[0]["per_rank_batch"] == 64
