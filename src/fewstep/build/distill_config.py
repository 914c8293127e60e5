"""Distillation configs: the default ``DistillConfig`` of a teacher and its one-time resolution against it.

``distill_config`` builds the unresolved default for ``fewstep distill --method M --teacher RUN --steps K``;
``resolve_distill`` validates it against the teacher's config.json and fills every default that depends on the
teacher, the method, k or the kind of data (``fewstep.policy``), so that config.json alone reproduces the run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fewstep.build.datasets import resolve_data
from fewstep.build.models import is_discrete
from fewstep.config import DiffusionCfg, DistillConfig, MMCfg, RunConfig, load_any_config

ORACLE = "oracle"


DISTILL_METHODS = {"mm-alternating": "alternating", "mm-instant": "instant", "idlm": "idlm", "dmmd": "dmmd"}
"""CLI / bench method names -> MMCfg.mode (Gaussian teachers) or the discrete method's name."""


DISCRETE_DISTILL = ("idlm", "dmmd")
"""Distillation methods of discrete teachers (``fewstep distill --method``)."""



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
        if teacher == ORACLE or preset is not None:
            raise ValueError(f"--method {method} distills a trained discrete teacher: pass --teacher RUN_DIR "
                             "(a run of 'fewstep train --method mdlm|uniform'); there is no oracle or preset")
        from fewstep.build.pretrained import canonical_teacher

        teacher = canonical_teacher(teacher)
        return discrete_distill_config(teacher, teacher_config(teacher), method=method, steps=steps,
                                       run_dir=run_dir)
    if teacher == ORACLE:
        base = get_preset(preset or "gmm8d")
        name = f"{base.data.name}-oracle"
    else:
        if preset is not None:
            raise ValueError("--preset only applies to --teacher oracle (a trained teacher brings its config)")
        from fewstep.build.pretrained import canonical_teacher, imported_dir, token_kind

        if token_kind(teacher):
            raise ValueError(f"{teacher} is a discrete (MDLM / Duo) teacher: distill it with --method idlm or dmmd")
        teacher = canonical_teacher(teacher)  # one spelling: a re-run compares equal
        base, name = teacher_config(teacher), imported_dir(teacher).resolve().name
    mode = DISTILL_METHODS[method]
    return DistillConfig(teacher=teacher, data=base.data, process=base.process, net=base.net,
                         method=MMCfg(mode=mode, steps=steps, weighting=None),
                         run_dir=run_dir or f"runs/{name}-mm-{mode}-k{steps}")


def teacher_config(teacher: str) -> RunConfig:
    """The config of a teacher run folder, or of another library's folder (``diffusers:DIR``, ``mdlm:DIR``,
    ``duo:DIR``: ``build.pretrained``); a one-line error for a missing or distillation run."""
    from fewstep.build.pretrained import diffusers_run_config, is_diffusers, token_kind, token_run_config

    if is_diffusers(teacher):
        return diffusers_run_config(teacher)
    if token_kind(teacher):
        return token_run_config(teacher)
    if not (Path(teacher) / "config.json").is_file():
        raise FileNotFoundError(f"no teacher run at {teacher}: pass a run folder written by 'fewstep train' "
                                "(with config.json and checkpoints) or 'oracle'")
    cfg = load_any_config(teacher)
    if not isinstance(cfg, RunConfig):
        raise ValueError(f"{teacher} is a distillation run, not a teacher: distill from a run of 'fewstep train'")
    if cfg.method.name == "imm":
        raise ValueError(f"{teacher} is an IMM run (a few-step model trained from scratch), not a diffusion "
                         "teacher: sample it directly ('fewstep sample --run'), or distill from a diffusion / mdlm / "
                         "uniform run")
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
        if cfg.teacher == ORACLE:
            raise ValueError(f"--method {m.name} needs a trained discrete teacher (--teacher RUN_DIR)")
        from fewstep.build.pretrained import is_imported

        tcfg = teacher_config(cfg.teacher)
        imported = is_imported(cfg.teacher)
        for part in ("net",) if imported else ("data", "net"):
            if getattr(cfg, part) != getattr(tcfg, part):
                raise ValueError(f"{part} differs from the teacher's ({cfg.teacher}/config.json): a student copies "
                                 "its teacher, so data and net come from the teacher")
        if imported:
            cfg = replace(cfg, data=check_imported_tokens(cfg, tcfg))
        return resolve_discrete_distill(cfg, tcfg)
    if cfg.discrete is not None:
        raise ValueError("discrete is set, but MM distills Gaussian teachers (use --method idlm|dmmd)")
    if cfg.teacher == ORACLE:
        if cfg.data.name not in ("gmm8d", "gmm"):
            raise ValueError(f"the exact oracle teacher exists for Gaussian mixtures only (gmm8d, or --data.name gmm "
                             f"--data.root FILE.json), not {cfg.data.name}: distill from a trained teacher "
                             "(--teacher RUN_DIR)")
        cfg = replace(cfg, data=resolve_data(cfg.data))  # a mixture file: its dimension and identity
        default = "runs/gmm8d-oracle-"
        if cfg.data.name == "gmm" and cfg.run_dir.startswith(default):  # gmm8d's default folder: name it after the file
            cfg = replace(cfg, run_dir=f"runs/{Path(cfg.data.root).stem}-oracle-" + cfg.run_dir[len(default):])
        weighting = DiffusionCfg().weighting  # the library teacher's default training weight
        bias = DiffusionCfg().sigmoid_bias
    else:
        tcfg = teacher_config(cfg.teacher)
        if is_discrete(tcfg):
            raise ValueError(f"{cfg.teacher} is a discrete ({tcfg.method.name}) teacher: distill it with --method "
                             "idlm or dmmd (mm-alternating / mm-instant distill Gaussian teachers)")
        from fewstep.build.pretrained import is_diffusers

        imported = is_diffusers(cfg.teacher)
        for part in ("process", "net") if imported else ("data", "process", "net"):
            if getattr(cfg, part) != getattr(tcfg, part):
                raise ValueError(f"{part} differs from the teacher's ({cfg.teacher}/config.json): a student copies "
                                 "its teacher, so data, process and net come from the teacher")
        if imported:
            cfg = replace(cfg, data=check_imported_data(cfg, tcfg))
            if m.jvp == "forward":  # PyTorch has no forward-mode AD of group_norm on the views diffusers passes it
                m = replace(m, jvp="double_backward")
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


