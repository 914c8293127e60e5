"""Worker of tests/test_ddp.py: the same two short runs, under torchrun (2 gloo ranks) or in one process.

Run ``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT_DIR`` for
the 2-rank side; the test imports ``run`` and calls it in-process for the 1-rank side. Each rank writes its
final weights to ``OUT_DIR/{task}_rank{r}.safetensors``; the rank-averaged losses are in the runs'
``log.jsonl``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from fewstep.data.source import SamplerSource
from fewstep.data.toys import checkerboard_sample
from fewstep.denoisers import GaussianDenoiser
from fewstep.methods import GaussianDiffusion
from fewstep.methods.base import Batch, LossOutput, Method
from fewstep.nets import MLP
from fewstep.processes import GaussianProcess
from fewstep.schedules import CosineSchedule
from fewstep.train import Trainer, distributed
from fewstep.train.checkpoint import save_weights

GLOBAL_BATCH = 128
DET_ITERS = 5
DIFF_ITERS = 20


class Regression(Method):
    """A method without randomness: regress sin(3x) on x (mean squared error over the local batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))

    def trainable(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def loss(self, phase: str, batch: Batch, nets: Mapping[str, nn.Module],
             generator: torch.Generator) -> LossOutput:
        x = batch["x"]
        loss = ((nets["net"](x) - torch.sin(3 * x)) ** 2).mean()
        return LossOutput(loss, {"loss": loss.detach()})

    def generate(self, n: int, *, steps: int, nets: Mapping[str, nn.Module], generator: torch.Generator,
                 cond: Tensor | None = None, **options: object) -> Tensor:
        raise NotImplementedError


def _fit(method: Method, run_dir: Path, iters: int) -> Trainer:
    data = SamplerSource(checkerboard_sample, (2,), name="checkerboard2d")
    total = iters * GLOBAL_BATCH
    trainer = Trainer(method, data, run_dir=run_dir, seed=0, total_nimg=total, batch_size=GLOBAL_BATCH,
                      lr=1e-2, ema_halflife_nimg=2 * GLOBAL_BATCH, log_every_nimg=total, ckpt_every_nimg=0,
                      progress=False)
    trainer.fit()
    return trainer


def run(out_dir: Path) -> None:
    """Train both tasks and write each rank's final weights (and EMA) under ``out_dir``."""
    rank = distributed.rank()
    torch.manual_seed(0)
    det = _fit(Regression(), out_dir / "det_run", DET_ITERS)
    torch.manual_seed(0)
    model = GaussianDenoiser(MLP(2, width=32, depth=1), GaussianProcess(CosineSchedule()))
    diff = _fit(GaussianDiffusion(model), out_dir / "diff_run", DIFF_ITERS)
    for task, trainer in (("det", det), ("diff", diff)):
        role = next(iter(trainer.nets))
        save_weights(out_dir / f"{task}_rank{rank}.safetensors", trainer.nets[role].state_dict())
        save_weights(out_dir / f"{task}_ema_rank{rank}.safetensors", trainer.ema[role].state_dict())


if __name__ == "__main__":
    torch.set_num_threads(1)
    distributed.init("gloo", timeout_s=120)  # CPU ranks, also on a machine with a GPU
    try:
        run(Path(sys.argv[1]))
    finally:
        distributed.cleanup()
