"""Checkpoint files: safetensors round trips, atomic saves, the latest pointer, pruning, find_weights."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from fewstep.train import checkpoint as ck
from fewstep.train.checkpoint import (
    checkpoint_dirs,
    find_weights,
    latest_dir,
    load_latest,
    load_weights,
    save_checkpoint,
    save_weights,
    unwrap_module,
    unwrap_state_dict,
)


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(4, 3, generator=g),
        "half": torch.randn(5, generator=g).to(torch.bfloat16),
        "f16": torch.randn(2, 2, generator=g).half(),
        "count": torch.arange(3),
        "flag": torch.tensor([True, False]),
        "view": torch.randn(6, 6, generator=g)[:, ::2],  # non-contiguous
    }


def _save(run_dir: Path, nimg: int, seed: int = 0, **kw: object) -> Path:
    sd = _state(seed)
    opt = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
           "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0], "foreach": None}]}
    state = {"nimg": nimg, "train_seconds": 1.5, "optimizers": {"model": opt}}
    return save_checkpoint(run_dir, nimg, {"model": sd}, {"model": sd}, state, {"lr": 1e-3}, **kw)


def test_save_load_weights_bit_equal_with_metadata(tmp_path: Path) -> None:
    sd = _state()
    path = save_weights(tmp_path / "w.safetensors", sd, {"role": "model", "config": '{"a": 1}', "n": 3})
    loaded, meta = load_weights(path)
    assert loaded.keys() == sd.keys()
    for k, v in sd.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    assert meta["role"] == "model" and meta["config"] == '{"a": 1}' and meta["n"] == "3"
    assert meta["fewstep"] == ck.version()
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_wrapper_prefixes_are_stripped(tmp_path: Path) -> None:
    w = torch.ones(2)
    assert unwrap_state_dict({"module.a.w": w, "module.b": w}) == {"a.w": w, "b": w}
    assert unwrap_state_dict({"_orig_mod.net.w": w}) == {"net.w": w}
    assert unwrap_state_dict({"module._orig_mod.w": w}) == {"w": w}
    assert set(unwrap_state_dict({"module.w": w, "head.w": w})) == {"module.w", "head.w"}  # a real submodule
    inner = torch.nn.Linear(1, 1)
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = inner  # what torch.compile's OptimizedModule holds
    assert unwrap_module(compiled_like) is inner and unwrap_module(inner) is inner
    save_weights(tmp_path / "m.safetensors", {"module.x": w})
    assert list(load_weights(tmp_path / "m.safetensors")[0]) == ["x"]


def test_load_weights_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found: .*nope.safetensors") as info:
        load_weights(tmp_path / "nope.safetensors")
    assert "\n" not in str(info.value)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_weights(tmp_path / "bad.safetensors")


def test_checkpoint_round_trip_without_pickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = _save(tmp_path, 1024)
    assert final.name == "nimg_000001024" and latest_dir(tmp_path) == final
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "model.ema.safetensors",
                                                        "model.safetensors", "train_state.pt"]
    real_load = torch.load
    flags = []

    def spy(*args: object, **kw: object) -> object:
        flags.append(kw.get("weights_only"))
        return real_load(*args, **kw)

    monkeypatch.setattr(torch, "load", spy)
    loaded = load_latest(tmp_path)
    assert flags == [True]
    assert loaded is not None and loaded.nimg == 1024 and loaded.path == final
    for k, v in _state().items():
        assert torch.equal(loaded.weights["model"][k], v) and torch.equal(loaded.ema["model"][k], v)
    assert loaded.metadata["model"]["role"] == "model" and loaded.metadata["model.ema"]["ema"] == "true"
    assert loaded.metadata["model"]["config"] == '{"lr": 0.001}'
    opt = loaded.train_state["optimizers"]["model"]
    assert opt["param_groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(opt["state"][0]["step"], torch.tensor(3.0))
    with pytest.raises(TypeError, match="only tensors and primitives"):
        save_checkpoint(tmp_path, 2048, {}, {}, {"module": torch.nn.Linear(1, 1)})
    with pytest.raises(pickle.UnpicklingError):  # a pickled object is refused by the weights-only reader
        torch.save({"obj": _Opaque()}, tmp_path / "evil.pt")
        real_load(tmp_path / "evil.pt", weights_only=True)


class _Opaque:
    pass


def test_load_latest_without_checkpoint(tmp_path: Path) -> None:
    assert load_latest(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("nimg_000000999\n")
    with pytest.raises(FileNotFoundError, match="missing checkpoint directory"):
        load_latest(tmp_path)


def test_keep_prunes_only_after_latest_moved(tmp_path: Path) -> None:
    for n in (1, 2, 3, 4):
        _save(tmp_path, n * 100, seed=n, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["nimg_000000300", "nimg_000000400"]
    assert load_latest(tmp_path).nimg == 400
    with pytest.raises(FileExistsError):
        _save(tmp_path, 400)


@pytest.mark.parametrize("fail_at", ["weights", "ema", "train_state", "rename", "pointer"])
def test_crash_mid_save_never_moves_latest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           fail_at: str) -> None:
    _save(tmp_path, 100)

    def boom(*args: object, **kw: object) -> None:
        raise OSError(f"injected failure at {fail_at}")

    real_save_weights, real_replace = ck.save_weights, os.replace
    if fail_at in ("weights", "ema"):
        target = "model.safetensors" if fail_at == "weights" else "model.ema.safetensors"
        monkeypatch.setattr(ck, "save_weights", lambda p, *a, **k: boom() if Path(p).name == target
                            else real_save_weights(p, *a, **k))
    elif fail_at == "train_state":
        monkeypatch.setattr(ck.torch, "save", boom)
    elif fail_at == "rename":
        monkeypatch.setattr(ck.os, "replace", lambda a, b: boom() if Path(b).name.startswith("nimg_")
                            else real_replace(a, b))
    else:
        monkeypatch.setattr(ck, "_write_text_atomic", boom)
    with pytest.raises(OSError, match="injected"):
        _save(tmp_path, 200, seed=1)
    monkeypatch.undo()
    assert latest_dir(tmp_path).name == "nimg_000000100"
    loaded = load_latest(tmp_path)
    assert loaded.nimg == 100 and torch.equal(loaded.weights["model"]["w"], _state(0)["w"])
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp_")]
    # the next save at the same position succeeds (an unreferenced complete directory is replaced)
    _save(tmp_path, 200, seed=2)
    assert torch.equal(load_latest(tmp_path).weights["model"]["w"], _state(2)["w"])


def test_stale_temp_directories_are_ignored_and_cleaned(tmp_path: Path) -> None:
    _save(tmp_path, 100)
    stale = tmp_path / "checkpoints" / ".tmp_nimg_000000200_99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert load_latest(tmp_path).nimg == 100
    _save(tmp_path, 200)
    assert not stale.exists()


def test_find_weights_resolves_runs_checkpoints_and_files(tmp_path: Path) -> None:
    final = _save(tmp_path, 100)
    ema, raw = final / "model.ema.safetensors", final / "model.safetensors"
    assert find_weights(tmp_path) == find_weights(tmp_path / "checkpoints") == find_weights(final) == ema
    assert find_weights(tmp_path, "model", ema=False) == raw
    assert find_weights(raw) == raw
    with pytest.raises(FileNotFoundError, match="role 'student'.*available: \\['model'\\]"):
        find_weights(tmp_path, "student")
    with pytest.raises(FileNotFoundError, match="no such run"):
        find_weights(tmp_path / "missing")
    save_weights(final / "aux.safetensors", _state())
    with pytest.raises(ValueError, match="several roles"):
        find_weights(final)
    assert find_weights(final, "aux") == final / "aux.safetensors"  # no EMA file: raw weights
