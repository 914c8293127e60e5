"""Damaged checkpoints: verified against the manifest written at save time; resume falls back to the newest
intact checkpoint with a warning and ends with the same weights as a run that was never damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _runs import same, trainer, weights

from fewstep.train import DamagedCheckpointWarning
from fewstep.train.checkpoint import checkpoint_dirs, find_weights, latest_dir, verify_checkpoint


def _damage(ckpt: Path, how: str) -> None:
    f = ckpt / ("train_state.pt" if how == "state" else "model.safetensors")
    data = bytearray(f.read_bytes())
    if how == "truncate":
        f.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "bitflip":
        data[len(data) - 7] ^= 0x10  # inside the tensor bytes: the file still parses
        f.write_bytes(bytes(data))
    elif how == "state":
        f.write_bytes(bytes(data[:100]))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncate", "bitflip", "state"])
def test_fallback_to_the_newest_intact_checkpoint_gives_the_same_final_weights(tmp_path: Path, how: str) -> None:
    t = trainer(tmp_path / "run", 12)
    t.fit()
    final = weights(t)
    newest = latest_dir(tmp_path / "run")
    assert newest.name == "nimg_000000192" and verify_checkpoint(newest) is None
    _damage(newest, how)
    assert verify_checkpoint(newest) is not None
    with pytest.warns(DamagedCheckpointWarning, match="nimg_000000192"):
        again = trainer(tmp_path / "run", 12)
        summary = again.fit()  # falls back to nimg 128 and trains the last 4 steps again
    assert summary["resumed"] and same(weights(again), final)
    assert (tmp_path / "run" / "checkpoints" / "damaged_nimg_000000192").is_dir()  # kept aside, not deleted
    assert verify_checkpoint(latest_dir(tmp_path / "run")) is None


def test_sampling_uses_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    trainer(tmp_path / "run", 8).fit()
    _damage(latest_dir(tmp_path / "run"), "bitflip")
    with pytest.warns(DamagedCheckpointWarning):
        path = find_weights(tmp_path / "run", "model", ema=True)
    assert path.parent.name == "nimg_000000064"


def test_no_intact_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    trainer(tmp_path / "run", 8).fit()
    for d in checkpoint_dirs(tmp_path / "run"):
        _damage(d, "truncate")
    with pytest.raises(ValueError, match="no intact checkpoint .*nimg_000000128: model.safetensors has") as e:
        trainer(tmp_path / "run", 8).fit()
    assert "\n" not in str(e.value)


def test_manifest_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    trainer(tmp_path / "run", 4).fit()
    manifest = json.loads((latest_dir(tmp_path / "run") / "manifest.json").read_text())
    assert sorted(manifest) == ["model.ema.safetensors", "model.safetensors", "train_state.pt"]
    assert all(len(v["sha256"]) == 64 and v["bytes"] > 0 for v in manifest.values())
