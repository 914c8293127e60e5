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


def tile_images(x: Tensor, *, n: int = 64, cols: int = 8) -> Tensor:
    """The first ``n`` images of x [N, C, H, W] in [-1, 1] as one grid [rows (H + 2), cols (W + 2), C] in [0, 1]
    (float64), each tile framed by a 1-pixel white border; empty cells are white."""
    n = min(n, x.shape[0])
    rows = (n + cols - 1) // cols
    c, h, w = x.shape[1:]
    tiles = torch.ones(rows * cols, c, h + 2, w + 2, dtype=torch.float64)
    tiles[:n, :, 1:-1, 1:-1] = ((x[:n].detach().double().cpu() + 1) / 2).clamp(0, 1)
    return tiles.reshape(rows, cols, c, h + 2, w + 2).permute(0, 3, 1, 4, 2).reshape(rows * (h + 2), cols * (w + 2), c)


def save_image_grid(x: Tensor, path: Path, *, title: str = "", scale: int | None = None) -> Path:
    """Images [n, C, H, W] in [-1, 1] (C = 1 or 3) as one PNG of their :func:`tile_images` grid, each pixel a
    ``scale`` x ``scale`` block (default: tiles about 80 pixels wide), with ``title`` in a white band above.

    Written with Pillow (a dependency of matplotlib): no figure machinery, so ``fewstep sample`` does not pay
    matplotlib's import (~0.4 s of a few-step student's whole process)."""
    from PIL import Image, ImageDraw

    grid = tile_images(x)
    if grid.shape[-1] not in (1, 3):
        raise ValueError(f"an image grid needs 1 or 3 channels, got {grid.shape[-1]}")
    scale = scale or max(1, 80 // (x.shape[-1] + 2))
    pix = (grid * 255).round().to(torch.uint8)
    pix = pix.repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    img = Image.fromarray(pix[..., 0] if pix.shape[-1] == 1 else pix, mode="L" if pix.shape[-1] == 1 else "RGB")
    if title:
        band = 16
        canvas = Image.new(img.mode, (img.width, img.height + band), 255 if img.mode == "L" else (255, 255, 255))
        canvas.paste(img, (0, band))
        ImageDraw.Draw(canvas).text((4, 2), title, fill=0 if img.mode == "L" else (0, 0, 0))
        img = canvas
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_samples(x: Tensor, path: Path, *, title: str = "", max_points: int = 4096) -> Path:
    """Image grid (images [n, C, H, W] in [-1, 1]: :func:`save_image_grid`) or scatter plot (vectors [n, d],
    matplotlib) saved as PNG."""
    if x.ndim == 4:
        return save_image_grid(x, path, title=title)
    plt = _plt()
    p = _projection(x.detach().double().cpu().reshape(x.shape[0], -1)[:max_points]).numpy()
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
