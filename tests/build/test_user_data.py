"""Your own data through every verb: each source trains, reloads in a fresh process without its file, samples
with the right shape and units; a mixture file gives the exact oracle teacher; bad inputs are one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fewstep
from fewstep.build.datasets import build_data, dataset_id, decode_samples, mixture, resolve_data, sample_shape
from fewstep.cli import main
from fewstep.config import DataCfg

pytestmark = pytest.mark.usefixtures("torch_single_thread")
TINY = {"total_nimg": 1024, "batch_size": 128, "warmup_nimg": 0, "ckpt_every_nimg": 1024, "log_every_nimg": 1024,
        "device": "cpu"}


def _reload(run: Path, n: int, steps: int) -> list[int]:
    """Load ``run`` in a fresh Python process (no state shared with this one) and return its samples' shape."""
    code = (f"import fewstep; m = fewstep.load({str(run)!r}); x = m.sample({n}, steps={steps}); "
            "print(list(x.shape)); print(float(x.float().mean()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[0])


def test_vectors_standardised_round_trip_without_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(400, 3)) * [1.0, 10.0, 100.0] + [5.0, -5.0, 50.0]
    np.save("v.npy", data)
    model = fewstep.train("toy2d-checkerboard", run_dir="runs/v", progress=False,
                          data={"name": "vectors", "root": "v.npy", "standardize": True}, **TINY)
    stored = json.loads(Path("runs/v/config.json").read_text())["data"]
    assert stored["shape"] == [3] and len(stored["digest"]) == 16
    assert np.allclose(stored["center"], data.mean(0)) and np.allclose(stored["scale"], data.std(0, ddof=1))
    src = build_data(resolve_data(DataCfg(name="vectors", root="v.npy", standardize=True)))
    z = src.batch(0, 400, seed=0)["x"].double()
    assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1) < 0.1  # the model sees standardised data
    back = decode_samples(model.config.data, torch.zeros(2, 3, dtype=torch.float64))
    assert torch.allclose(back, torch.tensor(data.mean(0)).expand(2, 3))  # samples come back in data units
    Path("v.npy").unlink()
    assert _reload(tmp_path / "runs/v", 7, 2) == [7, 3]


def test_images_14x14_with_labels_reload_as_14x14(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    np.savez("im.npz", x=rng.integers(0, 256, size=(40, 14, 14), dtype=np.uint8), y=rng.integers(0, 3, 40))
    fewstep.train("digits", run_dir="runs/im", data={"name": "images", "root": "im.npz"}, net={"num_classes": 3},
                  progress=False, **TINY)
    stored = json.loads(Path("runs/im/config.json").read_text())["data"]
    assert stored["shape"] == [1, 14, 14] and stored["classes"] == 3
    Path("im.npz").unlink()
    assert _reload(tmp_path / "runs/im", 4, 2) == [4, 1, 14, 14]
    np.savez("im.npz", x=rng.integers(0, 256, size=(40, 14, 14), dtype=np.uint8), y=rng.integers(0, 3, 40))
    with pytest.raises(ValueError, match="--net.num-classes must be >= 3"):
        fewstep.train("digits", run_dir="runs/im2", data={"name": "images", "root": "im.npz"},
                      net={"num_classes": 2}, progress=False, **TINY)


def test_fashion_mnist_name_refuses_other_sizes(tmp_path):
    import gzip

    for split, n in (("train", 8), ("t10k", 4)):
        with gzip.open(tmp_path / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 14, 14)) + bytes(n * 196))
        with gzip.open(tmp_path / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n))
    with pytest.raises(ValueError, match=r"1 x 28 x 28.*--data.name images"):
        build_data(DataCfg(name="fashion_mnist", root=str(tmp_path)))
    x = build_data(resolve_data(DataCfg(name="images", root=str(tmp_path / "train-images-idx3-ubyte.gz"))))
    assert x.shape == (1, 14, 14)


def test_gmm_file_is_data_and_exact_oracle(tmp_path, monkeypatch):
    """The oracle of a user's mixture matches Monte Carlo posterior means, and distills from the CLI."""
    monkeypatch.chdir(tmp_path)
    spec = {"weights": [0.3, 0.7], "means": [[-2.0, 0.0], [2.0, 1.0]], "covariances": [[0.3, 0.1], [0.2, 0.5]]}
    Path("mix.json").write_text(json.dumps(spec))
    cfg = resolve_data(DataCfg(name="gmm", root="mix.json"))
    assert cfg.shape == (2,) and sample_shape(cfg) == (2,)
    gmm = mixture(cfg)
    from fewstep.data.toys import GMMOracle
    from fewstep.schedules import CosineSchedule

    sched = CosineSchedule()
    oracle = GMMOracle(gmm, sched)
    g = torch.Generator().manual_seed(0)
    x = gmm.sample(400_000, generator=g)
    for t in (0.3, 0.6):
        o = sched(torch.tensor([t], dtype=torch.float64))
        a, s = float(o.alpha), float(o.sigma)
        z0 = torch.tensor([[0.5, 0.4]], dtype=torch.float64)
        logw = -((z0 - a * x) ** 2).sum(1) / (2 * s * s)  # importance weights p(z0 | x), x ~ the mixture
        w = torch.softmax(logw, 0)
        mc = (w[:, None] * x).sum(0)
        ess = 1 / float((w * w).sum())
        exact = oracle(z0.float(), torch.tensor([t])).double()[0]
        assert ess > 1000 and torch.allclose(exact, mc, atol=0.03), (t, exact, mc, ess)
    assert main(["distill", "--teacher", "oracle", "--method", "mm-alternating", "--steps", "2", "--quick",
                 "--data.name", "gmm", "--data.root", "mix.json", "--train.device", "cpu"]) == 0
    runs = sorted(Path("runs").iterdir())
    assert [r.name for r in runs] == ["mix-oracle-mm-alternating-k2-quick"]
    assert _reload(runs[0], 5, 2) == [5, 2]


