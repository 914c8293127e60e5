"""Figures: sample grids / scatter plots and quality-vs-NFE curves (matplotlib, Agg backend, lazy import)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _projection(x: Tensor) -> Tensor:
    """2-D view: identity for 2-D data, the top-2 principal axes of the fixed gmm8d means otherwise."""
    if x.shape[1] == 2:
        return x
    from fewstep.data.toys import make_gmm8d

    means = make_gmm8d().means
    if x.shape[1] == means.shape[1]:
        _, _, vt = torch.linalg.svd(means - means.mean(0), full_matrices=False)
        return x @ vt[:2].T
    _, _, vt = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return x @ vt[:2].T


def save_samples(x: Tensor, path: Path, *, title: str = "", max_points: int = 4096) -> Path:
    """Scatter plot (vectors [n, d]) or image grid (images [n, C, H, W] in [-1, 1]) saved as PNG."""
    plt = _plt()
    x = x.detach().double().cpu()
    if x.ndim == 4:  # one tiled image in one axes (64 axes cost ~1 s per figure)
        n = min(64, x.shape[0])
        cols = 8
        rows = (n + cols - 1) // cols
        c, h, w = x.shape[1:]
        tiles = torch.ones(rows * cols, c, h + 2, w + 2, dtype=x.dtype)  # white 1-pixel borders
        tiles[:n, :, 1:-1, 1:-1] = ((x[:n] + 1) / 2).clamp(0, 1)
        grid = tiles.reshape(rows, cols, c, h + 2, w + 2).permute(0, 3, 1, 4, 2).reshape(rows * (h + 2),
                                                                                      cols * (w + 2), c)
        fig, ax = plt.subplots(figsize=(cols, rows))
        ax.imshow((grid[..., 0] if c == 1 else grid).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.axis("off")
    else:
        p = _projection(x.reshape(x.shape[0], -1)[:max_points]).numpy()
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
        ax.set_aspect("equal")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def quality_vs_nfe(rows: list[dict], metric: str, path: Path, *, title: str = "") -> Path:
    """Primary metric vs NFE (log x) for every (method, sampler); the data floor as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    rs = [r for r in rows if r["metric"] == metric]
    def key_of(r: dict) -> tuple:
        proc = r.get("process")
        return r["method"], r["sampler"], r.get("teacher"), proc if proc in ("masked", "uniform") else None

    for key in dict.fromkeys(key_of(r) for r in rs if r["method"] != "data"):
        pts = sorted((r["nfe"], r["value"], r.get("stderr") or 0.0) for r in rs if key_of(r) == key)
        label = "/".join(str(k) for k in key if k)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", ms=3,
                    capsize=2, label=label)
    floor = [r for r in rs if r["method"] == "data"]
    if floor:
        ax.axhline(floor[0]["value"], color="k", ls="--", lw=1, label="data (noise floor)")
    ax.set_xscale("log", base=2)
    vals = [r["value"] for r in rs]
    if vals and min(vals) > 0 and rs[0]["lower_is_better"]:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("NFE")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
