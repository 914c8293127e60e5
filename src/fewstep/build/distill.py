"""Distillation builders: teacher, student, auxiliary and ``Trainer`` of a resolved ``DistillConfig``.

Gaussian teachers (MM alternating / instant): ``build_distillation`` (with the cached oracle regression and
warm start). Discrete teachers (IDLM / D-MMD): ``build_discrete_distillation``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fewstep.build.datasets import build_data, mixture, sample_shape
from fewstep.build.device import resolve_device, seeded_init
from fewstep.build.distill_config import (
    ORACLE,
    require_resolved,
    student_latent_dim,
    with_dmmd_policy,
    with_idlm_policy,
)
from fewstep.build.models import build_denoiser, build_process, method_options, token_student
from fewstep.build.runs import load_trained
from fewstep.build.trainers import make_trainer
from fewstep.config import DistillConfig, MMCfg, RunConfig, to_dict
from fewstep.data.source import DataSource
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.processes.gaussian import GaussianProcess
from fewstep.validation import check_config

REGRESSED_FILE = "teacher_regressed.safetensors"
"""Where a distillation from the oracle caches the net regressed on it (in its run folder by default)."""


WARMSTART_FILE = "student_warmstart.safetensors"
"""Where a distillation caches its warm-started student (``method.warm_start_steps`` > 0; in its run folder)."""



MM_RENAME = {"steps": "k", "renoise": "renoise_mode"}
"""``MMCfg`` fields that ``MomentMatching`` takes under another name."""
MM_BUILDER_FIELDS = ("lr", "aux_lr", "aux_lr_mult", "oracle_regress_steps", "oracle_regress_batch", "oracle_regress_lr",
                     "warm_start_steps", "warm_start_teacher_steps", "warm_start_times", "warm_start_batch",
                     "warm_start_lr", "warm_start_pool")
"""``MMCfg`` fields the builder consumes (optimiser, oracle regression, warm start)."""
DISCRETE_BUILDER_FIELDS = ("lr", "aux_lr_mult", "latent_dim", "latent_init_std", "latent_lr_mult")
"""``IDLMCfg`` / ``DMMDCfg`` fields the builder consumes (optimiser, the student's latent input)."""


def _distill_device(cfg: DistillConfig) -> torch.device:
    device = resolve_device(cfg.train.device)
    if cfg.teacher == ORACLE and cfg.method.mode == "alternating" and device.type != "cpu":
        if cfg.train.device != "auto":
            raise ValueError("the gmm8d oracle teacher runs on the CPU only: use --train.device cpu")
        device = torch.device("cpu")
    return device


def oracle_net(cfg: DistillConfig, cache: str | Path | None = None) -> tuple[GaussianDenoiser, float]:
    """The teacher-preset net regressed on the gmm8d oracle (``regress_on_teacher``), and the seconds that took.

    Cached as safetensors at ``cache`` (default ``run_dir/teacher_regressed.safetensors``) with the settings
    in its metadata; a cache made with other settings is redone. Runs on the CPU.
    """
    import json
    import time

    from fewstep.data.source import seeded
    from fewstep.data.toys import GMMOracle
    from fewstep.methods.mm import regress_on_teacher
    from fewstep.train.checkpoint import load_weights, save_weights

    cfg = require_resolved(cfg)
    m = cfg.method
    path = Path(cache) if cache is not None else Path(cfg.run_dir) / REGRESSED_FILE
    key = json.dumps({"net": to_dict(cfg.net), "process": to_dict(cfg.process), "steps": m.oracle_regress_steps,
                      "batch": m.oracle_regress_batch, "lr": m.oracle_regress_lr, "weighting": m.weighting,
                      "seed": cfg.train.seed, **({} if cfg.data.name == "gmm8d" else {"data": to_dict(cfg.data)})},
                     sort_keys=True)
    net = seeded_init(lambda: build_denoiser(cfg, sample_shape(cfg.data)), cfg.train.seed)
    if path.is_file():
        state, meta = load_weights(path)
        if meta.get("regress") == key:
            net.load_state_dict(state)
            return net, float(meta.get("regress_seconds", "0"))
    gmm, process = mixture(cfg.data), net.process
    t0 = time.perf_counter()
    losses = regress_on_teacher(net, GMMOracle(gmm, process.schedule), process,
                                lambda n, g: gmm.sample(n, generator=g), steps=m.oracle_regress_steps,
                                generator=seeded(cfg.train.seed, 0x0AC1E), batch_size=m.oracle_regress_batch,
                                lr=m.oracle_regress_lr, weighting=m.weighting)
    secs = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = losses[-min(len(losses), 100):] or [float("nan")]
    save_weights(path, net.state_dict(), metadata={"regress": key, "regress_seconds": str(secs),
                                                   "final_loss": str(sum(tail) / len(tail))})
    return net, secs


def _state_digest(net: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, v in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _data_fn(data: DataSource, seed: int, conditional: bool):
    """``(n, generator) -> x`` (or ``(x, labels)``) drawing a random window of ``data`` (for the warm start)."""
    def draw(n: int, g: torch.Generator):
        b = data.batch(int(torch.randint(0, 2**40, (1,), generator=g)), n, seed=seed)
        return (b["x"], b.get("label")) if conditional else b["x"]
    return draw


def warm_start(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, process: GaussianProcess,
               data: DataSource, device: torch.device, teacher_key: str) -> float:
    """Warm-start ``student`` in place (``methods.mm_warmstart.warm_start_student``) and return the seconds.

    Cached at ``run_dir/student_warmstart.safetensors`` with its settings, the teacher and a digest of the
    student's initial weights in the metadata; a cache made otherwise is redone. Deterministic: every draw
    comes from a generator seeded by ``train.seed``, so a redone warm start gives the same weights. Skipped
    when the run has a checkpoint but no cache (resuming replaces the student's weights) or when
    ``method.warm_start_steps`` is 0.
    """
    import json
    import time

    from fewstep.data.source import seeded
    from fewstep.methods.mm_warmstart import warm_start_student
    from fewstep.train.checkpoint import latest_dir, load_weights, save_weights

    m = cfg.method
    if not m.warm_start_steps:
        return 0.0
    path = Path(cfg.run_dir) / WARMSTART_FILE
    key = json.dumps({"k": m.steps, "steps": m.warm_start_steps, "teacher_steps": m.warm_start_teacher_steps,
                      "times": m.warm_start_times, "batch": m.warm_start_batch, "lr": m.warm_start_lr,
                      "pool": m.warm_start_pool, "guidance": m.guidance, "teacher": teacher_key,
                      "init": _state_digest(student), "seed": cfg.train.seed}, sort_keys=True)
    if path.is_file():
        state, meta = load_weights(path)
        if meta.get("warm_start") == key:
            student.load_state_dict(state)
            return float(meta.get("warm_start_seconds", "0"))
    if latest_dir(cfg.run_dir) is not None:
        return 0.0  # the run resumes from a checkpoint, which replaces the student's initial weights
    classes = cfg.net.num_classes
    draw = _data_fn(data, cfg.train.seed, classes > 0)

    def sample_data(n: int, g: torch.Generator):
        out = draw(n, g)
        return tuple(None if v is None else v.to(device) for v in out) if isinstance(out, tuple) else out.to(device)

    student.to(device)
    teacher.to(device)
    t0 = time.perf_counter()
    losses = warm_start_student(student, teacher, process, sample_data, k=m.steps, steps=m.warm_start_steps,
                                generator=seeded(cfg.train.seed, 0x3A5E), batch=m.warm_start_batch,
                                teacher_steps=m.warm_start_teacher_steps, lr=m.warm_start_lr,
                                times=m.warm_start_times, pool=m.warm_start_pool or None, guidance=m.guidance,
                                num_classes=classes or None)
    secs = time.perf_counter() - t0
    student.cpu()
    teacher.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = losses[-min(len(losses), 50):]
    save_weights(path, student.state_dict(), metadata={"warm_start": key, "warm_start_seconds": str(secs),
                                                       "final_loss": str(sum(tail) / len(tail))})
    return secs


def build_distillation(cfg: DistillConfig, *, allow_config_change: bool = False, progress: bool = True,
                       data: DataSource | None = None, regress_cache: str | Path | None = None):
    """A ready-to-fit Trainer distilling ``cfg.teacher`` into a ``cfg.method.steps``-step student (every value
    checked first, ``validation.check_config``).

    Teacher: the EMA weights of a trained run (``load_trained``), or the gmm8d ``GMMOracle``. Student and
    auxiliary: copies of the teacher denoiser (``init_from_teacher``); for the oracle, copies of the net regressed
    on it (``oracle_net``, cached at ``regress_cache``), which is also the teacher of instant MM (it needs a
    parametric teacher). With ``method.warm_start_steps`` > 0 (auto: k <= 2) the student is then warm-started
    on the teacher's DDIM endpoints (``warm_start``, cached in the run folder) before MM; its seconds are the
    trainer's ``warm_start_seconds`` attribute. Optimiser from ``cfg.train`` (its defaults are ``MM_OPTIM``;
    the auxiliary's LR is ``method.aux_lr`` or ``aux_lr_mult`` x the student's); the resolved config is the
    run's config.json.
    """
    from fewstep.methods.mm import MomentMatching, init_from_teacher

    cfg = require_resolved(cfg)
    check_config(cfg)
    if not isinstance(cfg.method, MMCfg):
        return build_discrete_distillation(cfg, allow_config_change=allow_config_change, progress=progress,
                                           data=data)
    m = cfg.method
    device = _distill_device(cfg)
    data = build_data(cfg.data) if data is None else data
    process = build_process(cfg.process)
    if cfg.teacher == ORACLE:
        from fewstep.data.toys import GMMOracle

        base, _ = oracle_net(cfg, regress_cache)
        teacher: nn.Module = base if m.mode == "instant" else GMMOracle(mixture(cfg.data), process.schedule)
    else:
        tcfg, _, tnets = load_trained(cfg.teacher, ema=True)
        if not isinstance(tcfg, RunConfig) or "model" not in tnets:
            raise ValueError(f"{cfg.teacher} is not a diffusion teacher run (written by 'fewstep train')")
        teacher = base = tnets["model"]
        process = base.process
    classes = cfg.net.num_classes
    student = init_from_teacher(base)
    oracle_teacher = cfg.teacher == ORACLE and m.mode == "alternating"
    warm_secs = warm_start(cfg, student, teacher, process, data, device,
                           teacher_key=ORACLE if oracle_teacher else _state_digest(base))
    method = MomentMatching(teacher, student, init_from_teacher(base) if m.mode == "alternating" else None,
                            process=process, conditional=classes > 0, num_classes=classes or None,
                            **method_options(m, MomentMatching, rename=MM_RENAME, builder=MM_BUILDER_FIELDS))
    aux_lr = m.aux_lr if m.aux_lr is not None else m.aux_lr_mult * m.lr
    per_role = {"student": {"lr": m.lr}} | ({"aux": {"lr": aux_lr}} if m.mode == "alternating" else {})
    trainer = make_trainer(method, data, cfg, device=device, allow_config_change=allow_config_change,
                           progress=progress, per_role_optim=per_role)
    trainer.warm_start_seconds = warm_secs  # not part of train_seconds (like the oracle regression)
    return trainer


def copy_into(net, state: dict) -> None:
    """Load teacher weights into a student (a latent-noise map, absent from the teacher, keeps its initialisation)."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("latent.weight") for k in missing):
        raise ValueError(f"teacher weights do not fit the student: missing {missing}, unexpected {unexpected}")


def build_discrete_distill_method(cfg, teacher_state: dict | None):
    """IDLM or DiscreteMMD from a resolved DistillConfig; student / fake start from ``teacher_state``."""
    from fewstep.methods.discrete_mmd import DiscreteMMD
    from fewstep.methods.idlm import IDLM

    cfg = with_dmmd_policy(with_idlm_policy(cfg))
    m = cfg.method
    teacher, aux = token_student(cfg, 0), token_student(cfg, 0)
    student = token_student(cfg, student_latent_dim(cfg), m.latent_init_std)
    if teacher_state is not None:
        for net in (teacher, student, aux):
            copy_into(net, teacher_state)
    length = cfg.data.length
    if m.name == "idlm":
        return IDLM(teacher, student, aux, length=length,
                    **method_options(m, IDLM, builder=DISCRETE_BUILDER_FIELDS))
    return DiscreteMMD(teacher, student, aux, length=length,
                       **method_options(m, DiscreteMMD, rename={"steps": "k"}, builder=DISCRETE_BUILDER_FIELDS))


def build_discrete_distillation(cfg, *, allow_config_change: bool = False, progress: bool = True, data=None):
    """A ready-to-fit Trainer for IDLM / D-MMD: teacher = the EMA weights of a discrete teacher run."""
    from fewstep.build.pretrained import is_imported, token_teacher_state
    from fewstep.train.checkpoint import find_weights, load_weights

    cfg = with_dmmd_policy(with_idlm_policy(cfg))
    if is_imported(cfg.teacher):
        state = token_teacher_state(cfg.teacher)
    else:
        state, _ = load_weights(find_weights(cfg.teacher, "model", ema=True))
    method = seeded_init(lambda: build_discrete_distill_method(cfg, state), cfg.train.seed)
    data = build_data(cfg.data) if data is None else data
    t = cfg.train
    lr = cfg.method.lr if cfg.method.lr is not None else t.lr
    return make_trainer(method, data, cfg, device=resolve_device(t.device), allow_config_change=allow_config_change,
                        progress=progress,
                        per_role_optim={"student": student_optim(cfg, lr),
                                        "aux": {"lr": cfg.method.aux_lr_mult * lr}})


def student_optim(cfg, lr: float) -> dict:
    """The student's optimizer overrides: its LR, and the latent map's multiplier when one is set."""
    mult = cfg.method.latent_lr_mult
    return {"lr": lr, **({"lr_mults": {"latent.weight": mult}} if mult != 1.0 else {})}
