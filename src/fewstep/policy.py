"""The measured default policy of the distillation methods.

A user runs ``fewstep distill --method M --teacher RUN --steps K`` and nothing else. The settings that must
depend on the method, the step count k and the kind of data are left ``None`` ("auto") in the method configs
and filled in here by :func:`resolve_mm` / :func:`resolve_idlm`; the resolved values are written into the
run's ``config.json`` (so a run is reproducible from its config, and a re-run of the same command resumes).
Every rule names the measurement that picked it (BENCHMARKS.md, "Defaults"); an explicit flag always wins.

MM (``MMCfg``):
- ``gap``: ``fixed`` (t = s + 1/k) for image data at k >= 4, else ``uniform`` (t - s ~ U(0, 1/k]). digits8x8
  alternating k = 8: fixed 15.3 vs uniform 17.6 fd_digits (3 seeds), k = 4: 22.1 vs 28.0; the fixed gap hurts
  k <= 2 and every 2-D / 8-D toy (gmm8d k = 8 energy 0.0041 vs 0.0006), so vectors keep the spec's gap.
- ``warm_start_steps``: 500 for k <= 2 (the t = 1 saddle); also at k <= 4 for instant MM (digits k = 4: 44.7 ->
  27.6, checkerboard and spiral 3x better, gmm8d neutral) and for alternating MM on images (digits k = 4: 27.4 ->
  20.6; it hurts alternating MM on spiral2d and gmm8d by about 2 SE); 0 otherwise.
- ``lr`` (the student's): 0.3 x ``train.lr`` (3e-5 at the default 1e-4) for alternating MM on vector data, where
  the slower student tracks its auxiliary better (gmm8d oracle, 32 x 4,096 samples: k = 8 0.00016 vs 0.00044,
  k = 2 0.0034 vs 0.0047, k = 4 0.0009 vs 0.0010); ``train.lr`` otherwise. The auxiliary's LR is
  ``aux_lr_mult`` x the student's.

IDLM (``IDLMCfg``):
- masked teachers get the latent-mixture student (``latent_dim`` 64): grid2d tv 0.109 / 0.095 / 0.091 at 1 / 2 /
  4 steps vs the factorised student's 0.465 / 0.379 / 0.341. On sequences of at least ``LONG_SEQUENCE`` tokens its
  latent map starts off its zero saddle and moves 10x faster (``latent_init_std`` 0.002, ``latent_lr_mult`` 10):
  text-hmm (L = 64) K = 4 oracle NLL 2.388 / 2.395 / 2.385 over three seeds vs 2.408 with the zero init and 2.414
  factorised (teacher at 1,024 steps 2.385). On two-token grid2d that setting over-commits the noise (0.095 /
  0.183 / 0.240), so short sequences keep the zero init. Uniform teachers keep the factorised student (the latent
  one did not help on grid2d: 0.497 / 0.463 / 0.209 vs 0.497 / 0.459 / 0.204).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from fewstep.config import DataCfg, IDLMCfg, MMCfg, TrainCfg

DataKind = Literal["vectors", "images", "tokens"]

IMAGE_DATA = ("digits8x8", "mnist", "fashion_mnist")
TOKEN_DATA = ("text-hmm", "grid2d", "text-char", "text-bpe")

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


def data_kind(data: DataCfg) -> DataKind:
    """``images`` (digits8x8, MNIST, Fashion-MNIST), ``tokens`` (the discrete data) or ``vectors``."""
    if data.name in IMAGE_DATA:
        return "images"
    return "tokens" if data.name in TOKEN_DATA else "vectors"


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
