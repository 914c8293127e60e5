"""The only place that turns configs into objects (data sources, processes, networks, methods, trainers).

Teachers and from-scratch methods: ``build_trainer(RunConfig)``. Distillation (``fewstep distill``):
``distill_config`` / ``resolve_distill`` fill a ``DistillConfig`` from its teacher, ``build_distillation`` builds
teacher, student, auxiliary and Trainer. ``load_trained`` rebuilds either kind of run for sampling.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from fewstep.config import (
    DataCfg,
    DiffusionCfg,
    DistillConfig,
    IMMCfg,
    MMCfg,
    NetCfg,
    ProcessCfg,
    RunConfig,
    defaults_like,
    to_dict,
)
from fewstep.data.source import DataSource, SamplerSource, TensorSource
from fewstep.denoisers.gaussian import GaussianDenoiser
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.nets.mlp import MLP
from fewstep.nets.unet import UNet
from fewstep.processes.gaussian import GaussianProcess
from fewstep.schedules import get_schedule

TOY_DATASETS = ("gmm8d", "checkerboard2d", "spiral2d")
IMAGE_DATASETS = ("digits8x8", "mnist", "fashion_mnist")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable cuda is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available; use --train.device cpu")
    return torch.device(name)


def build_data(cfg: DataCfg) -> DataSource:
    """A position-addressable training source for ``cfg.name`` (token data: ``build_discrete``)."""
    from fewstep.build_discrete import build_token_data, is_token_data, resolve_data
    from fewstep.data import toys

    if is_token_data(cfg):
        return build_token_data(resolve_data(cfg))

    if cfg.name == "gmm8d":
        gmm = toys.make_gmm8d()
        return SamplerSource(lambda n, generator: gmm.sample(n, generator=generator), (8,), name="gmm8d")
    if cfg.name == "checkerboard2d":
        return SamplerSource(toys.checkerboard_sample, (2,), name="checkerboard2d")
    if cfg.name == "spiral2d":
        return SamplerSource(toys.spiral_sample, (2,), name="spiral2d")
    from fewstep.data import images

    if cfg.name == "digits8x8":
        x, y = images.load_digits8x8(cfg.split)
        return TensorSource(x, y, name="digits8x8")
    if cfg.name in ("mnist", "fashion_mnist"):
        load = images.load_mnist if cfg.name == "mnist" else images.load_fashion_mnist
        x, y = load(cfg.root, split="train")
        return TensorSource(x, y, name=cfg.name)
    raise ValueError(f"unknown dataset {cfg.name!r}")


def build_process(cfg: ProcessCfg) -> GaussianProcess:
    return GaussianProcess(get_schedule(cfg.schedule), sigma_data=cfg.sigma_data, t_min=cfg.t_min)


def build_net(cfg: NetCfg, shape: tuple[int, ...]) -> nn.Module:
    """Backbone for samples of ``shape`` (without the batch dimension)."""
    if cfg.kind == "mlp":
        dim = 1
        for s in shape:
            dim *= s
        return MLP(dim, width=cfg.width, depth=cfg.depth, two_time=cfg.two_time, num_classes=cfg.num_classes)
    if cfg.kind == "unet":
        if len(shape) != 3:
            raise ValueError(f"a U-Net needs image data [C, H, W], got sample shape {shape}")
        return UNet(shape[0], base=cfg.base, mults=tuple(cfg.mults), blocks=cfg.blocks, attention=cfg.attention,
                    two_time=cfg.two_time, num_classes=cfg.num_classes, dropout=cfg.dropout)
    raise ValueError(f"unknown net kind {cfg.kind!r}")


def build_denoiser(cfg: RunConfig | DistillConfig, shape: tuple[int, ...]) -> GaussianDenoiser:
    return GaussianDenoiser(build_net(cfg.net, shape), build_process(cfg.process), cfg.net.parametrization)


def build_method(cfg: RunConfig, shape: tuple[int, ...]):
    """The training method of ``cfg``: a ``GaussianDiffusion`` teacher, ``InductiveMomentMatching``, or a
    masked / uniform ``DiscreteDiffusion`` teacher (``build_discrete``; ``shape`` is then unused)."""
    from fewstep.build_discrete import build_discrete_method, is_discrete

    if is_discrete(cfg):
        return build_discrete_method(cfg)
    cfg = resolve_label_dropout(cfg)
    m = cfg.method
    if isinstance(m, IMMCfg):
        return build_imm(cfg, shape)
    classes = cfg.net.num_classes
    return GaussianDiffusion(build_denoiser(cfg, shape), weighting=m.weighting, time_sampling=m.time_sampling,
                             conditional=classes > 0, num_classes=classes or None, label_dropout=m.label_dropout,
                             sigmoid_bias=m.sigmoid_bias)


def resolve_label_dropout(cfg: RunConfig, *, absent: float | None = None) -> RunConfig:
    """``cfg`` with ``method.label_dropout = None`` resolved (diffusion and IMM): to ``absent`` if given (a
    config.json written before label dropout existed: ``absent=0``), else auto: ``AUTO_LABEL_DROPOUT`` (0.1)
    for a class-conditional net, 0 otherwise."""
    from fewstep.methods.diffusion import AUTO_LABEL_DROPOUT

    m = cfg.method
    if not isinstance(m, (DiffusionCfg, IMMCfg)):
        return cfg
    if m.label_dropout is not None:
        if m.label_dropout > 0 and cfg.net.num_classes <= 0:
            raise ValueError("--method.label-dropout > 0 needs a class-conditional net (--net.num-classes > 0)")
        return cfg
    p = absent if absent is not None else (AUTO_LABEL_DROPOUT if cfg.net.num_classes > 0 else 0.0)
    return replace(cfg, method=replace(m, label_dropout=float(p)))


def build_imm(cfg: RunConfig, shape: tuple[int, ...]):
    """IMM from a RunConfig: the backbone (given a second time input) wrapped in ``IMMMap`` with the process's
    schedule and sigma_d = ``process.sigma_data``."""
    from fewstep.denoisers.imm import IMMMap
    from fewstep.methods.imm import InductiveMomentMatching

    cfg = resolve_label_dropout(cfg)
    m = cfg.method
    net = build_net(replace(cfg.net, two_time=True), shape)
    fmap = IMMMap(net, get_schedule(cfg.process.schedule), sigma_d=cfg.process.sigma_data, param=m.param,
                  second_time=m.second_time)
    return InductiveMomentMatching(
        fmap, group_size=m.group_size, k=m.k, k_end=m.k_end, t_min=m.t_min, t_max=m.t_max, eta_max=m.eta_max,
        eta_min=m.eta_min, min_gap=m.min_gap, kernel=m.kernel, dim_divisor=m.dim_divisor,
        bandwidth_floor=m.bandwidth_floor, estimator=m.estimator, weight_a=m.weight_a, weight_b=m.weight_b,
        conditional=cfg.net.num_classes > 0, sampler=m.sampler, two_step=m.two_step,
        num_classes=cfg.net.num_classes or None, label_dropout=m.label_dropout)


def seeded_init(make, seed: int):
    """Call ``make()`` (which initialises networks) with the torch RNG seeded from ``seed``, restoring the
    global RNG state afterwards: the same config always starts from the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def build_trainer(cfg: RunConfig, *, allow_config_change: bool = False, progress: bool = True,
                  data: DataSource | None = None):
    """A ready-to-fit Trainer for ``cfg`` (data, method and optimisation from the config)."""
    from fewstep.build_discrete import TOKEN_DATASETS, is_discrete, resolve_data

    if is_discrete(cfg) != (cfg.data.name in TOKEN_DATASETS):
        raise ValueError(f"--method {cfg.method.name} does not train on {cfg.data.name}: the discrete methods "
                         f"(mdlm, uniform) take token data ({', '.join(TOKEN_DATASETS)}), the others continuous data")
    cfg = resolve_label_dropout(replace(cfg, data=resolve_data(cfg.data)))  # config.json holds the number
    if isinstance(cfg.method, IMMCfg) and cfg.train.batch_size % cfg.method.group_size:
        raise ValueError(f"IMM needs a batch of whole groups: train.batch_size {cfg.train.batch_size} is not a "
                         f"multiple of method.group_size {cfg.method.group_size}")
    data = build_data(cfg.data) if data is None else data
    method = seeded_init(lambda: build_method(cfg, data.shape), cfg.train.seed)
    t = cfg.train
    return make_trainer(method, data, cfg, device=resolve_device(t.device), allow_config_change=allow_config_change,
                        progress=progress)