def test_tokens_file_trains_and_reloads_without_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("t.npy", np.random.default_rng(2).integers(0, 7, size=4000).astype(np.int32))
    fewstep.train("hmm-mdlm", run_dir="runs/t", data={"name": "tokens", "root": "t.npy", "length": 8},
                  progress=False, **(TINY | {"batch_size": 64, "total_nimg": 256, "ckpt_every_nimg": 256}))
    stored = json.loads(Path("runs/t/config.json").read_text())["data"]
    assert stored["vocab"] == 7 and stored["shape"] == [8]
    assert dataset_id(DataCfg(name="tokens", root="t.npy", length=8)) == "tokens-t-l8"
    Path("t.npy").unlink()
    assert _reload(tmp_path / "runs/t", 3, 4) == [3, 8]


def test_changed_data_is_refused_and_hmm_seed_is_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("v.npy", np.random.default_rng(0).normal(size=(100, 2)))
    cfg = resolve_data(DataCfg(name="vectors", root="v.npy"))
    np.save("v.npy", np.random.default_rng(1).normal(size=(100, 2)))
    with pytest.raises(ValueError, match="changed since the run was made") as e:
        build_data(cfg)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="needs --data.root PATH"):
        resolve_data(DataCfg(name="vectors"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data(DataCfg(name="gmm", root="nope.json"))
    a, b = DataCfg(name="text-hmm"), DataCfg(name="text-hmm", seed=3)
    assert dataset_id(a) == "hmm-v32-l64" and dataset_id(b) == "hmm-v32-l64-s3"
    xa = build_data(a).batch(0, 64, seed=0)["x"]
    xb = build_data(b).batch(0, 64, seed=0)["x"]
    assert not torch.equal(xa, xb)  # another source, not another draw of the same one
    assert math.isfinite(float(xa.float().mean()))


def test_eval_scores_any_data_and_writes_valid_json(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(3)
    np.save("v.npy", rng.normal(size=(3000, 2)))
    spec = {"weights": [0.5, 0.5], "means": [[-3.0, 0.0], [3.0, 0.0]], "covariances": [0.25, 0.25]}
    Path("mix.json").write_text(json.dumps(spec))

    def run_eval(*args: str) -> dict:
        assert main(["eval", *args]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    good = torch.from_numpy(rng.normal(size=(1000, 2)))
    save_file({"x": good.float()}, "good.safetensors")
    save_file({"x": (good * 3 + 5).float()}, "bad.safetensors")
    near = run_eval("--samples", "good.safetensors", "--data.name", "vectors", "--data.root", "v.npy")
    far = run_eval("--samples", "bad.safetensors", "--data.name", "vectors", "--data.root", "v.npy")
    assert near["energy"] < 0.02 < far["energy"] and near["mean_error"] < 0.2 < far["mean_error"]
    gmm = mixture(resolve_data(DataCfg(name="gmm", root="mix.json")))
    exact = gmm.sample(2000, generator=torch.Generator().manual_seed(0))
    save_file({"x": exact.float()}, "gmm.safetensors")
    save_file({"x": exact[exact[:, 0] > 0].float()}, "onemode.safetensors")  # drops a mode
    both = run_eval("--samples", "gmm.safetensors", "--data.name", "gmm", "--data.root", "mix.json")
    one = run_eval("--samples", "onemode.safetensors", "--data.name", "gmm", "--data.root", "mix.json")
    assert both["mode_weights_tv"] < 0.05 and abs(one["mode_weights_tv"] - 0.5) < 0.05
    assert abs(both["log_density"] - both["data_log_density"]) < 0.1
    save_file({"x": torch.full((10, 2), float("nan"))}, "nan.safetensors")
    out = run_eval("--samples", "nan.safetensors", "--data.name", "vectors", "--data.root", "v.npy")
    assert out["energy"] is None and "energy" in out["nonfinite"]
    np.save("t.npy", rng.integers(0, 5, size=2000))
    save_file({"x": torch.from_numpy(rng.integers(0, 5, size=(100, 8)))}, "tok.safetensors")
    tok = run_eval("--samples", "tok.safetensors", "--data.name", "tokens", "--data.root", "t.npy",
                   "--data.length", "8", "--evaluator-steps", "0")
    assert 0 <= tok["bigram_tv"] < 0.5 and tok["entropy"] > 1.0 and "genppl" not in tok
    with pytest.raises(SystemExit, match="error: samples have shape"):
        main(["eval", "--samples", "tok.safetensors", "--data.name", "gmm", "--data.root", "mix.json"])


def test_eval_of_labelled_images_separates_data_from_noise(tmp_path, monkeypatch, capsys):
    """fd_classifier: the library's classifier trained on half of the user's labelled images; real held-out
    images score far closer than noise or one class only."""
    from safetensors.torch import save_file

    from fewstep.data.images import load_digits8x8

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path / "cache"))
    x, y = load_digits8x8("all")
    u8 = ((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    np.savez("d.npz", x=u8, y=y.numpy())

    def run_eval(samples: torch.Tensor) -> dict:
        save_file({"x": samples.float().contiguous()}, "s.safetensors")
        assert main(["eval", "--samples", "s.safetensors", "--data.name", "images", "--data.root", "d.npz"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    real = run_eval(x[:400])
    noise = run_eval(torch.rand(400, 1, 8, 8) * 2 - 1)
    ones = run_eval(x[y == 1][:150])
    assert real["fd_classifier"] < 0.2 * noise["fd_classifier"] and real["fd_classifier"] < ones["fd_classifier"]
    assert real["class_entropy"] > ones["class_entropy"] + 1.0  # ten classes vs one
    assert real["dataset"] == "images:d.npz"
    assert real["features"] == "classifier"
    np.savez("nolabels.npz", x=u8)
    save_file({"x": x[:10].float().contiguous()}, "s.safetensors")
    with pytest.raises(SystemExit, match="have no labels: the classifier"):
        main(["eval", "--samples", "s.safetensors", "--data.name", "images", "--data.root", "nolabels.npz",
              "--features", "classifier"])
    with pytest.raises(SystemExit, match="no labels and no Inception file"):
        main(["eval", "--samples", "s.safetensors", "--data.name", "images", "--data.root", "nolabels.npz",
              "--inception", "absent.pt"])


class _PooledFeatures(torch.nn.Module):
    """A TorchScript stand-in for TF-Inception: [B, 3, 299, 299] -> [B, 64] average-pooled pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x[:, :1], 8).flatten(1)


def test_eval_of_unlabelled_images_uses_inception_features(tmp_path, monkeypatch, capsys):
    """Unlabelled images are scored in the Inception file's features (here a TorchScript stand-in of the same
    interface, so the route runs without the 87 MB file), named "features": "inception"; held-out real images
    score far closer than noise."""
    import warnings

    from safetensors.torch import save_file

    from fewstep.data.images import load_digits8x8

    monkeypatch.chdir(tmp_path)
    x, _ = load_digits8x8("all")
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path / "cache"))
    np.savez("u.npz", x=((x[:400, 0] + 1) * 127.5).round().to(torch.uint8).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_PooledFeatures()), "features.pt")

    def run_eval(samples: torch.Tensor) -> dict:
        save_file({"x": samples.float().contiguous()}, "s.safetensors")
        assert main(["eval", "--samples", "s.safetensors", "--data.name", "images", "--data.root", "u.npz",
                     "--inception", "features.pt"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    real, noise = run_eval(x[1000:1200]), run_eval(torch.rand(200, 1, 8, 8) * 2 - 1)
    assert real["features"] == noise["features"] == "inception"
    assert real["fd_inception"] < 0.1 * noise["fd_inception"]
    assert len(list((tmp_path / "cache").glob("inception-reference-*.safetensors"))) == 1  # computed once


def test_eval_of_token_files_has_genppl_under_an_evaluator_trained_on_them(tmp_path, monkeypatch, capsys):
    """GenPPL: a causal evaluator trained once on the user's token stream (cached under its hash) finds samples
    that follow the data's pattern far more likely than uniform tokens."""
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEWSTEP_CACHE", str(tmp_path / "cache"))
    np.save("t.npy", np.tile(np.arange(5), 600))  # 0 1 2 3 4 0 1 ...
    starts = torch.randint(0, 5, (64, 1), generator=torch.Generator().manual_seed(0))
    pattern = (starts + torch.arange(8)) % 5
    uniform = torch.randint(0, 5, (64, 8), generator=torch.Generator().manual_seed(1))

    def genppl(x: torch.Tensor) -> float:
        save_file({"x": x.contiguous()}, "s.safetensors")
        assert main(["eval", "--samples", "s.safetensors", "--data.name", "tokens", "--data.root", "t.npy",
                     "--data.length", "8", "--evaluator-steps", "150"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["genppl"]

    good, bad = genppl(pattern), genppl(uniform)
    assert good < 1.5 < 3.0 < bad  # near-deterministic continuation vs about 5 equally likely tokens
    assert len(list((tmp_path / "cache").glob("token-evaluator-*.safetensors"))) == 1
