"""Pretrained teachers from other libraries: a diffusers folder as a fewstep teacher run (``diffusers:DIR``).

``diffusers_run_config(DIR)`` reads the model's ``config.json`` and its scheduler config into the ``RunConfig``
a fewstep teacher of the same function would have: process ``ddpm`` with the scheduler's betas (``DDPMSchedule``),
net kind ``diffusers`` carrying the model config (so a student rebuilds without the teacher folder), and image data
of the model's shape. ``load_diffusers_teacher`` adds the weights (safetensors only, local files only).
``build.export`` writes a student back as a diffusers folder.

Accepted layouts of DIR: a model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``) with
``scheduler_config.json`` beside it or in ``DIR/scheduler``; or a pipeline folder (``model_index.json``) with the
model in ``unet/`` or ``transformer/`` and ``scheduler/scheduler_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewstep.config import DataCfg, DiffusionCfg, NetCfg, ProcessCfg, RunConfig

PREFIX = "diffusers:"
"""``--teacher diffusers:DIR``: a diffusers folder instead of a fewstep run."""

MODEL_FILE = "diffusion_pytorch_model.safetensors"
SCHEDULER_FILE = "scheduler_config.json"


def is_diffusers(teacher: str | Path) -> bool:
    """Whether a teacher / run argument names a diffusers folder (``diffusers:DIR``)."""
    return str(teacher).startswith(PREFIX)


def diffusers_dir(teacher: str | Path) -> Path:
    """The folder of ``diffusers:DIR``."""
    return Path(str(teacher)[len(PREFIX):] if is_diffusers(teacher) else teacher)


def find_parts(folder: str | Path) -> tuple[Path, Path]:
    """(model folder, scheduler config file) of a diffusers folder in one of the accepted layouts.

    Raises:
        FileNotFoundError: one line saying what is missing and what the folder should hold.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"no diffusers folder at {root}: pass a local save_pretrained folder (nothing is "
                                "downloaded; fetch a Hub model once with huggingface-cli download)")
    model = root
    if not (root / "config.json").is_file():
        model = next((root / sub for sub in ("unet", "transformer") if (root / sub / "config.json").is_file()), root)
    if not (model / "config.json").is_file():
        raise FileNotFoundError(f"{root} holds no diffusers model: expected config.json (a model folder) or "
                                "unet/ or transformer/ (a pipeline folder)")
    if not (model / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{model} has no {MODEL_FILE}: save the model with save_pretrained(..., "
                                "safe_serialization=True) (pickled .bin weights are not loaded)")
    for cand in (root / SCHEDULER_FILE, root / "scheduler" / SCHEDULER_FILE, model / SCHEDULER_FILE):
        if cand.is_file():
            return model, cand
    raise FileNotFoundError(f"{root} has no {SCHEDULER_FILE} (beside the model or in scheduler/): the teacher's "
                            "noise schedule comes from it (scheduler.save_pretrained(DIR))")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def process_from_scheduler(sched: dict[str, Any], path: Path | str = "scheduler_config.json") -> tuple[ProcessCfg, str]:
    """(ProcessCfg, parametrisation) of a diffusers scheduler config (DDPM / DDIM / any scheduler with
    ``beta_schedule``): one-line errors for what has no exact continuous-time counterpart here."""
    from fewstep.denoisers.diffusers import PREDICTIONS
    from fewstep.schedules import DDPM_BETAS

    if sched.get("trained_betas") is not None:
        raise ValueError(f"{path}: explicit trained_betas are not supported (use a named beta_schedule)")
    if sched.get("rescale_betas_zero_snr"):
        raise ValueError(f"{path}: rescale_betas_zero_snr (alpha-bar = 0 at the last timestep) is not supported")
    betas = sched.get("beta_schedule", "linear")
    if betas not in DDPM_BETAS:
        raise ValueError(f"{path}: beta_schedule {betas!r} is not supported; supported: {', '.join(DDPM_BETAS)}")
    pred = sched.get("prediction_type", "epsilon")
    if pred not in PREDICTIONS:
        raise ValueError(f"{path}: prediction_type {pred!r} is not supported; supported: {', '.join(PREDICTIONS)}")
    n = int(sched.get("num_train_timesteps", 1000))
    proc = ProcessCfg(schedule="ddpm", sigma_data=1.0, t_min=1.0 / n, betas=betas,
                      beta_start=float(sched.get("beta_start", 1e-4)), beta_end=float(sched.get("beta_end", 0.02)),
                      train_timesteps=n, steps_offset=int(sched.get("steps_offset", 0)))
    return proc, PREDICTIONS[pred]


def model_config(model_dir: Path) -> dict[str, Any]:
    """The model's config.json without diffusers' bookkeeping keys (version, source path): its identity."""
    from fewstep.denoisers.diffusers import check_model_config

    raw = _read_json(model_dir / "config.json")
    cfg = {k: v for k, v in raw.items() if not k.startswith("_") or k == "_class_name"}
    try:
        check_model_config(cfg)
    except ValueError as e:
        raise ValueError(f"{model_dir / 'config.json'}: {e}") from None
    return cfg


def diffusers_run_config(teacher: str | Path) -> RunConfig:
    """The teacher ``RunConfig`` of a diffusers folder (``diffusers:DIR`` or DIR).

    data: ``images`` of the model's shape without a file (a diffusers folder does not say what it was trained on;
    distilling needs ``--data.*``); method: a diffusion teacher trained without label dropout (the null label of a
    class-conditional model is unknown, so guidance is refused)."""
    from fewstep.denoisers.diffusers import model_classes, model_shape

    model_dir, sched_path = find_parts(diffusers_dir(teacher))
    mcfg = model_config(model_dir)
    process, param = process_from_scheduler(_read_json(sched_path), sched_path)
    classes = model_classes(mcfg)
    net = NetCfg(kind="diffusers", parametrization=param, num_classes=classes,
                 imported=json.dumps(mcfg, sort_keys=True))
    data = DataCfg(name="images", shape=model_shape(mcfg), classes=classes)
    return RunConfig(data=data, process=process, net=net, method=DiffusionCfg(label_dropout=0.0),
                     run_dir=str(diffusers_dir(teacher)))


def load_diffusers_teacher(teacher: str | Path, *, device: str = "cpu"):
    """(RunConfig, GaussianDiffusion, {"model": DiffusersDenoiser}) of a diffusers folder: the same triple as
    ``build.runs.load_trained`` of a fewstep teacher run, weights from the folder's safetensors, eval mode."""
    from fewstep.build.models import build_diffusion

    cfg = diffusers_run_config(teacher)
    model_dir, _ = find_parts(diffusers_dir(teacher))
    method = build_diffusion(cfg, tuple(cfg.data.shape))
    denoiser = method.trainable()["model"]
    from safetensors.torch import load_file

    state = load_file(str(model_dir / MODEL_FILE))
    missing, unexpected = denoiser.net.load_state_dict(state, strict=False)
    if missing or unexpected:
        first = (missing or unexpected)[0]
        what = "missing from" if missing else "unexpected in"
        raise ValueError(f"{model_dir / MODEL_FILE}: tensor {first!r} is {what} the weights for the model its "
                         f"config.json describes ({len(missing)} missing, {len(unexpected)} unexpected)")
    return cfg, method, {"model": denoiser.to(device).eval().requires_grad_(False)}


# ------------------------------------------------------------------------------------------ MDLM / Duo
TOKEN_PREFIXES = {"mdlm:": "mdlm", "duo:": "uniform"}
"""``--teacher mdlm:DIR`` (masked) / ``duo:DIR`` (uniform-state): MDLM / Duo transformer checkpoints."""
TOKEN_WEIGHTS = "model.safetensors"


def token_kind(teacher: str | Path) -> str | None:
    """``mdlm`` / ``uniform`` for ``mdlm:DIR`` / ``duo:DIR``, else None."""
    return next((kind for p, kind in TOKEN_PREFIXES.items() if str(teacher).startswith(p)), None)


def is_imported(teacher: str | Path) -> bool:
    """Whether a teacher argument names another library's folder (``diffusers:``, ``mdlm:``, ``duo:``)."""
    return is_diffusers(teacher) or token_kind(teacher) is not None


def imported_dir(teacher: str | Path) -> Path:
    """The folder of an imported teacher argument (the argument itself when it has no prefix)."""
    for p in (PREFIX, *TOKEN_PREFIXES):
        if str(teacher).startswith(p):
            return Path(str(teacher)[len(p):])
    return Path(teacher)


def canonical_teacher(teacher: str | Path) -> str:
    """One spelling per teacher folder (a re-run must compare equal): ``PREFIX:`` + the normalised path for an
    imported folder, the normalised path for a fewstep run."""
    prefix = next((p for p in (PREFIX, *TOKEN_PREFIXES) if str(teacher).startswith(p)), "")
    return prefix + str(imported_dir(teacher))


def transformer_sizes(config: dict[str, Any], kind: str, path: Path | str = "config.json") -> dict[str, Any]:
    """The transformer sizes (``nets.mdlm_dit.CONFIG_KEYS``) of an MDLM / Duo config.json, in either public layout:
    MDLM's Hugging Face config (``hidden_dim``, ``n_heads``, ``n_blocks``, ``cond_dim``, ``vocab_size``,
    ``model_length``, ``time_conditioning``) or Duo's hub-mixin config (``{"config": {"model": {hidden_size,
    n_heads, n_blocks, cond_dim, length}, "algo": {time_conditioning}}, "vocab_size": V}``)."""
    try:
        if "config" in config and isinstance(config["config"], dict):
            model, algo = config["config"].get("model", {}), config["config"].get("algo", {})
            sizes = {"vocab_size": config["vocab_size"], "hidden_size": model["hidden_size"],
                     "n_heads": model["n_heads"], "n_blocks": model["n_blocks"], "cond_dim": model["cond_dim"],
                     "length": model["length"], "time_conditioning": algo.get("time_conditioning", kind != "mdlm")}
        else:
            sizes = {"vocab_size": config["vocab_size"], "hidden_size": config["hidden_dim"],
                     "n_heads": config["n_heads"], "n_blocks": config["n_blocks"], "cond_dim": config["cond_dim"],
                     "length": config["model_length"],
                     "time_conditioning": config.get("time_conditioning", kind != "mdlm")}
    except KeyError as e:
        raise ValueError(f"{path}: not an MDLM / Duo model config (no {e.args[0]!r})") from None
    if sizes["hidden_size"] % sizes["n_heads"]:
        raise ValueError(f"{path}: hidden size {sizes['hidden_size']} does not split into {sizes['n_heads']} heads")
    return {k: (bool(v) if k == "time_conditioning" else int(v)) for k, v in sizes.items()}


def token_run_config(teacher: str | Path) -> RunConfig:
    """The teacher ``RunConfig`` of an MDLM (``mdlm:DIR``, masked) or Duo (``duo:DIR``, uniform) folder.

    Processes: MDLM's and Duo's log-linear keep schedule alpha(t) = 1 - t (t_max 1 masked, 1 - 1e-3 uniform, as
    their code); net kind ``mdlm_dit`` with the sizes; data: ``tokens`` of the model's length and vocabulary
    (``vocab_size - 1`` real tokens for MDLM, whose last token is the mask) without a file: distilling needs
    ``--data.*``."""
    from fewstep.config import MDLMCfg, UniformCfg

    kind = token_kind(teacher)
    if kind is None:
        raise ValueError(f"{teacher} is not an mdlm:DIR / duo:DIR teacher")
    folder = imported_dir(teacher)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no MDLM / Duo checkpoint at {folder}: expected config.json and {TOKEN_WEIGHTS} "
                                "(a local copy of the Hugging Face folder; nothing is downloaded)")
    if not (folder / TOKEN_WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} has no {TOKEN_WEIGHTS} (pickled checkpoints are not loaded)")
    sizes = transformer_sizes(_read_json(folder / "config.json"), kind, folder / "config.json")
    vocab = sizes["vocab_size"] - (1 if kind == "mdlm" else 0)
    method = MDLMCfg() if kind == "mdlm" else UniformCfg()
    net = NetCfg(kind="mdlm_dit", width=sizes["hidden_size"], depth=sizes["n_blocks"], heads=sizes["n_heads"],
                 time_conditioned=sizes["time_conditioning"], imported=json.dumps(sizes, sort_keys=True))
    # GPT-2's 50,257 tokens: text-bpe, so that samples decode to text; other vocabularies: token ids
    data = DataCfg(name="text-bpe" if vocab == 50257 else "tokens", length=sizes["length"], vocab=vocab)
    return RunConfig(data=data, net=net, method=method, run_dir=str(folder))


