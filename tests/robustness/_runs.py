"""Small Trainer runs for the robustness tests (a 2-d diffusion MLP on the checkerboard)."""

from __future__ import annotations

from pathlib import Path

import torch

from fewstep.data.source import SamplerSource
from fewstep.data.toys import checkerboard_sample
from fewstep.denoisers import GaussianDenoiser
from fewstep.methods import GaussianDiffusion
from fewstep.nets import MLP
from fewstep.processes import GaussianProcess
from fewstep.schedules import CosineSchedule
from fewstep.train import Trainer

B = 16


def trainer(run_dir: Path, iters: int, *, data=None, **kw: object) -> Trainer:
    torch.manual_seed(0)
    method = GaussianDiffusion(GaussianDenoiser(MLP(2, width=32, depth=1), GaussianProcess(CosineSchedule())))
    opts: dict = dict(lr=1e-2, warmup_nimg=3 * B, ema_halflife_nimg=4 * B, ckpt_every_nimg=4 * B,
                      log_every_nimg=2 * B, progress=False, keep=0)
    opts.update(kw)
    data = data or SamplerSource(checkerboard_sample, (2,), name="checkerboard2d")
    return Trainer(method, data, run_dir=run_dir, seed=0, total_nimg=iters * B, batch_size=B, **opts)


def weights(t: Trainer) -> dict[str, torch.Tensor]:
    return {f"{r}.{k}": v.detach().clone() for r, n in t.nets.items() for k, v in n.state_dict().items()} | {
        f"ema.{r}.{k}": v.detach().clone() for r, n in t.ema.items() for k, v in n.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
