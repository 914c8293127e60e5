"""The dataset registry (``fewstep.build.datasets``): entries, dispatch, config resolution and extension."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fewstep.build import datasets as ds
from fewstep.config import DataCfg
from fewstep.data.source import SamplerSource
from fewstep.policy import mm_gap


def test_builtin_entries_and_kinds():
    assert ds.dataset_names("vectors") == ("gmm8d", "checkerboard2d", "spiral2d", "vectors", "gmm")
    assert ds.dataset_names("images") == ("digits8x8", "mnist", "mnist14", "fashion_mnist", "images")
    assert ds.dataset_names("tokens") == ("text-hmm", "grid2d", "text-char", "text-bpe", "tokens")
    for name in ds.dataset_names():
        assert ds.get_dataset(name).name == name


def test_unknown_dataset_is_a_one_line_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; known: gmm8d, .*text-bpe") as e:
        ds.get_dataset("cifar")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown dataset"):
        ds.build_data(DataCfg(name="cifar"))  # type: ignore[arg-type]


def test_shapes_and_resolution():
    assert ds.data_shape("gmm8d") == (8,) and ds.data_shape("mnist") == (1, 28, 28)
    assert ds.sample_shape(DataCfg(name="text-hmm", length=17)) == (17,)
    assert ds.sample_shape(DataCfg(name="grid2d", length=64)) == (2,)
    grid = ds.resolve_data(DataCfg(name="grid2d", length=64, vocab=5))
    assert (grid.length, grid.vocab) == (2, ds.GRID_BINS)
    assert ds.resolve_data(DataCfg(name="text-bpe")).vocab == 50257
    cb = DataCfg(name="checkerboard2d")
    assert ds.resolve_data(cb) is cb


def test_sources_are_seeded_and_shaped():
    src = ds.build_data(DataCfg(name="gmm8d"))
    a, b = src.batch(3, 16, seed=5)["x"], src.batch(3, 16, seed=5)["x"]
    assert a.shape == (16, 8) and torch.equal(a, b)
    tokens = ds.build_data(DataCfg(name="grid2d"))
    x = tokens.batch(0, 32, seed=0)["x"]
    assert x.shape == (32, 2) and x.dtype == torch.int64 and int(x.max()) < ds.GRID_BINS


def test_dataset_ids():
    assert ds.dataset_id(DataCfg(name="text-hmm")) == "hmm-v32-l64"
    assert ds.dataset_id(DataCfg(name="text-hmm", states=4, concentration=0.5)) == "hmm-v32-l64-h4-c0.5"
    assert ds.dataset_id(DataCfg(name="grid2d", grid="rings")) == "grid2d-rings"
    assert ds.dataset_id(DataCfg(name="text-char", length=128)) == "tinyshakespeare-l128"


def test_a_registered_dataset_flows_through_builders_and_policy():
    name = "ring8d-test"
    entry = ds.Dataset(name, "images", lambda cfg: SamplerSource(
        lambda n, generator: torch.randn(n, 1, 2, 4, generator=generator), (1, 2, 4), name=name),
        lambda cfg: (1, 2, 4))
    ds.register_dataset(entry)
    try:
        with pytest.raises(ValueError, match="already registered"):
            ds.register_dataset(entry)
        cfg = DataCfg(name=name)  # type: ignore[arg-type]
        assert ds.build_data(cfg).batch(0, 4, seed=0)["x"].shape == (4, 1, 2, 4)
        assert ds.sample_shape(cfg) == (1, 2, 4) and ds.data_kind(cfg) == "images"
        assert mm_gap("alternating", 8, ds.data_kind(cfg)) == "fixed"  # the policy reads the registry's kind
        ds.register_dataset(replace(entry, kind="vectors"), overwrite=True)
        assert ds.data_kind(cfg) == "vectors"
    finally:
        ds.DATASETS.pop(name, None)
    assert name not in ds.dataset_names()
