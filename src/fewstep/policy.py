"""The measured default policy of the distillation methods.

A user runs ``fewstep distill --method M --teacher RUN --steps K`` and nothing else. The settings that must
depend on the method, the step count k and the kind of data are left ``None`` ("auto") in the method configs
and filled in here by :func:`resolve_mm` / :func:`resolve_idlm`; the resolved values are written into the
run's ``config.json`` (so a run is reproducible from its config, and a re-run of the same command resumes).
Every rule names the measurement that picked it (numbers: benchmarks/defaults.md, which links the older
measurements on benchmarks/mm.md and benchmarks/idlm.md); an explicit flag always wins.

MM (``MMCfg``):
- ``gap``: ``fixed`` (t = s + 1/k) for image data at k >= 4, else ``uniform`` (t - s ~ U(0, 1/k]). On digits8x8
  the fixed gap beats the uniform one at k = 4 and 8 (in every training seed at k = 8); it hurts k <= 2 (at k = 1
  only t = 1 is trained) and every 2-D / 8-D toy (samples fall between the modes), so vectors keep the paper's
  gap (measured: benchmarks/mm.md, time gap).
- ``warm_start_steps``: 500 for k <= 2 (the t = 1 saddle); also at k <= 4 for instant MM (it helps on digits,
  checkerboard and spiral and is neutral on gmm8d) and for alternating MM on images (it helps on digits, while it
  slightly hurts alternating MM on spiral2d and gmm8d); 0 otherwise (measured: benchmarks/mm.md, warm start beyond
  k = 2).
- ``lr`` (the student's): 0.3 x ``train.lr`` (3e-5 at the default 1e-4) for alternating MM on vector data, where
  the slower student tracks its auxiliary better (gmm8d oracle: better at every k; measured: benchmarks/mm.md,
  gmm8d k = 8 at the metric's resolution, and benchmarks/defaults.md, gmm8d); ``train.lr`` otherwise. The
  auxiliary's LR is ``aux_lr_mult`` x the student's.

IDLM (``IDLMCfg``):
- masked teachers get the latent-mixture student (``latent_dim`` 64): on grid2d it represents the joint in one step
  from all-mask and stays far below the factorised student at 1, 2 and 4 steps (benchmarks/idlm.md, grid2d). On
  sequences of at least ``LONG_SEQUENCE`` tokens its latent map starts off its zero saddle and moves 10x faster
  (``latent_init_std`` 0.002, ``latent_lr_mult`` 10): on text-hmm (L = 64) at K = 4 that brings the oracle NLL close
  to the teacher's 1,024-step value in three training seeds, where the zero init stays near the factorised student
  (benchmarks/idlm.md, the latent-noise student off its saddle). On two-token grid2d that setting over-commits the
  noise (worse with more steps), so short sequences keep the zero init. Uniform teachers keep the factorised
  student (the latent one did not help on grid2d; benchmarks/idlm.md, grid2d).

D-MMD (``DMMDCfg``):
- every student gets the latent-noise input (``latent_dim`` 64; an imported MDLM / Duo transformer has none). Masked
  teachers need it (the all-mask state carries no randomness; the paper's extra noise); on uniform teachers the
  first step of every k-step sampler starts from t_max, where the posterior q(z_s | z_t, x) forgets z_t, so the
  generator gradient is the same for every z_t and a factorised student splits the noise states into the data's
  cells only by chance (2 of 9 default grid2d students collapsed to independent tokens, none beat the teacher at
  k = 4). Uniform teachers' latent maps start off their saddle and move 10x faster (``LONG_LATENT``): on grid2d the
  students then beat the teacher at 1, 2 and 4 steps in three training seeds (benchmarks/defaults.md, grid2d
  uniform D-MMD with the latent student).
  Masked keeps the zero init (measured on grid2d since issue 6).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fewstep.build.datasets import DataKind, data_kind
from fewstep.config import DataCfg, DMMDCfg, IDLMCfg, MMCfg, TrainCfg

WARM_START_STEPS = 500
"""Warm-start length wherever the policy turns it on (``methods.mm_warmstart``)."""
VECTOR_ALTERNATING_LR_MULT = 0.3
"""Student LR / ``train.lr`` of alternating MM on vector data."""
LATENT_DIM = 64
"""Latent width of the masked IDLM student."""
LONG_SEQUENCE = 16
"""Sequences at least this long get the latent map off its saddle (``LONG_LATENT``)."""
LONG_LATENT = {"latent_init_std": 0.002, "latent_lr_mult": 10.0}
"""The latent map's initial std and LR multiplier on long sequences (else 0 and 1)."""