def token_teacher_state(teacher: str | Path) -> dict:
    """The checkpoint's tensors keyed as a fewstep token denoiser's state (``net.dit.<reference key>``; a
    ``backbone.`` prefix of MDLM's Hugging Face layout is dropped). A key or shape mismatch against the transformer
    its config describes names the first offending tensor in one line."""
    from safetensors.torch import load_file

    from fewstep.nets.mdlm_dit import MDLMTokenNet
    from fewstep.processes.categorical import get_keep_schedule

    cfg = token_run_config(teacher)
    path = imported_dir(teacher) / TOKEN_WEIGHTS
    raw = load_file(str(path))
    state = {(k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in raw.items()}
    want = MDLMTokenNet(json.loads(cfg.net.imported), get_keep_schedule("log-linear")).dit.state_dict()
    for key in sorted(want.keys() | state.keys()):
        if key not in state:
            raise ValueError(f"{path}: tensor {key!r} is missing (the config describes it)")
        if key not in want:
            raise ValueError(f"{path}: tensor {key!r} is unexpected for the transformer its config describes")
        if tuple(state[key].shape) != tuple(want[key].shape):
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(state[key].shape)}, the config implies "
                             f"{tuple(want[key].shape)}")
    return {f"net.dit.{k}": v for k, v in state.items()}


