"""``fewstep sample``: samples of any trained run through its one sampling path (``TrainedModel.sample``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tyro

from fewstep.cli.common import parse_steps


@dataclass(frozen=True)
class SampleArgs:
    """Draw samples from a trained run; writes OUT/samples_<sampler>_<steps>[_<options>].safetensors and .png (or
    .txt) per step count, named after the sampler and every option that changes the samples."""

    run: str | None = None
    """Run folder written by 'fewstep train' or 'fewstep distill'."""
    teacher: str | None = None
    """A pretrained teacher instead of a run: diffusers:DIR (a local diffusers model folder with its scheduler
    config), mdlm:DIR or duo:DIR (an MDLM / Duo checkpoint); samples go to samples/<DIR name> unless --out."""
    steps: str | None = None
    """Comma-separated step counts (default 1,2,4,8,16,64; for a distilled student its own k)."""
    sampler: Literal["ancestral", "ddim", "euler", "heun", "pushforward", "restart", "greedy"] | None = None
    """Teacher samplers (default ancestral) or IMM's pushforward / restart (default: the run's); discrete
    teachers: ancestral or greedy (greedy last step)."""
    grid: Literal["uniform", "edm", "logsnr", "trailing", "leading", "linspace"] = "uniform"
    """Time grid of teacher samplers; diffusers teachers also take diffusers' timestep spacings (trailing is
    uniform when the steps divide the training timesteps)."""
    n: int = 1024
    """Samples per step count."""
    seed: int = 0
    out: str | None = None
    """Output folder (default RUN/samples)."""
    device: str = "auto"
    ema: bool = True
    """Use the EMA weights."""
    checkpoint: str | None = None
    """An older checkpoint of the run to sample (a folder name under RUN/checkpoints, e.g. nimg_000192000)."""
    temperature: float = 1.0
    """Discrete runs (teachers and students): sampling temperature of the denoiser (> 1: more entropy)."""
    guidance: float | None = None
    """IMM runs of a class-conditional model trained with label dropout: classifier-free guidance scale w of the
    network output; samples then get the balanced labels i mod num_classes."""


def cmd_sample(argv: list[str]) -> int:
    import time

    import torch
    from safetensors.torch import save_file

    from fewstep.bench.plots import save_samples
    from fewstep.build.device import resolve_device
    from fewstep.build.runs import load_model
    from fewstep.data.source import seeded

    a = tyro.cli(SampleArgs, args=argv, prog="fewstep sample")
    if a.n < 1 or a.seed < 0:
        raise SystemExit(f"error: --n must be >= 1 and --seed >= 0, got --n {a.n} --seed {a.seed}")
    if (a.run is None) == (a.teacher is None):
        raise SystemExit("error: pass --run RUN_DIR (a fewstep run) or --teacher diffusers:DIR (a pretrained model)")
    if a.teacher is not None:
        from fewstep.build.pretrained import imported_dir, is_imported

        if not is_imported(a.teacher):
            raise SystemExit(f"error: --teacher takes a pretrained model as diffusers:DIR, mdlm:DIR or duo:DIR, got "
                             f"{a.teacher!r} (a fewstep run is --run RUN_DIR)")
        a = replace(a, run=a.teacher, out=a.out or str(Path("samples") / imported_dir(a.teacher).resolve().name))
    device = resolve_device(a.device)
    try:
        model = load_model(a.run, ema=a.ema, device=device, checkpoint=a.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    cfg, method = model.config, model.sampler
    if not (a.temperature > 0 and a.temperature < float("inf")):
        raise SystemExit(f"error: --temperature must be a positive finite number, got {a.temperature}")
    if model.tokens:
        if a.guidance is not None:
            raise SystemExit("error: --guidance applies to IMM runs only")
        return _sample_tokens(a, model)
    if a.temperature != 1.0:
        raise SystemExit("error: --temperature applies to discrete runs (token data) only")
    student_k = model.trained_steps
    if student_k and a.sampler is not None:
        raise SystemExit(f"error: a distilled student samples with its own {student_k}-step sampler; --sampler "
                         "applies to teachers and IMM runs")
    steps = parse_steps(a.steps or (str(student_k) if student_k else "1,2,4,8,16,64"))
    imm_samplers = ("pushforward", "restart")
    imm = model.kind == "imm"
    sampler = "student" if student_k else a.sampler or (method.sampler if imm else "ancestral")
    if imm != (sampler in imm_samplers) and not student_k:
        kinds = "IMM: pushforward or restart" if imm else "a diffusion teacher: ancestral, ddim, ..."
        raise SystemExit(f"error: sampler {sampler!r} does not apply to this run ({kinds})")
    if student_k and any(k != student_k for k in steps):
        print(f"note: this student was distilled for {student_k} steps; other step counts run its sampler on a "
              "grid it was not trained for", file=sys.stderr)
    guide: dict = {}
    if a.guidance is not None:
        if not imm:
            raise SystemExit("error: --guidance applies to IMM runs (a distilled student's guidance is set when "
                             "distilling: --method.guidance)")
        try:
            method.check_guidance()
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        labels = torch.arange(a.n, device=device) % method.num_classes
        guide = {"guidance": a.guidance, "cond": labels}
    out = Path(a.out) if a.out else Path(a.run) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for k in steps:
        t0 = time.perf_counter()
        x = model.sample(a.n, steps=k, generator=seeded(a.seed, k), sampler=sampler, grid=a.grid, **guide)
        dt = time.perf_counter() - t0
        stem = _stem(a, sampler, k, grid=a.grid if sampler in ("ancestral", "ddim", "euler", "heun") else None)
        path = out / f"{stem}.safetensors"
        tensors = {"x": x.float().cpu().contiguous()}
        meta = {"steps": str(k), "sampler": sampler, "seed": str(a.seed), "run": a.run}
        if guide:
            tensors["label"] = guide["cond"].cpu().contiguous()
            meta["guidance"] = str(a.guidance)
        save_file(tensors, str(path), metadata=meta)
        save_samples(x.cpu(), out / f"{stem}.png", title=f"{cfg.data.name}: {sampler}, {k} steps")
        print(f"steps={k}: {a.n} samples in {dt:.2f}s -> {path}")
    return 0


def _stem(a: SampleArgs, sampler: str, k: int, grid: str | None = None) -> str:
    """Output file stem: ``samples_<sampler>_<k>`` and every option that changes the samples away from its
    default (grid, temperature, guidance, seed, raw weights, an older checkpoint), so no run overwrites another's."""
    parts = [f"samples_{sampler}_{k}"]
    if grid not in (None, "uniform"):
        parts.append(str(grid))
    if a.temperature != 1.0:
        parts.append(f"T{a.temperature:g}")
    if a.guidance is not None:
        parts.append(f"w{a.guidance:g}")
    if a.seed:
        parts.append(f"seed{a.seed}")
    if not a.ema:
        parts.append("raw")
    if a.checkpoint:
        parts.append(a.checkpoint)
    return "_".join(parts)