def make_trainer(method, data: DataSource, cfg: RunConfig | DistillConfig, *, device: torch.device | str,
                 allow_config_change: bool = False, progress: bool = True, per_role_optim: dict | None = None):
    """The ``Trainer`` of ``method`` on ``data`` with the optimisation and bookkeeping of ``cfg.train``; the
    resolved ``cfg`` is the run's config.json."""
    from fewstep.train.trainer import Trainer

    t = cfg.train
    defaults = defaults_like(cfg)
    if isinstance(cfg, RunConfig) and isinstance(cfg.method, (DiffusionCfg, IMMCfg)):
        defaults["method"]["label_dropout"] = 0.0  # a config.json without it: a run trained without label dropout
    return Trainer(
        method, data, run_dir=Path(cfg.run_dir), seed=t.seed, total_nimg=t.total_nimg, batch_size=t.batch_size,
        lr=t.lr, optimizer=t.optimizer, betas=tuple(t.betas), eps=t.eps, weight_decay=t.weight_decay,
        warmup_nimg=t.warmup_nimg, lr_decay=t.lr_decay, lr_final_ratio=t.lr_final_ratio, grad_clip=t.grad_clip,
        precision=t.precision, ema_halflife_nimg=t.ema_halflife_nimg, ckpt_every_nimg=t.ckpt_every_nimg,
        log_every_nimg=t.log_every_nimg, device=str(device), config=to_dict(cfg),
        config_defaults=defaults, allow_config_change=allow_config_change, max_seconds=t.max_seconds,
        progress=progress, per_role_optim=per_role_optim)