def check_imported_data(cfg: DistillConfig, tcfg: RunConfig):
    """The resolved data of a distillation from an imported (diffusers) teacher: the user must name the data the
    model was trained on (a diffusers folder does not say), with the model's sample shape."""
    from fewstep.build.datasets import sample_shape

    if cfg.data == tcfg.data:
        raise ValueError("a diffusers teacher brings no data: pass the data it was trained on, e.g. --data.name "
                         "digits8x8 or --data.name images --data.root DIR (images in [-1, 1] of shape "
                         f"{tuple(tcfg.data.shape)})")
    data = cfg.data
    if data.shape == tcfg.data.shape and data.classes == tcfg.data.classes:  # the teacher's placeholder, not a file's
        data = replace(data, shape=None, classes=None)
    data = resolve_data(data)
    if sample_shape(data) != tuple(tcfg.data.shape):
        raise ValueError(f"the data's samples have shape {sample_shape(data)} but the diffusers model takes "
                         f"{tuple(tcfg.data.shape)}")
    return data


def check_imported_tokens(cfg: DistillConfig, tcfg: RunConfig):
    """The resolved data of a distillation from an MDLM / Duo checkpoint: token data the user names, with the
    model's vocabulary and at most its length."""
    if cfg.data == tcfg.data:
        raise ValueError("an MDLM / Duo checkpoint brings no data: pass the token data it was trained on, e.g. "
                         "--data.name text-bpe --data.root TEXT --data.length N or --data.name tokens --data.root "
                         f"IDS.npy (vocabulary {tcfg.data.vocab}, length <= {tcfg.data.length})")
    data = resolve_data(cfg.data)
    if data.vocab != tcfg.data.vocab or data.length > tcfg.data.length:
        raise ValueError(f"the data has {data.vocab} tokens and length {data.length}; the checkpoint takes "
                         f"{tcfg.data.vocab} tokens and length <= {tcfg.data.length}")
    return data


def check_guidance_teacher(teacher: str, tcfg: RunConfig) -> None:
    """Raise a one-line ValueError unless the teacher run ``tcfg`` was trained with label dropout > 0 (its null
    label, the unconditional branch of classifier-free guidance, is otherwise untrained). A config.json
    without ``label_dropout`` (written before it existed) counts as trained without."""
    from fewstep.build.pretrained import is_diffusers

    if is_diffusers(teacher):
        raise ValueError("--method.guidance is not available for a diffusers teacher: fewstep cannot tell whether "
                         "its null label was trained")
    p = getattr(tcfg.method, "label_dropout", None)
    if not p or p <= 0:
        raise ValueError(f"--method.guidance needs a teacher trained with label dropout, but {teacher} was trained "
                         "without it (its null label is untrained): retrain the teacher with "
                         "--method.label-dropout 0.1")


def discrete_distill_config(teacher: str, tcfg: RunConfig, *, method: str, steps: int, run_dir: str | None = None):
    """The default DistillConfig (IDLM or D-MMD) for a discrete teacher run ``teacher`` with config ``tcfg``."""
    from fewstep.config import DISCRETE_DISTILL_TRAIN, DMMDCfg, IDLMCfg

    if not is_discrete(tcfg):
        raise ValueError(f"--method {method} distills a discrete teacher (mdlm / uniform); {teacher} trains "
                         f"{tcfg.method.name}: use mm-alternating or mm-instant")
    m = IDLMCfg(steps=steps) if method == "idlm" else DMMDCfg(steps=steps)
    from fewstep.build.pretrained import imported_dir

    name = imported_dir(teacher).resolve().name
    return DistillConfig(teacher=teacher, data=tcfg.data, process=tcfg.process, net=tcfg.net, method=m,
                         discrete=tcfg.method, train=DISCRETE_DISTILL_TRAIN,
                         run_dir=run_dir or f"runs/{name}-{method}-k{steps}")


