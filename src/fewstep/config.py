"""Frozen, documented configuration dataclasses. Only ``build.py`` turns them into objects.

A run is described by one :class:`RunConfig`; presets (``presets.py``) are RunConfigs overridden by
command-line flags (``fewstep train --preset NAME --train.lr 3e-4``); the resolved config is saved to
``run_dir/config.json`` and into every checkpoint's metadata.

A distillation run (``fewstep distill``) is described by a :class:`DistillConfig`: the teacher (a run folder
or ``"oracle"``), the teacher's data / process / net (which also describe the student), a distillation
method dataclass (:class:`MMCfg` for Gaussian teachers, :class:`IDLMCfg` / :class:`DMMDCfg` for discrete ones) and a
:class:`TrainCfg` with distillation defaults (``DISTILL_TRAIN``). ``load_any_config`` reads either kind.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class DataCfg:
    """Training data."""

    name: Literal["gmm8d", "checkerboard2d", "spiral2d", "digits8x8", "mnist", "fashion_mnist", "text-hmm",
                  "grid2d", "text-char", "text-bpe", "images", "vectors", "gmm", "tokens", "mnist14"] = "checkerboard2d"
    """Dataset name. Your own files: ``images`` (a PNG/JPEG folder, class sub-folders giving labels, an .npz or an
    IDX file), ``vectors`` (.npy / .npz / .csv [N, d]), ``gmm`` (a .json mixture: data and its exact oracle
    teacher), ``tokens`` (a .npy of token ids or a folder of them); each with ``--data.root PATH``."""
    root: str | None = None
    """The data's local path (images / vectors / gmm / tokens); MNIST / Fashion-MNIST: folder with the IDX files;
    text-char: the text file (default: Tiny Shakespeare found by ``data.text.find_tinyshakespeare``); text-bpe: a
    text file or a folder of .txt files (tokenised once to a memmap cache). See scripts/get_resources.sh."""
    split: Literal["train", "all"] = "train"
    """digits8x8: train on the fixed training half (the other half is the fd_digits reference) or on all."""
    length: int = 64
    """Tokens per sample (text-hmm, text-char, text-bpe; grid2d is always 2)."""
    vocab: int = 32
    """Vocabulary of text-hmm (text-char / text-bpe / grid2d: set from the data)."""
    states: int = 8
    """Hidden states of text-hmm."""
    concentration: float = 0.1
    """Dirichlet concentration of the text-hmm transition and emission rows (smaller: sparser, more context)."""
    grid: Literal["checkerboard", "spiral", "rings"] = "checkerboard"
    """Joint table of grid2d."""
    seed: int = 0
    """Seed of a generated source (text-hmm's random HMM): part of the dataset's identity."""
    resize: int | None = None
    """images: resize to resize x resize pixels (area / bilinear) after loading."""
    standardize: bool = False
    """vectors: train on (x - mean) / std per dimension; the run stores both and samples come back in data units."""
    shape: tuple[int, ...] | None = None
    """Sample shape without the batch dimension, filled in from the file (images, vectors, gmm): a run reloads
    without its data."""
    classes: int | None = None
    """Number of labels of labelled images (filled in from the file; 0 when unlabelled)."""
    center: tuple[float, ...] | None = None
    """vectors with ``standardize``: the per-dimension mean (filled in from the file)."""
    scale: tuple[float, ...] | None = None
    """vectors with ``standardize``: the per-dimension std (filled in from the file)."""
    digest: str | None = None
    """The content hash of ``root`` (filled in): the identity of your own data; a changed file is refused on resume."""


@dataclass(frozen=True)
class ProcessCfg:
    """Gaussian noise process."""

    schedule: Literal["cosine", "flow", "ddpm"] = "cosine"
    """alpha/sigma schedule: VP-cosine, linear (rectified flow), or a discrete DDPM read from a diffusers teacher
    (``ddpm``: the four fields below; docs/pretrained.md)."""
    sigma_data: float = 1.0
    """Data standard deviation used by EDM preconditioning and weights."""
    t_min: float = 1e-4
    """Smallest training time."""
    betas: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    """ddpm only: the beta schedule (diffusers' ``beta_schedule``)."""
    beta_start: float = 1e-4
    """ddpm only: first beta."""
    beta_end: float = 0.02
    """ddpm only: last beta."""
    train_timesteps: int = 1000
    """ddpm only: number of training timesteps N (timestep n sits at t = (n + 1) / N)."""
    steps_offset: int = 0
    """ddpm only: diffusers' ``steps_offset`` of the ``leading`` grid."""


@dataclass(frozen=True)
class NetCfg:
    """Backbone and its x0 parametrisation."""

    kind: Literal["mlp", "unet", "text_dit", "diffusers", "mdlm_dit"] = "mlp"
    """Backbone: residual MLP (vectors), U-Net (images), a bidirectional token transformer (text_dit), a
    diffusers model imported with ``--teacher diffusers:DIR``, or the MDLM / Duo transformer of ``--teacher
    mdlm:DIR`` / ``duo:DIR`` (their configs in ``imported``)."""
    parametrization: Literal["edm", "x0", "eps", "v", "velocity"] = "edm"
    """What the backbone predicts; the Denoiser always returns x0."""
    width: int = 256
    """MLP hidden width; text_dit model width."""
    depth: int = 3
    """MLP residual blocks; text_dit transformer blocks."""
    heads: int = 4
    """text_dit attention heads."""
    time_conditioned: bool = True
    """text_dit: adaLN time conditioning (False: a time-free denoiser, which masked samplers can cache)."""
    base: int = 32
    """U-Net channels at full resolution."""
    mults: tuple[int, ...] = (1, 2)
    """U-Net channel multiplier per resolution level."""
    blocks: int = 1
    """U-Net residual blocks per level."""
    attention: bool = True
    """U-Net self-attention at the lowest resolution."""
    dropout: float = 0.0
    """Dropout in U-Net residual blocks."""
    two_time: bool = False
    """Give the backbone a second time input s (two-time models)."""
    num_classes: int = 0
    """Class-conditional backbone with this many classes (0: unconditional; labels are then ignored)."""
    imported: str = ""
    """An imported teacher's own model config as a JSON string (kind diffusers: its diffusers config.json with
    ``_class_name``; kind mdlm_dit: the transformer's sizes), so that a run rebuilds the network without the
    teacher's folder."""


@dataclass(frozen=True)
class DiffusionCfg:
    """Gaussian diffusion teacher (denoising loss)."""

    name: Literal["diffusion"] = "diffusion"
    weighting: Literal["flat", "snr", "v", "velocity", "max_snr_1", "edm", "sigmoid"] = "edm"
    """x-space loss weight w(t)."""
    time_sampling: Literal["uniform", "logit_normal", "edm_lognormal", "uniform_logsnr"] = "uniform"
    """Distribution of training times."""
    sigmoid_bias: float = 0.0
    """b of the ``sigmoid`` weighting 0.5 sigmoid(b - lambda)(-dlambda/dt) SNR (unused by the others)."""
    label_dropout: float | None = None
    """Probability of replacing a training label by the null label ``net.num_classes`` (trains the
    unconditional branch that classifier-free guidance needs). None (auto): 0.1 for a class-conditional net,
    0 otherwise; the run's config.json holds the resolved number (a config.json without it: trained without)."""


@dataclass(frozen=True)
class IMMCfg:
    """Inductive Moment Matching, trained from scratch (docs/methods/imm.md; ``methods.imm``).

    The interpolant uses ``process.schedule`` and sigma_d = ``process.sigma_data`` (the data scale); the backbone
    gets a second time input automatically."""

    name: Literal["imm"] = "imm"
    param: Literal["simple-edm", "euler-fm", "identity"] = "simple-edm"
    """Parametrisation of f_{s,t} (euler-fm needs the flow schedule; identity needs t_min > 0)."""
    second_time: Literal["s", "stride"] = "s"
    """The backbone's second time input: the target time s or the stride t - s."""
    group_size: int = 4
    """M particles per group sharing (s, r, t); the batch must be a multiple."""
    k: int = 12
    """r(s, t) mapping: eta(r) = eta(t) - (eta_max - eta_min) / 2^k (CIFAR 15, ImageNet 12; 12 on the toys)."""
    k_end: int | None = None
    """If set, k moves linearly from ``k`` to ``k_end`` over training (a curriculum)."""
    t_min: float = 0.0
    t_max: float | None = None
    """T (None: 0.994 flow, 0.996 cosine)."""
    eta_max: float = 160.0
    eta_min: float = 0.0
    min_gap: float = 0.0
    """r <= t - min_gap unless r = s (the paper's fp16 fix; 0 = off)."""
    kernel: Literal["laplace", "rbf", "energy", "sqdist"] = "laplace"
    dim_divisor: float | None = None
    """D of the kernel exp(-w~ ||a - b|| / D) (None: elements per sample)."""
    bandwidth_floor: float = 0.0
    """w~ = 1 / max(|c_out(s, t)|, bandwidth_floor * sigma_d): widens only the kernels of short jumps (0: off)."""
    estimator: Literal["v", "u"] = "v"
    """MMD estimator: the paper's V-statistic (diagonals kept) or the unbiased U-statistic."""
    weight_a: float = 1.0
    weight_b: float = 5.0
    sampler: Literal["pushforward", "restart"] = "pushforward"
    """Default sampler of ``fewstep sample`` (restart is better at >= 4 steps on the 2-D toys, pushforward on
    digits; benchmarks/imm.md)."""
    two_step: Literal["eta", "uniform"] = "eta"
    """Middle point of the 2-step grid: eta = 1.4 (the paper) or half-way."""
    label_dropout: float | None = None
    """Probability of replacing a training label by the null label ``net.num_classes`` (for classifier-free
    guidance at sampling). None (auto): 0.1 for a class-conditional net, 0 otherwise; resolved in config.json."""


@dataclass(frozen=True)
class MDLMCfg:
    """Masked (absorbing-state) discrete diffusion teacher, MDLM (docs/methods/masked-diffusion.md)."""

    name: Literal["mdlm"] = "mdlm"
    schedule: Literal["log-linear", "cosine"] = "log-linear"
    """Keep probability alpha(t)."""
    t_min: float = 1e-3
    t_max: float = 1.0


@dataclass(frozen=True)
class UniformCfg:
    """Uniform-state discrete diffusion teacher, Duo / UDLM (docs/methods/uniform-diffusion.md)."""

    name: Literal["uniform"] = "uniform"
    schedule: Literal["log-linear", "cosine"] = "log-linear"
    t_min: float = 1e-3
    t_max: float = 1.0 - 1e-3


METHOD_CFGS: dict[str, type] = {"diffusion": DiffusionCfg, "imm": IMMCfg, "mdlm": MDLMCfg, "uniform": UniformCfg}
"""Training-method configs of ``RunConfig.method`` by their ``name``."""


@dataclass(frozen=True)
class TrainCfg:
    """Optimisation and bookkeeping."""

    total_nimg: int = 2_000_000
    """Training length in samples."""
    batch_size: int = 512
    """Global batch (split over ranks)."""
    lr: float = 1e-3
    optimizer: Literal["adamw", "adam", "radam"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_nimg: int = 50_000
    """Linear LR warm-up length in samples."""
    lr_decay: Literal["constant", "linear", "cosine"] = "cosine"
    lr_final_ratio: float = 0.05
    """Final LR / base LR for linear and cosine decay."""
    grad_clip: float = 1.0
    precision: Literal["fp32", "bf16"] = "bf16"
    """bf16 autocast on CUDA only; CPU always runs fp32."""
    ema_halflife_nimg: int = 100_000
    """EMA half-life in samples (0 disables)."""
    ckpt_every_nimg: int = 500_000
    log_every_nimg: int = 100_000
    seed: int = 0
    max_seconds: float | None = None
    """Stop (with a checkpoint) after this much training wall time."""
    device: str = "auto"
    """cpu, cuda, or auto (cuda when available)."""
    ckpt_every_seconds: float = 600.0
    """Also checkpoint after this much wall time since the last checkpoint (0: only by samples)."""
    log_every_seconds: float = 60.0
    """Also log after this much wall time since the last log line (the first after 5 s; 0: only by samples)."""
    max_nonfinite_steps: int = 20
    """Stop the run after this many steps in a row with a non-finite loss or gradient (each one is skipped)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce a training run."""

    data: DataCfg = field(default_factory=DataCfg)
    process: ProcessCfg = field(default_factory=ProcessCfg)
    net: NetCfg = field(default_factory=NetCfg)
    method: DiffusionCfg | IMMCfg | MDLMCfg | UniformCfg = field(default_factory=DiffusionCfg)
    """The training method: a Gaussian diffusion teacher, IMM, or a masked / uniform discrete teacher
    (``fewstep train --method diffusion|imm|mdlm|uniform``)."""
    train: TrainCfg = field(default_factory=TrainCfg)
    run_dir: str = "runs/default"
    """Output folder; re-running the same command resumes from its latest checkpoint."""


Weighting = Literal["flat", "snr", "v", "velocity", "max_snr_1", "edm", "sigmoid"]


@dataclass(frozen=True)
class MMCfg:
    """Moment Matching distillation (docs/methods/mm.md; ``fewstep.methods.mm.MomentMatching``)."""

    name: Literal["mm"] = "mm"
    mode: Literal["alternating", "instant"] = "alternating"
    """alternating: student + auxiliary denoiser, 1:1 phases; instant: no auxiliary, parameter-space JVP
    through the teacher (needs a parametric teacher: with the oracle, the net regressed on it)."""
    steps: int = 4
    """k: the student's number of sampling steps (one student per k)."""
    weighting: Weighting | None = None
    """Time weight w(s) (clamped at weight_max); None: the teacher's training weighting."""
    s_min: float = 0.0
    """s ~ U(s_min, 1); t = min(1, s + gap)."""
    gap: Literal["auto", "uniform", "fixed"] = "auto"
    """t - s: U(0, 1/k] (the paper) or exactly 1/k. auto (``fewstep.policy``): fixed for image data at k >= 4
    (better on digits8x8), uniform otherwise (the fixed gap hurts k <= 2 and every toy). Measured:
    benchmarks/mm.md, time gap."""
    gap_low: float = 0.0
    """Uniform gap drawn from U(gap_low / k, 1/k] instead (0: the paper's). See benchmarks/mm.md (time gap)."""
    weight_max: float = 1e4
    lambda_reg: float = 1.0
    """Teacher pull of the auxiliary loss."""
    eta: float = 1.0
    """DDIM-eta of the posterior re-noising, in training and in the student sampler (1: exact posterior)."""
    renoise: Literal["posterior", "fresh"] = "posterior"
    """z_s from the conditional posterior q(z_s | x~, z_t) or fresh noise (the ablation)."""
    guidance: float | None = None
    """Classifier-free guidance scale of the teacher (class-conditional teachers only; None: none)."""
    lr: float | None = None
    """Learning rate of the student; None (auto, ``fewstep.policy``): 0.3 x train.lr for alternating MM on vector
    data (gmm8d: a slower student tracks its auxiliary better; benchmarks/defaults.md), train.lr otherwise."""
    aux_lr: float | None = None
    """Learning rate of the auxiliary network (alternating); None: ``aux_lr_mult`` x the student's LR."""
    aux_lr_mult: float = 3.0
    """Auxiliary LR / student LR when ``aux_lr`` is None. A faster auxiliary tracks the student's conditional
    mean more closely, which lowers the bias of the student gradient (gmm8d oracle, k = 8: lower at 3x than at 1x,
    no further gain at 10x; benchmarks/mm.md, gmm8d)."""
    precond: Literal["ema", "identity"] = "ema"
    """Instant mode: diagonal preconditioner Lambda (online EMA of g_A^2, or identity)."""
    precond_beta: float = 0.999
    c: float = 1.0
    """Instant mode: step scale, nu = -c Lambda g_A. The surrogate's gradient is linear in c, so under Adam (the
    default optimiser) c cancels up to eps and clipping (digits k = 4 gave the same fd_digits at c = 0.3
    and 1; benchmarks/mm.md)."""
    jvp: Literal["forward", "double_backward", "finite_difference"] = "forward"
    """Instant mode: how J_theta T nu is computed. A diffusers teacher resolves ``forward`` to ``double_backward``
    (PyTorch has no forward-mode AD of group_norm on the non-contiguous views diffusers' blocks pass it)."""
    data_grad: Literal["running", "batch", "none"] = "running"
    """Instant mode: subtract the teacher's loss gradient on real data from the one on generated data, so that the
    student aims at E g_gen = E g_data rather than at E g_gen = 0, which only a perfect teacher satisfies:
    ``running`` (the running mean over all batches so far: E g_data does not depend on the student), ``batch``
    (this batch's, more variance) or ``none`` (the ablation that assumes it is zero)."""
    sigmoid_bias: float | None = None
    """b of the ``sigmoid`` weighting (None: the teacher's; 0 for the oracle)."""
    warm_start_steps: int | None = None
    """Teacher-ODE warm start of the student before MM (``methods.mm_warmstart``): Adam steps regressing
    G(z_t, t) onto the teacher's DDIM endpoint from z_t at the student's grid times; breaks the t = 1 saddle
    that collapses k = 1 (docs/methods/mm.md, calibration). None (auto, ``fewstep.policy``): 500 for k <= 2,
    for instant MM at k <= 4 and for alternating MM on images at k <= 4; 0 (off) otherwise. Cached in the run."""
    warm_start_teacher_steps: int = 32
    """DDIM steps of the warm-start targets."""
    warm_start_times: Literal["mixed", "grid", "uniform"] = "mixed"
    """Warm-start times: the k-step sampler's grid (1, 1 - 1/k, ...), t ~ U(0, 1] (the flow map at every t MM
    trains on), or each with probability 1/2 (mixed)."""
    warm_start_batch: int = 512
    warm_start_lr: float = 3e-4
    warm_start_pool: int = 16_384
    """(z_t, target) pairs computed once and reused (0: fresh pairs every step)."""
    oracle_regress_steps: int = 10_000
    """Oracle teacher only: Adam steps regressing the net on the oracle before distilling (cached in the run)."""
    oracle_regress_batch: int = 512
    oracle_regress_lr: float = 1e-3


@dataclass(frozen=True)
class IDLMCfg:
    """IDLM inverse distillation of a discrete teacher (docs/methods/idlm.md; ``fewstep.methods.idlm``)."""

    name: Literal["idlm"] = "idlm"
    steps: int = 16
    """Default sampling steps of the student. Training has no K: one student serves every K (the sampler
    runs with the student as denoiser); ``fewstep sample --steps`` picks any."""
    latent_dim: int | None = None
    """Latent-noise input of the student (0: a factorised student; 64: the latent-mixture generator). None (auto,
    ``fewstep.policy``): 64 for masked teachers, 0 for uniform ones."""
    latent_init_std: float | None = None
    """Initial std of the student's latent-noise map (0: zeros, a saddle the map barely leaves; nets.text_dit).
    None (auto): 0.002 for a latent masked student on sequences of >= 16 tokens, else 0."""
    latent_lr_mult: float | None = None
    """Learning-rate multiplier of the student's latent-noise map (its other weights start at the teacher).
    None (auto): 10 for a latent masked student on sequences of >= 16 tokens, else 1."""
    tau: float = 1e-3
    """Uniform process, ``uniform_estimator="relaxed"`` only: softmax temperature of the relaxed corrupted input."""
    pathwise: bool = True
    """Uniform process, ``relaxed`` only: gradients through the relaxed input (False: the stop-gradient ablation)."""
    aux_every: int = 1
    """Fake-model updates per student update (the student phase runs every n-th iteration)."""
    lr: float | None = 1e-5
    """Student LR (None: train.lr). Two time scales: the student moves 10x slower than the fake (``aux_lr_mult``)
    so that the fake keeps up; with equal LRs the student drifts (grid2d; docs/methods/idlm.md, calibration)."""
    aux_lr_mult: float = 10.0
    """Fake-model LR / student LR."""
    weight_max: float = 1e3
    """Clamp of lambda(t) (masked)."""
    t_band: tuple[float, float] | None = None
    """Range (lo, hi) of the corruption time t (None: the teacher's training range, which for the uniform process
    reaches alpha ~ 1e-3, where the NELBO weight -alpha'/(N alpha q_t) is ~1e3). Both processes and both uniform
    estimators; ``shared`` coupling clamps t = t~ into it. JSON override value: ``[0.05, 0.95]``."""
    time_coupling: Literal["independent", "shared", "nested"] = "shared"
    """Corruption time t shared with the student's input time t~ (default) or independent of it (the paper), or
    (masked only) ``nested``: the judged state is one sampler step of at most ``nested_step`` from the
    student's own input (``IDLM.corrupt_nested``; a student tuned to K <= 1 / nested_step steps).
    On grid2d with the default LRs the latent-mixture student needs ``shared``: with independent times its
    all-mask generator stays on a valid product set; at equal LRs shared drifts (benchmarks/idlm.md, IDLM
    calibration on grid2d)."""
    nested_step: float = 0.25
    """Largest t~ - s of the nested coupling (1 / K for a K-step student); unused by the other couplings."""
    uniform_estimator: Literal["relaxed", "hard"] = "hard"
    """Uniform process: hard-token corruption z ~ q_t(. | G) with Rao-Blackwellised, importance-weighted per-position
    scores (default, as ``methods.idlm.IDLM``'s; ``uniform_rb_terms``; the teacher and fake see the hard tokens they
    were trained on), or the paper's Gaussian relaxation with pathwise gradients (``relaxed``, tau = ``tau``), whose
    argmax of a soft G does not follow q_t(. | G), so the data law is not its fixed point
    (tests/test_idlm_fixed_point.py; benchmarks/defaults.md). On grid2d hard is better at 2 and 4 steps
    (benchmarks/idlm.md, IDLM calibration on grid2d)."""
    uniform_law: Literal["denoiser", "kernel"] = "denoiser"
    """Uniform process: which clean-token law of the student is judged. ``denoiser``: x ~ G (its output as is);
    ``kernel``: x ~ G~ proportional to G q_t~(z~ | .), the law the teacher's (Duo) sampler actually draws from
    when G is its denoiser (``methods.idlm.kernel_clean_law``)."""


@dataclass(frozen=True)
class DMMDCfg:
    """Discrete Moment Matching, D-MMD (docs/methods/dmmd.md; ``fewstep.methods.discrete_mmd``)."""

    name: Literal["dmmd"] = "dmmd"
    steps: int = 4
    """k: the student's number of sampling steps (time gaps t - s ~ U(0, 1/k])."""
    latent_dim: int | None = None
    """Latent-noise input of the student. None (auto, ``fewstep.policy.resolve_dmmd``): 64 (0 for an imported MDLM /
    Duo transformer, which has no latent input). A config.json that stores None (runs made before the policy
    covered D-MMD) means the old rule: 64 masked, 0 uniform."""
    latent_init_std: float | None = None
    """Initial std of the student's latent-noise map (0: zeros; see IDLMCfg). None (auto): 0.002 for a uniform
    teacher (off the saddle), 0 masked."""
    latent_lr_mult: float | None = None
    """Learning-rate multiplier of the student's latent-noise map. None (auto): 10 uniform, 1 masked."""
    weighting: Literal["auto", "elbo", "flat"] = "auto"
    """w(s): auto = lambda(s) masked, 1 uniform."""
    weight_max: float = 1e3
    teacher_moment: Literal["posterior", "denoiser"] = "posterior"
    """Uniform process: the teacher's moment is its posterior mean (its leave-one-out output reweighted by the
    current token's likelihood; the exact posterior is then the fixed point) or its output as is (``denoiser``, the
    first implementation). See ``methods.discrete_mmd``."""
    gap: Literal["uniform", "fixed"] = "uniform"
    """t - s ~ U(0, 1/k] or exactly 1/k (the gap the k-step sampler takes), as MM's ``gap``."""
    kernel: Literal["sample-x", "duo"] = "sample-x"
    """Uniform process: the sampling kernel of the student (``fewstep sample``, the bench). ``sample-x``: x ~ Cat(G)
    then the exact posterior q(z_s | z_t, x), the kernel D-MMD trains the student for; ``duo``: the teacher's
    kernel with the soft G plugged in, which counts the current token twice. Sampling only (training ignores
    it); a run whose config.json predates this field samples with ``sample-x``. Masked: both have one law."""
    lr: float | None = None
    """Student LR (None: train.lr)."""
    aux_lr_mult: float = 1.0
    """Auxiliary LR / student LR."""


DistillMethodCfg = MMCfg | IDLMCfg | DMMDCfg
"""The distillation methods (``DistillConfig.method``), by ``name``."""

DISTILL_CFGS: dict[str, type] = {"mm": MMCfg, "idlm": IDLMCfg, "dmmd": DMMDCfg}

DISTILL_TRAIN = TrainCfg(total_nimg=512_000, batch_size=512, lr=1e-4, optimizer="adam", betas=(0.0, 0.99),
                         eps=1e-12, warmup_nimg=51_200, lr_decay="linear", lr_final_ratio=0.0, grad_clip=1.0,
                         precision="fp32", ema_halflife_nimg=0, ckpt_every_nimg=256_000, log_every_nimg=51_200)
"""Distillation defaults: 1000 iterations at batch 512 (where the toy prototype had plateaued; benchmarks/mm.md),
the MM optimiser (Adam, betas (0, 0.99), eps 1e-12 = ``methods.mm.MM_OPTIM``), clip 1, lr 1e-4 with 100 warm-up
iterations then linear decay, no student EMA, fp32."""

DISCRETE_DISTILL_TRAIN = TrainCfg(total_nimg=256_000, batch_size=128, lr=1e-4, optimizer="adamw", betas=(0.9, 0.999),
                                  eps=1e-8, warmup_nimg=12_800, lr_decay="constant", lr_final_ratio=1.0,
                                  grad_clip=1.0, precision="fp32", ema_halflife_nimg=12_800,
                                  ckpt_every_nimg=64_000, log_every_nimg=12_800)
"""IDLM / D-MMD defaults at toy scale (docs/methods/idlm.md: the paper's OWT constants lr 1e-6, 2,500
warm-up iterations and EMA 0.9999 do not transfer): 2,000 iterations at batch 128, AdamW (0.9, 0.999) lr 1e-4
(~1/20 of the teacher's peak LR), 100 warm-up iterations then constant, clip 1 for the 1/t-weighted terms, a
short student EMA (half-life 100 iterations), fp32. Scale rules: lr ~ teacher lr / 20; warm-up ~ 5% and EMA
half-life ~ 5% of the run."""


@dataclass(frozen=True)
class DistillConfig:
    """Everything needed to reproduce a distillation run (``fewstep distill``)."""

    teacher: str = "oracle"
    """Teacher: a run folder written by 'fewstep train' (its EMA weights), or 'oracle' (exact gmm8d denoiser)."""
    data: DataCfg = field(default_factory=lambda: DataCfg(name="gmm8d"))
    """The teacher's data (filled in from the teacher's config.json; for the oracle from --preset)."""
    process: ProcessCfg = field(default_factory=ProcessCfg)
    """The teacher's process (as data)."""
    net: NetCfg = field(default_factory=NetCfg)
    """The teacher's net, which student and auxiliary copy; for the oracle, the net regressed on it."""
    method: MMCfg | IDLMCfg | DMMDCfg = field(default_factory=MMCfg)
    """mm (Gaussian teachers), idlm or dmmd (discrete teachers)."""
    discrete: MDLMCfg | UniformCfg | None = None
    """A discrete teacher's process (filled in from its config.json; None for Gaussian teachers)."""
    train: TrainCfg = field(default_factory=lambda: DISTILL_TRAIN)
    run_dir: str = "runs/gmm8d-oracle-mm-alternating-k4"
    """Output folder; re-running the same command resumes from its latest checkpoint."""


def to_dict(cfg: Any) -> dict:
    """A JSON-able dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def defaults_like(cfg: Any) -> dict:
    """The default value of every field of a (nested) config dataclass, as a JSON tree shaped like
    :func:`to_dict` ``(cfg)``; nested dataclasses recurse on the *actual* value (so a method union resolves to
    the run's method). Fields without a default are left out. Used to tell a field that a newer version added
    (absent from an old run's config.json, at its default now) from a real change."""
    out: dict = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = defaults_like(value)
        elif f.default is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default, default=str))
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default_factory(), default=str))
    return out


def from_dict(cls: type, d: dict) -> Any:
    """Rebuild a (nested) frozen dataclass from :func:`to_dict` output; unknown keys are an error."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in hints:
            raise ValueError(f"unknown config key {k!r} for {cls.__name__}")
        sub = _dataclass_type(cls, k)
        if cls is RunConfig and k == "method" and isinstance(v, dict):
            name = v.get("name", "diffusion")
            if name not in METHOD_CFGS:
                raise ValueError(f"unknown training method {name!r}; choose one of {sorted(METHOD_CFGS)}")
            sub = METHOD_CFGS[name]
        if cls is DistillConfig and k == "method" and isinstance(v, dict):
            name = v.get("name", "mm")
            if name not in DISTILL_CFGS:
                raise ValueError(f"unknown distillation method {name!r}; choose one of {sorted(DISTILL_CFGS)}")
            sub = DISTILL_CFGS[name]
        if cls is DistillConfig and k == "discrete" and isinstance(v, dict):
            sub = {"mdlm": MDLMCfg, "uniform": UniformCfg}[v.get("name", "mdlm")]
        if sub is not None and isinstance(v, dict):
            kwargs[k] = from_dict(sub, v)
        elif isinstance(v, list):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _dataclass_type(cls: type, name: str) -> type | None:
    default = getattr(cls(), name)
    return type(default) if dataclasses.is_dataclass(default) else None


def config_dict(path: str | Path) -> dict:
    """The raw JSON tree of a run's ``config.json`` (a file or a run folder), as saved: no defaults filled in."""
    return _read_config(path)[1]


def _read_config(path: str | Path) -> tuple[Path, dict]:
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"no config at {p}: pass a run folder written by 'fewstep train' (or "
                                "'fewstep distill') or its config.json")
    stat = p.stat()
    return p, json.loads(_read_json_text(str(p.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=64)
def _read_json_text(path: str, mtime_ns: int, size: int) -> str:
    """A config file's text, read once per (path, modification time, size): one build reads a teacher's
    config.json once however many builders ask for it."""
    return Path(path).read_text()


def load_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from ``config.json`` (a file or a run folder)."""
    p, d = _read_config(path)
    if is_distill_dict(d):
        raise ValueError(f"{p} belongs to a distillation run: reload it with 'fewstep distill --config {p}'")
    return from_dict(RunConfig, d)


def is_distill_dict(d: dict) -> bool:
    """Whether a config dict is a :class:`DistillConfig` (it names a teacher)."""
    return "teacher" in d


def load_any_config(path: str | Path) -> RunConfig | DistillConfig:
    """Read a RunConfig or a DistillConfig from ``config.json`` (a file or a run folder)."""
    _, d = _read_config(path)
    return from_dict(DistillConfig, d) if is_distill_dict(d) else from_dict(RunConfig, d)
