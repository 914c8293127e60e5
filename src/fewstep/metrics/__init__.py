"""Evaluation metrics: toy-suite distances and support checks, Fréchet distances and evaluation classifiers.

Heavy optional dependencies (scikit-learn, safetensors, the Inception file) are only touched when used.
"""

from fewstep.metrics.classifier import (
    Classifier,
    class_entropy,
    confidence,
    digits_classifier,
    lenet_classifier,
)
from fewstep.metrics.fid import (
    FeatureExtractor,
    InceptionExtractor,
    find_inception,
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
)
from fewstep.metrics.toys import (
    chi2_quantile,
    energy_distance,
    gmm_inside,
    mean_and_stderr,
    mode_coverage,
    mode_weights_tv,
    precision,
)

__all__ = [
    "Classifier",
    "FeatureExtractor",
    "InceptionExtractor",
    "chi2_quantile",
    "class_entropy",
    "confidence",
    "digits_classifier",
    "energy_distance",
    "find_inception",
    "frechet_distance",
    "frechet_from_stats",
    "gaussian_stats",
    "gmm_inside",
    "lenet_classifier",
    "mean_and_stderr",
    "mode_coverage",
    "mode_weights_tv",
    "precision",
]
