"""diffusers teachers in, diffusers students out (issue 26): the imported model is the function it was in diffusers.

Tiny random diffusers models are saved locally (no network). Checked against diffusers' own code: the x0 prediction
at every training timestep equals the scheduler's ``pred_original_sample`` (float64, <= 1e-6 relative); a
deterministic DDIM run from the same noise matches ``DDIMScheduler``'s loop (<= 1e-4 relative); the continuous
schedule hits the DDPM's alpha-bar exactly at the knots; an exported student loads in diffusers with the same outputs.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fewstep.samplers.grids import diffusers_grid, uniform_grid
from fewstep.schedules import DDPMSchedule, ddpm_alphas_cumprod

BETAS = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (1e-4, 0.02)}
PREDS = ("epsilon", "v_prediction", "sample")


# ------------------------------------------------------------------------------------------ the schedule
@pytest.mark.parametrize("betas", list(BETAS))
def test_ddpm_schedule_is_exact_at_the_knots_and_inverts(betas):
    start, end = BETAS[betas]
    s = DDPMSchedule(betas, start, end, 1000)
    abar = ddpm_alphas_cumprod(betas, start, end, 1000).double()
    t = (torch.arange(1000, dtype=torch.float64) + 1) / 1000
    o = s(t)
    torch.testing.assert_close(o.alpha**2, abar, rtol=1e-12, atol=0)
    torch.testing.assert_close(o.alpha**2 + o.sigma**2, torch.ones_like(t), rtol=1e-12, atol=0)
    assert float(s(torch.zeros(1, dtype=torch.float64)).alpha) == 1.0
    u = torch.rand(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.999 + 5e-4
    lam = s.logsnr(u)
    assert bool((lam[u.argsort()].diff() < 0).all())  # decreasing in t
    torch.testing.assert_close(s.t_from_logsnr(lam), u, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.t_from_eta(s.eta(u)), u, rtol=1e-9, atol=1e-12)
    # derivatives of the interpolant: central differences inside an interval
    mid = (torch.arange(1, 999, dtype=torch.float64) + 0.5) / 1000
    h = 1e-7
    fd_a = (s(mid + h).alpha - s(mid - h).alpha) / (2 * h)
    fd_s = (s(mid + h).sigma - s(mid - h).sigma) / (2 * h)
    torch.testing.assert_close(s(mid).d_alpha, fd_a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(s(mid).d_sigma, fd_s, rtol=1e-5, atol=1e-7)


def test_trailing_grid_is_the_uniform_grid_and_bad_schedules_are_refused():
    for k in (1, 2, 4, 8, 10, 50, 1000):
        torch.testing.assert_close(diffusers_grid("trailing", k, 1000), uniform_grid(k), rtol=0, atol=1e-15)
    lead = diffusers_grid("leading", 10, 1000, steps_offset=1)
    torch.testing.assert_close(lead[:-1] * 1000 - 1, torch.arange(901, 0, -100, dtype=torch.float64))
    with pytest.raises(ValueError, match="unsupported DDPM beta schedule 'sigmoid'"):
        DDPMSchedule("sigmoid")
    with pytest.raises(ValueError, match="exceed"):
        diffusers_grid("trailing", 11, 10)


# ------------------------------------------------------------------------------------------ against diffusers
diffusers = pytest.importorskip("diffusers")


def _unet(classes: int | None = None):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                 attention_head_dim=8, num_class_embeds=classes)


def _folder(path, model, scheduler):
    model.save_pretrained(str(path))
    scheduler.save_pretrained(str(path))
    return f"diffusers:{path}"


def _rel(a, b) -> float:
    """Largest per-sample relative error ||a - b|| / ||b||."""
    return float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max())


def _load(teacher):
    from fewstep.build.runs import load_trained

    return load_trained(teacher)[2]["model"].double()


def test_alphas_cumprod_equal_diffusers_bit_for_bit():
    for betas, (start, end) in BETAS.items():
        ref = diffusers.DDPMScheduler(beta_schedule=betas, beta_start=start, beta_end=end).alphas_cumprod
        assert torch.equal(ddpm_alphas_cumprod(betas, start, end, 1000), ref)


@pytest.mark.parametrize("betas", list(BETAS))
@pytest.mark.parametrize("pred", PREDS)
def test_x0_equals_the_schedulers_at_every_training_timestep(tmp_path, betas, pred):
    start, end = BETAS[betas]
    sched = diffusers.DDPMScheduler(beta_schedule=betas, beta_start=start, beta_end=end, prediction_type=pred,
                                    clip_sample=False)
    den = _load(_folder(tmp_path, _unet(), sched))
    n = 1000
    x = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = torch.arange(n)
    with torch.no_grad():
        ours = den(x, (ts + 1).double() / n)
        out = den.net(x, ts).sample
    ref = torch.cat([sched.step(out[i:i + 1], int(ts[i]), x[i:i + 1]).pred_original_sample for i in range(n)])
    assert ours.dtype == torch.float64
    assert _rel(ours, ref) <= 1e-6, _rel(ours, ref)


@pytest.mark.parametrize("spacing,steps", [("trailing", 4), ("trailing", 10), ("leading", 10), ("leading", 7)])
def test_ddim_matches_the_ddim_scheduler_loop(tmp_path, spacing, steps):
    from fewstep.samplers.gaussian import ddim

    sched = diffusers.DDIMScheduler(timestep_spacing=spacing, set_alpha_to_one=True, clip_sample=False,
                                    prediction_type="v_prediction", steps_offset=1 if spacing == "leading" else 0)
    den = _load(_folder(tmp_path, _unet(), sched))
    z0 = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sched.set_timesteps(steps)
    x = z0.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(den.net(x, t).sample, t, x, eta=0.0).prev_sample
        grid = diffusers_grid(spacing, steps, 1000, steps_offset=sched.config.steps_offset)
        ours = ddim(den, den.process, z0.clone(), grid)
    assert float((ours - x).norm() / x.norm()) <= 1e-4


def test_class_conditional_unet_and_dit(tmp_path):
    sched = diffusers.DDPMScheduler(prediction_type="epsilon", clip_sample=False)
    den = _load(_folder(tmp_path / "unet", _unet(classes=3), sched))
    assert den.num_classes == 3
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ts, y = torch.tensor([0, 10, 200, 500, 900, 999]), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        ours = den(x, (ts + 1).double() / 1000, cond=y)
        out = den.net(x, ts, class_labels=y).sample
        other = den(x, (ts + 1).double() / 1000, cond=(y + 1) % 3)
    ref = torch.cat([sched.step(out[i:i + 1], int(ts[i]), x[i:i + 1]).pred_original_sample for i in range(6)])
    assert _rel(ours, ref) <= 1e-6
    assert not torch.allclose(ours, other)  # the label reaches the network
    from fewstep.cli import main

    with pytest.raises(SystemExit, match="not available for a diffusers teacher"):  # its null label is unknown
        main(["distill", "--teacher", f"diffusers:{tmp_path / 'unet'}", "--steps", "4", "--quick", "--data.name",
              "digits8x8", "--method.guidance", "2", "--dry-run"])

    torch.manual_seed(0)  # UNet2DConditionModel without cross-attention: class labels, no text embeddings
    ucond = diffusers.UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                           layers_per_block=1, norm_num_groups=4, mid_block_type=None,
                                           down_block_types=("DownBlock2D", "DownBlock2D"), cross_attention_dim=8,
                                           up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=3)
    den = _load(_folder(tmp_path / "ucond", ucond, sched))
    with torch.no_grad():
        ours = den(x, (ts + 1).double() / 1000, cond=y)
        out = den.net(x, ts, encoder_hidden_states=None, class_labels=y).sample
    ref = torch.cat([sched.step(out[i:i + 1], int(ts[i]), x[i:i + 1]).pred_original_sample for i in range(6)])
    assert den.num_classes == 3 and _rel(ours, ref) <= 1e-6

    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=1, out_channels=2,
                                          num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=3,
                                          norm_num_groups=1)
    den = _load(_folder(tmp_path / "dit", dit, sched))
    with torch.no_grad():
        ours = den(x, (ts + 1).double() / 1000, cond=y)
        out = den.net(x, timestep=ts, class_labels=y).sample[:, :1]  # learned-sigma channels dropped
        null = den(x, (ts + 1).double() / 1000)  # no label: DiT's null label
    ref = torch.cat([sched.step(out[i:i + 1], int(ts[i]), x[i:i + 1]).pred_original_sample for i in range(6)])
    assert _rel(ours, ref) <= 1e-6
    assert null.shape == ours.shape and not torch.allclose(null, ours)


def test_refusals_are_one_line(tmp_path):
    from fewstep.build.pretrained import diffusers_run_config
    from fewstep.build.runs import load_trained

    ok = diffusers.DDPMScheduler()
    folder = tmp_path / "t"
    _folder(folder, _unet(), ok)
    (folder / "scheduler_config.json").rename(tmp_path / "s.json")
    with pytest.raises(FileNotFoundError, match="has no scheduler_config.json"):
        diffusers_run_config(f"diffusers:{folder}")
    cfg = json.loads((tmp_path / "s.json").read_text())
    for key, value, msg in [("trained_betas", [0.1] * 1000, "trained_betas"),
                            ("rescale_betas_zero_snr", True, "rescale_betas_zero_snr"),
                            ("beta_schedule", "sigmoid", "beta_schedule 'sigmoid'"),
                            ("prediction_type", "flow", "prediction_type 'flow'")]:
        (folder / "scheduler_config.json").write_text(json.dumps({**cfg, key: value}))
        with pytest.raises(ValueError, match=msg):
            diffusers_run_config(f"diffusers:{folder}")
    (folder / "scheduler_config.json").write_text(json.dumps(cfg))
    # a key layout the config does not describe: the first offending tensor is named
    from safetensors.torch import load_file, save_file

    weights = folder / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    first = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != first}, str(weights))
    with pytest.raises(ValueError, match=f"tensor '{first}' is missing"):
        load_trained(f"diffusers:{folder}")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no diffusion_pytorch_model.safetensors"):
        diffusers_run_config(f"diffusers:{folder}")
    cross = diffusers.UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                           layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
                                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=4)
    _folder(tmp_path / "x", cross, ok)
    with pytest.raises(ValueError, match="cross-attention"):
        diffusers_run_config(f"diffusers:{tmp_path / 'x'}")


def test_distill_sample_load_and_export_round_trip(tmp_path, monkeypatch):
    """CLI end to end: sample the teacher, distill it (--quick), load the student without the teacher folder, export
    it and load that in diffusers: the same network outputs (<= 1e-5)."""
    import fewstep
    from fewstep.cli import main

    monkeypatch.chdir(tmp_path)
    sched = diffusers.DDPMScheduler(prediction_type="v_prediction")
    teacher = _folder(tmp_path / "teacher", _unet(), sched)
    assert main(["sample", "--teacher", teacher, "--steps", "2", "--n", "8", "--device", "cpu"]) == 0
    assert (tmp_path / "samples" / "teacher" / "samples_ancestral_2.safetensors").is_file()
    with pytest.raises(SystemExit, match="brings no data"):
        main(["distill", "--teacher", teacher, "--steps", "4", "--quick"])
    with pytest.raises(SystemExit, match="shape"):
        main(["distill", "--teacher", teacher, "--steps", "4", "--quick", "--data.name", "gmm8d"])
    run = tmp_path / "student"
    assert main(["distill", "--teacher", teacher, "--method", "mm-alternating", "--steps", "4", "--quick",
                 "--data.name", "digits8x8", "--run-dir", str(run), "--train.device", "cpu"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["net"]["kind"] == "diffusers" and saved["process"]["schedule"] == "ddpm"
    assert saved["net"]["parametrization"] == "v" and saved["teacher"] == teacher
    shutil.rmtree(tmp_path / "teacher")  # a student is portable: it loads and samples without its teacher
    model = fewstep.load(run)
    x = model.sample(4)
    assert model.trained_steps == 4 and x.shape == (4, 1, 8, 8) and bool(torch.isfinite(x).all())
    assert main(["export", str(run), "--out", str(tmp_path / "exported")]) == 0
    info = json.loads((tmp_path / "exported" / "fewstep_student.json").read_text())
    assert info["steps"] == 4 and info["timesteps"] == [999, 749, 499, 249]
    back = diffusers.UNet2DModel.from_pretrained(str(tmp_path / "exported" / "model")).double()
    sched_back = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / "exported" / "scheduler"))
    assert sched_back.config.prediction_type == "v_prediction"
    student = model.nets["student"].double()
    z = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ts = torch.tensor([999.0, 749, 499, 249, 100, 50, 3.5, 0])
    with torch.no_grad():
        a, b = student.net(z, ts).sample, back(z, ts).sample
    assert float((a - b).norm() / a.norm()) <= 1e-5
    with pytest.raises(SystemExit, match="not a diffusers one"):
        fewstep_run = tmp_path / "ours"
        main(["train", "--preset", "tiny", "--run-dir", str(fewstep_run), "--train.total-nimg", "512",
              "--train.device", "cpu"])
        main(["export", str(fewstep_run)])


def test_instant_mm_from_a_diffusers_teacher(tmp_path):
    """Instant MM differentiates the teacher's parameters (JVP): diffusers' fused attention and group norms are
    driven through the double-backward route, which config.json records."""
    from fewstep.cli import main

    teacher = _folder(tmp_path / "teacher", _unet(), diffusers.DDPMScheduler(prediction_type="epsilon"))
    run = tmp_path / "instant"
    assert main(["distill", "--teacher", teacher, "--method", "mm-instant", "--steps", "4", "--quick",
                 "--data.name", "digits8x8", "--run-dir", str(run), "--train.device", "cpu"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["method"]["jvp"] == "double_backward"
    x = __import__("fewstep").load(run).sample(4)
    assert bool(torch.isfinite(x).all())