def load_token_teacher(teacher: str | Path, *, device: str = "cpu"):
    """(RunConfig, DiscreteDiffusion, {"model": CategoricalDenoiser}) of an MDLM / Duo folder, eval mode: the same
    triple as ``build.runs.load_trained`` of a fewstep discrete teacher."""
    from fewstep.build.models import build_token_denoiser
    from fewstep.methods.discrete_diffusion import DiscreteDiffusion

    cfg = token_run_config(teacher)
    method = DiscreteDiffusion(build_token_denoiser(cfg), length=cfg.data.length)  # no data file needed
    denoiser = method.trainable()["model"]
    denoiser.load_state_dict(token_teacher_state(teacher))
    return cfg, method, {"model": denoiser.to(device).eval().requires_grad_(False)}


def save_token_teacher(net, folder: str | Path, *, kind: str) -> Path:
    """Write an :class:`~fewstep.nets.mdlm_dit.MDLMTokenNet` (or a denoiser around one) in MDLM's Hugging Face
    layout (``config.json`` with ``hidden_dim``... and ``model.safetensors`` with ``backbone.`` keys), which
    ``mdlm:DIR`` / ``duo:DIR`` load back."""
    from safetensors.torch import save_file

    token_net = getattr(net, "net", net)
    dit = token_net.dit
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blocks = dit.blocks
    config = {"model_type": "mdlm" if kind == "mdlm" else "duo", "vocab_size": dit.vocab,
              "hidden_dim": dit.vocab_embed.embedding.shape[1], "n_heads": blocks[0].heads, "n_blocks": len(blocks),
              "cond_dim": dit.sigma_map.mlp[0].out_features, "model_length": token_net.length,
              "time_conditioning": token_net.time_conditioned, "dropout": blocks[0].dropout}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file({f"backbone.{k}": v.detach().cpu().contiguous() for k, v in dit.state_dict().items()},
              str(folder / TOKEN_WEIGHTS))
    return folder