def load_trained(run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | None = None):
    """(config, method, nets) of a trained run: the method rebuilt from config.json, weights from the latest
    checkpoint (EMA by default), networks in eval mode on ``device``.

    ``checkpoint`` names an older checkpoint of the run to load instead (e.g. ``"nimg_000192000"``, one of
    ``checkpoints/``; the run keeps the newest ``keep`` of them). For a distillation run: (DistillConfig,
    DistilledStudent, {"student": net}); only the student is loaded (the teacher is not needed to sample)."""
    from fewstep.config import load_any_config
    from fewstep.train.checkpoint import checkpoint_dirs, find_weights, load_weights

    cfg = load_any_config(run_dir)
    weights = Path(run_dir)
    if checkpoint is not None:
        have = [p.name for p in checkpoint_dirs(run_dir)]
        if checkpoint not in have:
            raise FileNotFoundError(f"run {run_dir} has no checkpoint {checkpoint!r} (have {have})")
        weights = weights / "checkpoints" / checkpoint
    if isinstance(cfg, DistillConfig):
        return _load_distilled(weights, cfg, ema=ema, device=device)
    cfg = resolve_label_dropout(cfg, absent=0.0)  # saved before label dropout existed: trained without it
    method = build_method(cfg, sample_shape(cfg.data))
    nets = {}
    for role, module in method.trainable().items():
        state, _ = load_weights(find_weights(weights, role, ema=ema))
        module.load_state_dict(state)
        nets[role] = module.to(device).eval().requires_grad_(False)
    return cfg, method, nets


def sample_shape(cfg: DataCfg) -> tuple[int, ...]:
    """Sample shape (without batch) of a data config: (length,) for token data."""
    from fewstep.build_discrete import is_token_data

    return (2 if cfg.name == "grid2d" else cfg.length,) if is_token_data(cfg) else data_shape(cfg.name)


