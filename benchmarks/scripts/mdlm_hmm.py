"""End to end with an MDLM-layout teacher (issue 26): a plain MDLM training loop on text-hmm writes a checkpoint in
MDLM's Hugging Face layout (config.json + model.safetensors with ``backbone.`` keys), which fewstep then loads as
``mdlm:DIR``, samples and distills by IDLM; ``eval`` scores teacher and students by the source's exact NLL.

    python benchmarks/scripts/mdlm_hmm.py train --out bench_out/mdlm-hmm/teacher
    fewstep distill --teacher mdlm:bench_out/mdlm-hmm/teacher --method idlm --steps 4 --data.name text-hmm \
        --run-dir bench_out/mdlm-hmm/idlm-k4
    python benchmarks/scripts/mdlm_hmm.py eval --teacher bench_out/mdlm-hmm/teacher \
        --students bench_out/mdlm-hmm/idlm-k4 --out benchmarks/results/mdlm-hmm.jsonl

The loop is MDLM's objective written out (log-linear schedule alpha = 1 - t, SUBS parametrisation, the NELBO weight
1/t on masked positions, antithetic times), on the MDLM transformer (``fewstep.nets.mdlm_dit``) without time
conditioning, as MDLM's public OpenWebText model.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

import torch
from e2e_common import append_rows, parse, row_base, save_train_info, train_seconds

SIZES = {"vocab_size": 33, "hidden_size": 96, "n_heads": 4, "n_blocks": 3, "cond_dim": 64, "length": 64,
         "time_conditioning": False}


def train(a) -> None:
    from fewstep.build.datasets import build_data
    from fewstep.build.pretrained import save_token_teacher
    from fewstep.config import DataCfg
    from fewstep.nets.mdlm_dit import MDLMTokenNet
    from fewstep.processes.categorical import get_keep_schedule

    torch.manual_seed(a.seed)
    data = build_data(DataCfg(name="text-hmm"))
    net = MDLMTokenNet({**SIZES, "dropout": 0.0}, get_keep_schedule("log-linear"))
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, betas=(0.9, 0.98), weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed)
    mask_id = SIZES["vocab_size"] - 1
    t0 = time.perf_counter()
    for it in range(a.iters):
        x = data.batch(it * a.batch, a.batch, seed=a.seed)["x"].long()
        b, n = x.shape
        t = 1e-3 + (1 - 1e-3) * (torch.arange(b) + torch.rand(b, generator=g)) / b  # antithetic times
        masked = torch.rand(b, n, generator=g) < t[:, None]  # alpha(t) = 1 - t keeps a token
        z = torch.where(masked, torch.full_like(x, mask_id), x)
        logits = net(z, t).float()
        logits[..., mask_id] = float("-inf")
        logp = logits.log_softmax(-1).gather(-1, x[..., None])[..., 0]
        loss = -(logp * masked / t[:, None]).sum() / (b * n)
        warm = min(1.0, (it + 1) / 50)
        for group in opt.param_groups:
            group["lr"] = a.lr * warm * 0.5 * (1 + math.cos(math.pi * it / a.iters))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - min(0.999, (1 + it) / (10 + it)))
        if it % 500 == 0 or it == a.iters - 1:
            print(f"iter {it} nelbo/token {loss.item():.4f} {time.perf_counter() - t0:.0f}s", flush=True)
    out = save_token_teacher(ema, a.out, kind="mdlm")
    save_train_info(out, a, time.perf_counter() - t0)


def evaluate(a) -> None:
    import fewstep

    base = {**row_base("mdlm-hmm", "hmm-v32-l64", "masked", a.n), "repeats": 1}
    rows = []

    def run(model, label: dict, steps: int) -> None:
        t0 = time.perf_counter()
        x, stats = model.sample(a.n, steps=steps, generator=torch.Generator().manual_seed(steps), return_stats=True)
        secs = time.perf_counter() - t0
        m = fewstep.evaluate(x, "hmm-v32-l64")
        for metric, lower in (("oracle_nll", True), ("entropy", False)):
            rows.append({**base, **label, "steps": steps, "nfe": stats["nfe"], "metric": metric, "value": m[metric],
                         "stderr": m[f"{metric}__se"], "lower_is_better": lower, "sample_seconds": secs})
        print(json.dumps({"method": label["method"], "steps": steps, "oracle_nll": m["oracle_nll"],
                          "entropy": m["entropy"], "nfe": stats["nfe"]}), flush=True)

    info = json.loads((Path(a.teacher) / "train_info.json").read_text())
    teacher = fewstep.load(f"mdlm:{a.teacher}")
    for steps in map(int, filter(None, a.teacher_steps.split(","))):  # --teacher-steps '': students only
        run(teacher, {"method": "teacher", "sampler": "ancestral", "teacher": a.teacher,
                      "train_seconds": info["train_seconds"],
                      "command": f"fewstep sample --teacher mdlm:{a.teacher} --steps {steps} (teacher trained by: "
                                 f"{info['command']})"}, steps)
    for student in a.students:
        model = fewstep.load(student)
        m = model.config.method
        run(model, {"method": m.name, "sampler": "student", "teacher": a.teacher,
                    "train_seconds": train_seconds(student),
                    "command": f"fewstep distill --teacher mdlm:{a.teacher} --method {m.name} --steps {m.steps} "
                               f"--data.name text-hmm --run-dir {student}"}, m.steps)
    append_rows(rows, a.out)


def main() -> None:
    a = parse(train={"iters": 4000, "batch": 128, "lr": 2e-3, "seed": 0},
              evaluate={"teacher_steps": "4,16,64,1024", "n": 4000})
    train(a) if a.cmd == "train" else evaluate(a)


if __name__ == "__main__":
    main()