def mm_gap(mode: str, k: int, kind: DataKind) -> Literal["uniform", "fixed"]:
    """The time-gap rule (module notes)."""
    return "fixed" if kind == "images" and k >= 4 else "uniform"


def mm_warm_start_steps(mode: str, k: int, kind: DataKind) -> int:
    """The warm-start rule (module notes)."""
    if k <= 2 or (k <= 4 and (mode == "instant" or kind == "images")):
        return WARM_START_STEPS
    return 0


def mm_student_lr(mode: str, kind: DataKind, train_lr: float) -> float:
    """The student-LR rule (module notes)."""
    return VECTOR_ALTERNATING_LR_MULT * train_lr if mode == "alternating" and kind == "vectors" else train_lr


def resolve_mm(m: MMCfg, data: DataCfg, train: TrainCfg) -> MMCfg:
    """``m`` with its auto fields (``gap``, ``warm_start_steps``, ``lr``) set by the policy; set fields are kept."""
    kind = data_kind(data)
    if m.gap == "auto":
        m = replace(m, gap=mm_gap(m.mode, m.steps, kind))
    if m.warm_start_steps is None:
        m = replace(m, warm_start_steps=mm_warm_start_steps(m.mode, m.steps, kind))
    if m.lr is None:
        m = replace(m, lr=mm_student_lr(m.mode, kind, train.lr))
    return m


def resolve_idlm(m: IDLMCfg, process_kind: str, length: int) -> IDLMCfg:
    """``m`` with its auto latent-student fields set by the policy (module notes) for a ``process_kind``
    (masked / uniform) teacher on sequences of ``length`` tokens; set fields are kept."""
    masked = process_kind == "masked"
    dim = m.latent_dim if m.latent_dim is not None else (LATENT_DIM if masked else 0)
    long_latent = dim > 0 and masked and length >= LONG_SEQUENCE
    std = m.latent_init_std if m.latent_init_std is not None else (LONG_LATENT["latent_init_std"] if long_latent
                                                                  else 0.0)
    mult = m.latent_lr_mult if m.latent_lr_mult is not None else (LONG_LATENT["latent_lr_mult"] if long_latent
                                                                 else 1.0)
    return replace(m, latent_dim=dim, latent_init_std=std, latent_lr_mult=mult)


def resolve_dmmd(m: DMMDCfg, process_kind: str, *, has_latent_input: bool = True) -> DMMDCfg:
    """``m`` with its auto latent-student fields set by the policy (module notes) for a ``process_kind``
    (masked / uniform) teacher; ``has_latent_input`` False (an imported transformer) resolves latent_dim 0. Set
    fields are kept."""
    dim = m.latent_dim if m.latent_dim is not None else (LATENT_DIM if has_latent_input else 0)
    off_saddle = dim > 0 and process_kind == "uniform"
    std = m.latent_init_std if m.latent_init_std is not None else (LONG_LATENT["latent_init_std"] if off_saddle
                                                                  else 0.0)
    mult = m.latent_lr_mult if m.latent_lr_mult is not None else (LONG_LATENT["latent_lr_mult"] if off_saddle
                                                                 else 1.0)
    return replace(m, latent_dim=dim, latent_init_std=std, latent_lr_mult=mult)