def _sample_tokens(a: SampleArgs, model) -> int:
    """``fewstep sample`` of a discrete run: int64 tokens (.safetensors) and a .txt (decoded for text-char)."""
    import time

    from safetensors.torch import save_file

    from fewstep.data.source import seeded

    cfg = model.config
    sampler = a.sampler or "ancestral"
    if sampler not in ("ancestral", "greedy"):
        raise SystemExit(f"error: sampler {sampler!r} does not apply to a discrete teacher (ancestral or greedy)")
    decode = None
    if cfg.data.name == "text-char":
        from fewstep.build.datasets import char_data

        decode = char_data(cfg.data)[2].decode
    elif cfg.data.name == "text-bpe":
        from fewstep.data.text import gpt2_encoding

        enc = gpt2_encoding()

        def decode(x):
            return [enc.decode([t for t in r.tolist() if t < enc.n_vocab]) for r in x]
    out = Path(a.out) if a.out else Path(a.run) / "samples"
    out.mkdir(parents=True, exist_ok=True)
    for k in parse_steps(a.steps or "1,4,16,64,256,1024"):
        t0 = time.perf_counter()
        x, stats = model.sample(a.n, steps=k, generator=seeded(a.seed, k),
                                final="greedy" if sampler == "greedy" else "ancestral", return_stats=True,
                                temperature=a.temperature)
        dt = time.perf_counter() - t0
        stem = _stem(a, ("student" if sampler == "ancestral" else f"student-{sampler}") if model.trained_steps
                     else sampler, k)
        path = out / f"{stem}.safetensors"
        save_file({"x": x.cpu().contiguous()}, str(path),
                  metadata={"steps": str(k), "sampler": sampler, "seed": str(a.seed), "run": a.run,
                            "nfe_spent": str(stats["nfe"]), "temperature": str(a.temperature)})
        rows = decode(x[:32]) if decode else [" ".join(map(str, r.tolist())) for r in x[:32]]
        (out / f"{stem}.txt").write_text("\n\n".join(rows) + "\n")
        print(f"steps={k}: {a.n} samples in {dt:.2f}s ({stats['nfe']:.1f} network evaluations per sample) -> {path}")
    return 0
