"""Loading trained runs: the model of a run folder, rebuilt from its config.json and weights, ready to sample.

``load_model`` returns a :class:`TrainedModel` (its ``sample`` is the one sampling path of every model);
``load_trained`` the (config, sampler-side object, nets) it wraps, for a teacher / from-scratch run or for a
distilled student (only the student is loaded).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fewstep.build.datasets import dataset_names, decode_samples, sample_shape
from fewstep.build.distill_config import student_latent_dim, with_idlm_policy
from fewstep.build.models import build_denoiser, build_method, resolve_label_dropout, token_student
from fewstep.config import DistillConfig, MMCfg, config_dict, load_any_config, to_dict
from fewstep.train.checkpoint import checkpoint_dirs, find_weights, load_weights


def load_trained(run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | None = None):
    """(config, method, nets) of a trained run: the method rebuilt from config.json, weights from the latest
    checkpoint (EMA by default), networks in eval mode on ``device``.

    ``run_dir`` may also be ``diffusers:DIR``, ``mdlm:DIR`` or ``duo:DIR``, another library's folder
    (``build.pretrained``). ``checkpoint`` names
    an older checkpoint of the run to load instead (e.g. ``"nimg_000192000"``, one of
    ``checkpoints/``; the run keeps the newest ``keep`` of them). For a distillation run: (DistillConfig,
    DistilledStudent, {"student": net}); only the student is loaded (the teacher is not needed to sample)."""
    from fewstep.build.pretrained import is_diffusers, is_imported, load_diffusers_teacher, load_token_teacher

    if is_imported(run_dir):
        if checkpoint is not None:
            raise ValueError("an imported teacher's folder has no checkpoints to choose from")
        load = load_diffusers_teacher if is_diffusers(run_dir) else load_token_teacher
        return load(run_dir, device=device)
    cfg, saved = load_any_config(run_dir), config_dict(run_dir)
    weights = Path(run_dir)
    if checkpoint is not None:
        have = [p.name for p in checkpoint_dirs(run_dir)]
        if checkpoint not in have:
            raise FileNotFoundError(f"run {run_dir} has no checkpoint {checkpoint!r} (have {have})")
        weights = weights / "checkpoints" / checkpoint
    if isinstance(cfg, DistillConfig):
        return load_distilled(weights, cfg, ema=ema, device=device, saved=saved)
    cfg = resolve_label_dropout(cfg, absent=0.0)  # saved before label dropout existed: trained without it
    method = build_method(cfg, sample_shape(cfg.data))
    nets = {}
    for role, module in method.trainable().items():
        state, meta = load_weights(find_weights(weights, role, ema=ema))
        check_stored_config(saved, meta, find_weights(weights, role, ema=ema))
        module.load_state_dict(state)
        nets[role] = module.to(device).eval().requires_grad_(False)
    return cfg, method, nets


NOT_IDENTITY = ("train", "run_dir", "teacher", "data.root")
"""Config fields that may differ between ``config.json`` and the config stored in a run's weights: training
settings, and paths (moving a run, its teacher or its data; the data's content hash stays part of the identity)."""


def check_stored_config(saved: dict, meta: dict[str, str], path: Path) -> None:
    """Refuse weights trained under another config than the run's ``config.json`` (``saved``, its raw JSON tree)
    says, e.g. an edited schedule: every field stored in the weights' metadata (``config``, written at save time)
    outside ``NOT_IDENTITY`` must equal config.json's. Fields absent on either side (newer or older versions) are
    not compared; weights without stored config (written outside a Trainer) are accepted.

    Raises:
        ValueError: one line naming the first differing field, both values and the weights file.
    """
    if not meta.get("config"):
        return
    try:
        stored = json.loads(meta["config"])
    except json.JSONDecodeError:
        raise ValueError(f"the config stored in {path} is damaged (not JSON)") from None
    for key, now, then in _differences(saved, stored, ""):
        raise ValueError(f"config.json says {key} = {json.dumps(now)} but the weights {path} were trained with "
                         f"{key} = {json.dumps(then)}: restore config.json (the weights' config is in their metadata)")


def _differences(a: dict, b: dict, prefix: str):
    for key in sorted(a.keys() & b.keys()):
        name = f"{prefix}{key}"
        if name in NOT_IDENTITY:
            continue
        if isinstance(a[key], dict) and isinstance(b[key], dict):
            yield from _differences(a[key], b[key], f"{name}.")
        elif a[key] != b[key]:
            yield name, a[key], b[key]


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
        from fewstep.samplers.student import sample_student, student_grid

        if shape is None:
            raise ValueError("generate needs the sample shape (without batch dim)")
        return sample_student(nets["student"], self.process, (n, *shape), grid=student_grid(steps),
                              generator=generator, device=device, cond=cond, eta=self.eta,
                              renoise_mode=self.renoise_mode)


class DistilledTokenStudent:
    """The sampling side of an IDLM / D-MMD student (``load_trained`` of its run): the teacher's ancestral
    sampler with the student as denoiser, at any number of steps (``k``: the step count it was trained or
    configured for).

    ``kernel``: the uniform sampling kernel used unless ``generate`` is passed a ``kernel`` option. A D-MMD run
    uses its config's ``method.kernel`` (``sample-x`` by default, the kernel D-MMD trains for; a run whose
    config.json predates the field loads at that default, i.e. ``sample-x``, not the ``duo`` it was sampled with
    before). An IDLM run uses ``duo``, the teacher's kernel. Masked process: both kernels have one law."""

    sampler = "student"

    def __init__(self, length: int, k: int, kernel: str = "duo") -> None:
        from fewstep.methods.discrete_mmd import check_kernel

        self.length, self.k, self.kernel = length, k, check_kernel(kernel)

    def generate(self, n: int, *, steps: int, nets, generator, cond=None, final: str = "ancestral",
                 device="cpu", batch_size: int | None = 512, return_stats: bool = False, **options):
        from fewstep.methods.discrete_mmd import check_kernel
        from fewstep.samplers.discrete import sample_token_student
        from fewstep.samplers.grids import uniform_grid

        kernel = options.get("kernel")
        tokens, stats = sample_token_student(nets["student"], (n, self.length), grid=uniform_grid(steps),
                                             generator=generator, device=device, final=final, batch_size=batch_size,
                                             temperature=float(options.get("temperature", 1.0)),
                                             kernel=self.kernel if kernel is None else check_kernel(kernel))
        return (tokens, stats) if return_stats else tokens


def load_distilled(run_dir: str | Path, cfg: DistillConfig, *, ema: bool, device: str, saved: dict | None = None):
    """(cfg, DistilledStudent | DistilledTokenStudent, {"student": net}) of a distillation run (``saved``: its
    config.json as saved, checked against the weights' stored config)."""
    saved = to_dict(cfg) if saved is None else saved
    if not isinstance(cfg.method, MMCfg):
        return load_discrete_distilled(run_dir, cfg, ema=ema, device=device, saved=saved)
    student = build_denoiser(cfg, sample_shape(cfg.data))
    state, meta = load_weights(find_weights(run_dir, "student", ema=ema))
    check_stored_config(saved, meta, find_weights(run_dir, "student", ema=ema))
    student.load_state_dict(state)
    m = cfg.method
    sampler = DistilledStudent(student.process, k=m.steps, eta=m.eta, renoise_mode=m.renoise)
    return cfg, sampler, {"student": student.to(device).eval().requires_grad_(False)}


def load_discrete_distilled(run_dir, cfg, *, ema: bool, device: str, saved: dict | None = None):
    """(cfg, DistilledTokenStudent, {"student": net}) of an IDLM / D-MMD run (student weights only)."""
    state, meta = load_weights(find_weights(run_dir, "student", ema=ema))
    check_stored_config(to_dict(cfg) if saved is None else saved, meta, find_weights(run_dir, "student", ema=ema))
    cfg = with_idlm_policy(cfg)
    student = token_student(cfg, student_latent_dim(cfg))
    student.load_state_dict(state)
    kernel = cfg.method.kernel if cfg.method.name == "dmmd" else "duo"
    return cfg, DistilledTokenStudent(cfg.data.length, cfg.method.steps, kernel), {
        "student": student.to(device).eval().requires_grad_(False)}


class TrainedModel:
    """A trained run ready to sample: the one sampling path of every model (``fewstep sample``, the bench and
    the Python API all call :meth:`sample`).

    Attributes:
        config: the run's resolved config (``RunConfig`` of a teacher / IMM run, ``DistillConfig`` of a student).
        sampler: the object that owns the model's sampler: the run's ``Method`` (diffusion teachers: ancestral,
            DDIM, ODE samplers; IMM: pushforward / restart) or a ``DistilledStudent`` / ``DistilledTokenStudent``
            carrying the sampler options the student was trained with (eta, re-noising, uniform kernel).
        nets: the networks the sampler needs, in eval mode on ``device``.
        shape: sample shape without the batch dimension ((length,) for token data).
    """

    def __init__(self, config, sampler, nets: dict, device: torch.device | str = "cpu") -> None:
        self.config, self.sampler, self.nets, self.device = config, sampler, nets, torch.device(device)
        self.shape = sample_shape(config.data)

    @property
    def kind(self) -> str:
        """``student`` (a distilled k-step student), ``imm`` or ``teacher`` (a many-step diffusion model)."""
        if isinstance(self.config, DistillConfig):
            return "student"
        return "imm" if self.config.method.name == "imm" else "teacher"

    @property
    def tokens(self) -> bool:
        """Whether samples are int64 token sequences (discrete data) rather than float tensors."""
        return self.config.data.name in dataset_names("tokens")

    @property
    def trained_steps(self) -> int | None:
        """The step count a student was distilled for (None for teachers and IMM)."""
        return int(self.sampler.k) if self.kind == "student" else None

    def sample(self, n: int, *, steps: int | None = None, generator: torch.Generator | None = None,
               **options: object):
        """``n`` samples in ``steps`` network evaluations (default: a student's trained k).

        Continuous data: float64 [n, *shape]; ``options``: ``sampler`` (teachers: ancestral / ddim / euler /
        heun; IMM: pushforward / restart), ``grid``, ``guidance`` and ``cond`` (labels [n]). Token data: int64
        [n, length]; ``options``: ``final`` (ancestral / greedy), ``temperature``, ``kernel`` (uniform process),
        ``batch_size``, ``return_stats`` (then ``(tokens, stats)`` with the network evaluations spent).
        """
        if steps is None:
            if self.trained_steps is None:
                raise ValueError("sample needs steps= for a teacher or IMM run")
            steps = self.trained_steps
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        if self.tokens:
            return self.sampler.generate(n, steps=int(steps), nets=self.nets, generator=generator, device=self.device,
                                         **options)
        x = self.sampler.generate(n, steps=int(steps), nets=self.nets, generator=generator, device=self.device,
                                  shape=self.shape, **options)
        return decode_samples(self.config.data, x)  # in the data's own units (e.g. a standardisation undone)


def load_model(run_dir: str | Path, *, ema: bool = True, device: str | torch.device = "cpu",
               checkpoint: str | None = None) -> TrainedModel:
    """The trained model of a run folder (any method), ready to :meth:`TrainedModel.sample`."""
    cfg, sampler, nets = load_trained(run_dir, ema=ema, device=str(device), checkpoint=checkpoint)
    return TrainedModel(cfg, sampler, nets, device)
