"""End to end with a pretrained diffusers teacher (issue 26): a plain diffusers training loop on digits8x8, then the
teacher's quality-vs-NFE curve and its MM students, as results rows.

    python benchmarks/scripts/diffusers_digits.py train --out bench_out/diffusers-digits/teacher --iters 6000
    fewstep distill --teacher diffusers:bench_out/diffusers-digits/teacher --method mm-alternating --steps 8 \
        --data.name digits8x8 --run-dir bench_out/diffusers-digits/mm-alternating-k8
    python benchmarks/scripts/diffusers_digits.py eval --teacher bench_out/diffusers-digits/teacher \
        --students bench_out/diffusers-digits/mm-alternating-k8 ... --out benchmarks/results/diffusers-digits.jsonl

The training loop is diffusers' own recipe (DDPMScheduler.add_noise, v-prediction MSE, AdamW, an EMA copy); fewstep
is used only to read the digits (``load_digits8x8``, the training half) and, in ``eval``, to sample and score.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from e2e_common import append_rows, parse, row_base, save_train_info, train_seconds


def teacher_model():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=32)


def train(a) -> None:
    from diffusers import DDPMScheduler

    from fewstep.build.datasets import build_data
    from fewstep.config import DataCfg

    torch.manual_seed(a.seed)
    data = build_data(DataCfg(name="digits8x8"))  # the training half (the other half is fd_digits' reference)
    model = teacher_model()
    ema = copy.deepcopy(model).requires_grad_(False)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction",
                          clip_sample=False)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for it in range(a.iters):
        x = data.batch(it * a.batch, a.batch, seed=a.seed)["x"]
        noise = torch.randn(x.shape, generator=g)
        ts = torch.randint(0, sched.config.num_train_timesteps, (x.shape[0],), generator=g)
        z = sched.add_noise(x, noise, ts)
        target = sched.get_velocity(x, noise, ts)
        lr = a.lr * min(1.0, (it + 1) / 200)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = torch.nn.functional.mse_loss(model(z, ts).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + it) / (10 + it))
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.lerp_(p, 1 - decay)
        if it % 500 == 0 or it == a.iters - 1:
            print(f"iter {it} loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s", flush=True)
    out = Path(a.out)
    ema.save_pretrained(str(out), safe_serialization=True)
    sched.save_pretrained(str(out))
    save_train_info(out, a, time.perf_counter() - t0)


def evaluate(a) -> None:
    import fewstep
    from fewstep.api import evaluate as score

    base = {**row_base("diffusers-digits", "digits8x8", "gaussian", a.n), "lower_is_better": True,
            "metric": "fd_digits"}
    rows = []

    def run(model, label: dict, steps: int, **opts) -> None:
        vals, secs = [], 0.0
        for seed in range(a.seeds):
            t0 = time.perf_counter()
            x = model.sample(a.n, steps=steps, generator=torch.Generator().manual_seed(1000 * seed + steps), **opts)
            secs += time.perf_counter() - t0
            vals.append(score(x.float(), "digits8x8", seed=seed)["fd_digits"])
        mean = sum(vals) / len(vals)
        se = (sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1) / len(vals)) ** 0.5
        row = {**base, **label, "steps": steps, "nfe": steps, "repeats": a.seeds, "value": mean, "stderr": se,
               "sample_seconds": secs / a.seeds}
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("method", "sampler", "steps", "value", "stderr")}), flush=True)

    info = json.loads((Path(a.teacher) / "train_info.json").read_text())
    teacher = fewstep.load(f"diffusers:{a.teacher}")
    tlabel = {"method": "teacher", "teacher": a.teacher, "train_seconds": info["train_seconds"],
              "command": info["command"]}
    for sampler in filter(None, a.samplers.split(",")):  # --samplers '': students only
        for steps in map(int, filter(None, a.teacher_steps.split(","))):
            run(teacher, {**tlabel, "sampler": sampler, "command": f"fewstep sample --teacher diffusers:{a.teacher} "
                          f"--sampler {sampler} --steps {steps} (teacher trained by: {info['command']})"},
                steps, sampler=sampler)
    for student in a.students:
        model = fewstep.load(student)
        cfg = model.config
        run(model, {"method": f"mm-{cfg.method.mode}", "sampler": "student", "teacher": a.teacher,
                    "train_seconds": train_seconds(student),
                    "command": f"fewstep distill --teacher diffusers:{a.teacher} --method mm-{cfg.method.mode} "
                               f"--steps {cfg.method.steps} --data.name digits8x8 --run-dir {student}"},
            cfg.method.steps)
    append_rows(rows, a.out)


def main() -> None:
    a = parse(train={"iters": 6000, "batch": 256, "lr": 5e-4, "seed": 0},
              evaluate={"samplers": "ancestral,ddim", "teacher_steps": "4,8,16,64,256,1024", "n": 2048, "seeds": 2})
    train(a) if a.cmd == "train" else evaluate(a)


if __name__ == "__main__":
    main()
