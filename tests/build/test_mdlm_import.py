"""MDLM / Duo checkpoints as teachers (issue 26): ``mdlm:DIR`` (masked) and ``duo:DIR`` (uniform-state).

The Duo fixture (``tests/fixtures/duo_dit_tiny.safetensors``: the public reference DIT's logits on fixed tokens and
noise levels, see ``tests/nets/test_mdlm_dit.py``) is written as a Duo hub folder and loaded through the whole import
path: the denoiser at the time t whose noise level is the fixture's sigma (log-linear: t = 1 - exp(-sigma))
returns the log-softmax of the reference logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fewstep.build.pretrained import load_token_teacher, save_token_teacher, token_run_config
from fewstep.nets.mdlm_dit import MDLMTokenNet
from fewstep.processes.categorical import get_keep_schedule

FIXTURE = Path(__file__).parents[1] / "fixtures" / "duo_dit_tiny.safetensors"

SIZES = {"vocab_size": 33, "hidden_size": 16, "n_heads": 2, "n_blocks": 1, "cond_dim": 8, "length": 8,
         "time_conditioning": True}


def _duo_folder(tmp_path):
    data = load_file(str(FIXTURE))
    folder = tmp_path / "duo"
    folder.mkdir()
    state = {k[len("model."):]: v for k, v in data.items() if k.startswith("model.")}
    save_file(state, str(folder / "model.safetensors"))
    cfg = {"config": {"algo": {"causal_attention": False, "time_conditioning": True},
                      "model": {"hidden_size": 16, "cond_dim": 12, "n_heads": 2, "n_blocks": 2, "length": 9,
                                "dropout": 0.1}}, "vocab_size": 11}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder, data


def test_duo_checkpoint_reproduces_the_reference_logits_at_its_noise_levels(tmp_path):
    folder, data = _duo_folder(tmp_path)
    cfg, _, nets = load_token_teacher(f"duo:{folder}")
    assert cfg.method.name == "uniform" and cfg.data.vocab == 11 and cfg.data.length == 9
    t = 1.0 - torch.exp(-data["input.sigma"].double())  # alpha(t) = 1 - t = exp(-sigma)
    with torch.no_grad():
        logp = nets["model"](data["input.tokens"], t.float())
    torch.testing.assert_close(logp, data["output.logits"].log_softmax(-1), rtol=1e-4, atol=1e-4)


def test_mdlm_layout_round_trip_and_subs(tmp_path):
    torch.manual_seed(0)
    net = MDLMTokenNet(SIZES, get_keep_schedule("log-linear"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    save_token_teacher(net, tmp_path / "m", kind="mdlm")
    raw = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert all(k.startswith("backbone.") for k in raw)  # MDLM's Hugging Face key layout
    cfg, _, nets = load_token_teacher(f"mdlm:{tmp_path / 'm'}")
    assert cfg.method.name == "mdlm" and cfg.data.vocab == 32 and cfg.net.kind == "mdlm_dit"
    z = torch.randint(0, 33, (4, 8), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.1, 0.4, 0.7, 0.95])
    with torch.no_grad():
        logp = nets["model"](z, t)
        logits = net(z, t)
    visible = z != 32
    assert bool((logp[visible].argmax(-1) == z[visible]).all())  # SUBS carry-over
    hidden = ~visible
    ref = logits[hidden].index_fill(-1, torch.tensor([32]), float("-inf")).log_softmax(-1)
    torch.testing.assert_close(logp[hidden], ref)


def test_bad_checkpoints_are_refused_in_one_line(tmp_path):
    folder, _ = _duo_folder(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if k != "blocks.1.attn_out.weight"}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="tensor 'blocks.1.attn_out.weight' is missing"):
        load_token_teacher(f"duo:{folder}")
    state["blocks.0.attn_qkv.weight"] = torch.zeros(3, 3)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'blocks.0.attn_qkv.weight' has shape \(3, 3\)"):
        load_token_teacher(f"duo:{folder}")
    (folder / "config.json").write_text(json.dumps({"vocab_size": 11}))
    with pytest.raises(ValueError, match="not an MDLM / Duo model config"):
        token_run_config(f"duo:{folder}")
    with pytest.raises(FileNotFoundError, match="no MDLM / Duo checkpoint"):
        token_run_config(f"mdlm:{tmp_path / 'nowhere'}")


def test_idlm_and_dmmd_distill_mdlm_and_duo_checkpoints(tmp_path, monkeypatch):
    """CLI: sample the imported teacher, refuse distilling without data or with another vocabulary, distill (IDLM
    from MDLM, D-MMD from Duo; tiny lengths), and load the students without the teacher folders."""
    import fewstep
    from fewstep.cli import main

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    save_token_teacher(MDLMTokenNet(SIZES, get_keep_schedule("log-linear")), tmp_path / "m", kind="mdlm")
    save_token_teacher(MDLMTokenNet({**SIZES, "vocab_size": 32}, get_keep_schedule("log-linear")), tmp_path / "d",
                       kind="duo")
    assert main(["sample", "--teacher", "mdlm:m", "--steps", "2", "--n", "4", "--device", "cpu"]) == 0
    assert (tmp_path / "samples" / "m" / "samples_ancestral_2.txt").is_file()
    with pytest.raises(SystemExit, match="brings no data"):
        main(["distill", "--teacher", "mdlm:m", "--method", "idlm", "--steps", "2"])
    with pytest.raises(SystemExit, match="the checkpoint takes 32 tokens"):
        main(["distill", "--teacher", "mdlm:m", "--method", "idlm", "--steps", "2", "--data.name", "text-hmm",
              "--data.vocab", "16", "--dry-run"])
    short = ["--data.name", "text-hmm", "--data.length", "8", "--train.total-nimg", "512", "--train.batch-size", "64",
             "--train.device", "cpu"]
    for teacher, method in (("mdlm:m", "idlm"), ("duo:d", "dmmd")):
        assert main(["distill", "--teacher", teacher, "--method", method, "--steps", "2", "--run-dir", method,
                     *short]) == 0
    saved = json.loads((tmp_path / "idlm" / "config.json").read_text())
    assert saved["teacher"] == "mdlm:m" and saved["net"]["kind"] == "mdlm_dit" and saved["method"]["latent_dim"] == 0
    for folder in ("m", "d"):
        (tmp_path / folder / "model.safetensors").unlink()  # students are portable
    for run in ("idlm", "dmmd"):
        x = fewstep.load(run).sample(4)
        assert x.shape == (4, 8) and x.dtype == torch.int64 and int(x.max()) < 32