def resolve_discrete_distill(cfg, tcfg: RunConfig):
    """Validate an IDLM / D-MMD DistillConfig against its teacher's config; fills ``discrete`` from it."""
    if not is_discrete(tcfg):
        raise ValueError(f"{cfg.teacher} is not a discrete teacher (mdlm / uniform): --method {cfg.method.name} "
                         "distills discrete diffusion")
    if cfg.discrete is not None and cfg.discrete != tcfg.method:
        raise ValueError(f"discrete differs from the teacher's method ({cfg.teacher}/config.json)")
    cfg = with_dmmd_policy(with_idlm_policy(replace(cfg, discrete=tcfg.method)), new_run=True)
    m = cfg.method
    if m.latent_dim is not None and m.latent_dim < 0:
        raise ValueError(f"--method.latent-dim must be >= 0, got {m.latent_dim}")
    if not (m.latent_lr_mult > 0 and m.latent_init_std >= 0):
        raise ValueError(f"--method.latent-lr-mult must be > 0 and --method.latent-init-std >= 0, got "
                         f"{m.latent_lr_mult} / {m.latent_init_std}")
    latent_set = m.latent_lr_mult != 1.0 or m.latent_init_std != 0.0
    if latent_set and not student_latent_dim(replace(cfg, discrete=tcfg.method)):
        raise ValueError("--method.latent-lr-mult / --method.latent-init-std need a latent-noise student "
                         "(--method.latent-dim > 0)")
    if m.name == "idlm" and (m.aux_every < 1 or m.tau <= 0):
        raise ValueError("--method.aux-every must be >= 1 and --method.tau > 0")
    return replace(cfg, discrete=tcfg.method)


def with_dmmd_policy(cfg, *, new_run: bool = False):
    """``cfg`` with a D-MMD method's auto latent fields resolved (``fewstep.policy.resolve_dmmd``); a no-op for
    other methods and for resolved or stored configs (both record the init std and LR multiplier; a config.json
    from before this policy keeps its latent_dim None and the old rule, ``student_latent_dim``). ``new_run``
    (a distillation being resolved): also a None latent_dim alone is filled. Needs ``cfg.discrete``."""
    m = cfg.method
    if m.name != "dmmd" or (None not in (m.latent_init_std, m.latent_lr_mult)
                            and not (new_run and m.latent_dim is None)):
        return cfg
    from fewstep.policy import resolve_dmmd

    kind = "masked" if cfg.discrete.name == "mdlm" else "uniform"
    return replace(cfg, method=resolve_dmmd(cfg.method, kind, has_latent_input=cfg.net.kind != "mdlm_dit"))


def with_idlm_policy(cfg):
    """``cfg`` with an IDLM method's auto latent fields resolved (``fewstep.policy.resolve_idlm``; a no-op for
    D-MMD and for resolved configs). Needs ``cfg.discrete``."""
    if cfg.method.name != "idlm":
        return cfg
    from fewstep.policy import resolve_idlm

    kind = "masked" if cfg.discrete.name == "mdlm" else "uniform"
    m = cfg.method
    if cfg.net.kind == "mdlm_dit" and m.latent_dim is None:  # an imported transformer has no latent input
        m = replace(m, latent_dim=0)
    return replace(cfg, method=resolve_idlm(m, kind, cfg.data.length))


def student_latent_dim(cfg) -> int:
    """The student's latent width: ``method.latent_dim`` (a D-MMD config that stores None, from before the policy
    resolved it: 64 masked, 0 uniform)."""
    m = cfg.method
    if m.latent_dim is not None:
        return int(m.latent_dim)
    return 64 if cfg.discrete.name == "mdlm" and cfg.net.kind != "mdlm_dit" else 0


def is_resolved(cfg: DistillConfig) -> bool:
    """Whether ``cfg`` went through :func:`resolve_distill` (no auto field left, a discrete teacher's process
    filled in)."""
    m = cfg.method
    if isinstance(m, MMCfg):
        return (m.weighting is not None and m.sigmoid_bias is not None and m.gap != "auto"
                and m.warm_start_steps is not None and m.lr is not None)
    if cfg.discrete is None:
        return False
    if m.name == "dmmd":  # latent_dim None: a config stored before the policy covered D-MMD (student_latent_dim)
        return None not in (m.latent_init_std, m.latent_lr_mult)
    return m.name != "idlm" or None not in (m.latent_dim, m.latent_init_std, m.latent_lr_mult)


def require_resolved(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` if resolved, else a one-line error: a distillation config is resolved once, at the edge (the CLI,
    ``fewstep.distill``, the bench), and the builders take it as it is."""
    if not is_resolved(cfg):
        raise ValueError("this DistillConfig is not resolved: pass resolve_distill(cfg) (it validates the config "
                         "against the teacher and fills the auto defaults)")
    return cfg