def data_shape(name: str) -> tuple[int, ...]:
    """Sample shape (without batch) of a dataset."""
    return {"gmm8d": (8,), "checkerboard2d": (2,), "spiral2d": (2,), "digits8x8": (1, 8, 8),
            "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28)}[name]



# ------------------------------------------------------------------------------------------ distillation
ORACLE = "oracle"
REGRESSED_FILE = "teacher_regressed.safetensors"
"""Where a distillation from the oracle caches the net regressed on it (in its run folder by default)."""
WARMSTART_FILE = "student_warmstart.safetensors"
"""Where a distillation caches its warm-started student (``method.warm_start_steps`` > 0; in its run folder)."""
DISTILL_METHODS = {"mm-alternating": "alternating", "mm-instant": "instant", "idlm": "idlm", "dmmd": "dmmd"}
"""CLI / bench method names -> MMCfg.mode (Gaussian teachers) or the discrete method's name."""


def distill_config(teacher: str, *, method: str = "mm-alternating", steps: int = 4, preset: str | None = None,
                   run_dir: str | None = None) -> DistillConfig:
    """The default DistillConfig for ``teacher`` (a run folder or ``"oracle"``), unresolved.

    data / process / net (and the default weighting) come from the teacher's config.json, or for the oracle
    from ``preset`` (default ``gmm8d``: the net regressed on the oracle is that preset's teacher net).
    """
    from fewstep.presets import get_preset

    if method not in DISTILL_METHODS:
        raise ValueError(f"unknown distillation method {method!r}; choose one of {sorted(DISTILL_METHODS)}")
    if method in ("idlm", "dmmd"):
        from fewstep.build_discrete import discrete_distill_config

        if teacher == ORACLE or preset is not None:
            raise ValueError(f"--method {method} distills a trained discrete teacher: pass --teacher RUN_DIR "
                             "(a run of 'fewstep train --method mdlm|uniform'); there is no oracle or preset")
        teacher = str(Path(teacher))
        return discrete_distill_config(teacher, _teacher_config(teacher), method=method, steps=steps,
                                       run_dir=run_dir)
    if teacher == ORACLE:
        base = get_preset(preset or "gmm8d")
        name = f"{base.data.name}-oracle"
    else:
        if preset is not None:
            raise ValueError("--preset only applies to --teacher oracle (a trained teacher brings its config)")
        teacher = str(Path(teacher))  # one spelling per folder: a re-run must compare equal
        base, name = _teacher_config(teacher), Path(teacher).resolve().name
    mode = DISTILL_METHODS[method]
    return DistillConfig(teacher=teacher, data=base.data, process=base.process, net=base.net,
                         method=MMCfg(mode=mode, steps=steps, weighting=None),
                         run_dir=run_dir or f"runs/{name}-mm-{mode}-k{steps}")


def _teacher_config(teacher: str) -> RunConfig:
    from fewstep.config import load_any_config

    if not (Path(teacher) / "config.json").is_file():
        raise FileNotFoundError(f"no teacher run at {teacher}: pass a run folder written by 'fewstep train' "
                                "(with config.json and checkpoints) or 'oracle'")
    cfg = load_any_config(teacher)
    if not isinstance(cfg, RunConfig):
        raise ValueError(f"{teacher} is a distillation run, not a teacher: distill from a run of 'fewstep train'")
    return cfg


def resolve_distill(cfg: DistillConfig) -> DistillConfig:
    """Validate a DistillConfig against its teacher and fill the defaults that come from it (weighting).

    Also fills the auto fields of ``MMCfg`` (gap, warm_start_steps, lr) by the measured policy
    (``fewstep.policy.resolve_mm``); the resolved values are what config.json records.

    Raises ValueError (clear messages) for: the oracle on data other than gmm8d, data / process / net that
    differ from a trained teacher's, a missing teacher run, bad steps, guidance without classes.
    """
    m = cfg.method
    if int(m.steps) != m.steps or m.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {m.steps}")
    if not isinstance(m, MMCfg):  # IDLM / D-MMD: a discrete teacher
        from fewstep.build_discrete import resolve_discrete_distill

        if cfg.teacher == ORACLE:
            raise ValueError(f"--method {m.name} needs a trained discrete teacher (--teacher RUN_DIR)")
        tcfg = _teacher_config(cfg.teacher)
        for part in ("data", "net"):
            if getattr(cfg, part) != getattr(tcfg, part):
                raise ValueError(f"{part} differs from the teacher's ({cfg.teacher}/config.json): a student copies "
                                 "its teacher, so data and net come from the teacher")
        return resolve_discrete_distill(cfg, tcfg)
    if cfg.discrete is not None:
        raise ValueError("discrete is set, but MM distills Gaussian teachers (use --method idlm|dmmd)")
    if cfg.teacher == ORACLE:
        if cfg.data.name != "gmm8d":
            raise ValueError(f"the exact oracle teacher exists only for gmm8d, not {cfg.data.name}: use --preset "
                             "gmm8d, or distill from a trained teacher (--teacher RUN_DIR)")
        weighting = DiffusionCfg().weighting  # the library teacher's default training weight
        bias = DiffusionCfg().sigmoid_bias
    else:
        tcfg = _teacher_config(cfg.teacher)
        from fewstep.build_discrete import is_discrete

        if is_discrete(tcfg):
            raise ValueError(f"{cfg.teacher} is a discrete ({tcfg.method.name}) teacher: distill it with --method "
                             "idlm or dmmd (mm-alternating / mm-instant distill Gaussian teachers)")
        for part in ("data", "process", "net"):
            if getattr(cfg, part) != getattr(tcfg, part):
                raise ValueError(f"{part} differs from the teacher's ({cfg.teacher}/config.json): a student copies "
                                 "its teacher, so data, process and net come from the teacher")
        weighting = tcfg.method.weighting
        bias = getattr(tcfg.method, "sigmoid_bias", 0.0)
    if m.guidance is not None and cfg.net.num_classes <= 0:
        raise ValueError("--method.guidance needs a class-conditional teacher (net.num_classes > 0)")
    if m.guidance is not None and cfg.teacher != ORACLE:
        check_guidance_teacher(cfg.teacher, tcfg)
    if m.weighting is None:
        m = replace(m, weighting=weighting)
    if m.sigmoid_bias is None:
        m = replace(m, sigmoid_bias=bias)
    from fewstep.policy import resolve_mm

    m = resolve_mm(m, cfg.data, cfg.train)  # gap, warm start and student LR by method, k and data kind
    if m.lr <= 0 or (m.aux_lr is not None and m.aux_lr <= 0):
        raise ValueError(f"--method.lr and --method.aux-lr must be > 0, got {m.lr} / {m.aux_lr}")
    if m.warm_start_steps < 0 or m.warm_start_teacher_steps < 1 or m.warm_start_pool < 0:
        raise ValueError("--method.warm-start-steps must be >= 0, warm-start-teacher-steps >= 1 and "
                         "warm-start-pool >= 0 (0: fresh targets every step)")
    return replace(cfg, method=m)


def check_guidance_teacher(teacher: str, tcfg: RunConfig) -> None:
    """Raise a one-line ValueError unless the teacher run ``tcfg`` was trained with label dropout > 0 (its null
    label, the unconditional branch of classifier-free guidance, is otherwise untrained). A config.json
    without ``label_dropout`` (written before it existed) counts as trained without."""
    p = getattr(tcfg.method, "label_dropout", None)
    if not p or p <= 0:
        raise ValueError(f"--method.guidance needs a teacher trained with label dropout, but {teacher} was trained "
                         "without it (its null label is untrained): retrain the teacher with "
                         "--method.label-dropout 0.1")


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
    from fewstep.data.toys import GMMOracle, make_gmm8d
    from fewstep.methods.mm import regress_on_teacher
    from fewstep.train.checkpoint import load_weights, save_weights

    cfg = resolve_distill(cfg)
    m = cfg.method
    path = Path(cache) if cache is not None else Path(cfg.run_dir) / REGRESSED_FILE
    key = json.dumps({"net": to_dict(cfg.net), "process": to_dict(cfg.process), "steps": m.oracle_regress_steps,
                      "batch": m.oracle_regress_batch, "lr": m.oracle_regress_lr, "weighting": m.weighting,
                      "seed": cfg.train.seed}, sort_keys=True)
    net = seeded_init(lambda: build_denoiser(cfg, data_shape(cfg.data.name)), cfg.train.seed)
    if path.is_file():
        state, meta = load_weights(path)
        if meta.get("regress") == key:
            net.load_state_dict(state)
            return net, float(meta.get("regress_seconds", "0"))
    gmm, process = make_gmm8d(), net.process
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
    """A ready-to-fit Trainer distilling ``cfg.teacher`` into a ``cfg.method.steps``-step student.

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

    cfg = resolve_distill(cfg)
    if not isinstance(cfg.method, MMCfg):
        from fewstep.build_discrete import build_discrete_distillation

        return build_discrete_distillation(cfg, allow_config_change=allow_config_change, progress=progress,
                                           data=data)
    m = cfg.method
    device = _distill_device(cfg)
    data = build_data(cfg.data) if data is None else data
    process = build_process(cfg.process)
    if cfg.teacher == ORACLE:
        from fewstep.data.toys import GMMOracle, make_gmm8d

        base, _ = oracle_net(cfg, regress_cache)
        teacher: nn.Module = base if m.mode == "instant" else GMMOracle(make_gmm8d(), process.schedule)
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
    method = MomentMatching(
        teacher, student, init_from_teacher(base) if m.mode == "alternating" else None,
        process=process, mode=m.mode, k=m.steps, s_min=m.s_min, gap=m.gap, gap_low=m.gap_low, weighting=m.weighting,
        weight_max=m.weight_max, lambda_reg=m.lambda_reg, eta=m.eta, renoise_mode=m.renoise,
        conditional=classes > 0, num_classes=classes or None, guidance=m.guidance, precond=m.precond,
        precond_beta=m.precond_beta, c=m.c, jvp=m.jvp, data_grad=m.data_grad,
        sigmoid_bias=m.sigmoid_bias if m.sigmoid_bias is not None else 0.0)
    aux_lr = m.aux_lr if m.aux_lr is not None else m.aux_lr_mult * m.lr
    per_role = {"student": {"lr": m.lr}} | ({"aux": {"lr": aux_lr}} if m.mode == "alternating" else {})
    trainer = make_trainer(method, data, cfg, device=device, allow_config_change=allow_config_change,
                           progress=progress, per_role_optim=per_role)
    trainer.warm_start_seconds = warm_secs  # not part of train_seconds (like the oracle regression)
    return trainer


class DistilledStudent:
    """The sampling side of a distilled k-step student (``load_trained`` of a distillation run).

    ``generate`` runs the student's ancestral k-step sampler (``sample_student``) with the training eta and
    re-noising rule; ``k`` is the step count it was trained for (other step counts are allowed).
    """

    sampler = "student"

    def __init__(self, process, *, k: int, eta: float, renoise_mode: str) -> None:
        self.process, self.k, self.eta, self.renoise_mode = process, k, eta, renoise_mode

    def generate(self, n: int, *, steps: int, nets, generator: torch.Generator, cond=None,
                 shape: tuple[int, ...] | None = None, device: torch.device | str = "cpu", **options: object):
        """``n`` samples [n, *shape] (float64); teacher-sampler options (sampler, grid) are ignored."""
        from fewstep.samplers.student import sample_student

        if shape is None:
            raise ValueError("generate needs the sample shape (without batch dim)")
        return sample_student(nets["student"], self.process, (n, *shape), steps=steps, generator=generator,
                              device=device, eta=self.eta, renoise_mode=self.renoise_mode, cond=cond)


def _load_distilled(run_dir: str | Path, cfg: DistillConfig, *, ema: bool, device: str):
    from fewstep.train.checkpoint import find_weights, load_weights

    if not isinstance(cfg.method, MMCfg):
        from fewstep.build_discrete import load_discrete_distilled

        return load_discrete_distilled(run_dir, cfg, ema=ema, device=device)
    student = build_denoiser(cfg, data_shape(cfg.data.name))
    state, _ = load_weights(find_weights(run_dir, "student", ema=ema))
    student.load_state_dict(state)
    m = cfg.method
    sampler = DistilledStudent(student.process, k=m.steps, eta=m.eta, renoise_mode=m.renoise)
    return cfg, sampler, {"student": student.to(device).eval().requires_grad_(False)}
