"""The teacher-kind registry and the model builders (``fewstep.build.models``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fewstep.build import models
from fewstep.config import DataCfg, DiffusionCfg, IMMCfg, MDLMCfg, NetCfg, RunConfig, UniformCfg
from fewstep.methods.diffusion import GaussianDiffusion
from fewstep.methods.discrete_diffusion import DiscreteDiffusion
from fewstep.methods.imm import InductiveMomentMatching

TINY = NetCfg(kind="mlp", width=16, depth=1)
TOKENS = DataCfg(name="grid2d")
TOKEN_NET = NetCfg(kind="text_dit", width=16, depth=1, heads=2)


def test_builtin_kinds():
    assert {k: v.discrete for k, v in models.TEACHER_KINDS.items()} == {
        "diffusion": False, "imm": False, "mdlm": True, "uniform": True}
    with pytest.raises(ValueError, match="unknown method 'flow'"):
        models.get_teacher_kind("flow")


@pytest.mark.parametrize(("method", "data", "net", "cls"), [
    (DiffusionCfg(), DataCfg(name="gmm8d"), TINY, GaussianDiffusion),
    (IMMCfg(), DataCfg(name="gmm8d"), TINY, InductiveMomentMatching),
    (MDLMCfg(), TOKENS, TOKEN_NET, DiscreteDiffusion),
    (UniformCfg(), TOKENS, TOKEN_NET, DiscreteDiffusion),
])
def test_build_method_dispatches_on_the_method_name(method, data, net, cls):
    cfg = RunConfig(data=data, net=net, method=method)
    m = models.build_method(cfg, (8,))
    assert type(m) is cls
    assert models.is_discrete(cfg) == (cls is DiscreteDiffusion)


def test_discrete_method_validates_data_and_net():
    with pytest.raises(ValueError, match="trains on token data"):
        models.build_method(RunConfig(data=DataCfg(name="gmm8d"), net=TOKEN_NET, method=MDLMCfg()), (8,))
    with pytest.raises(ValueError, match="needs --net.kind text_dit"):
        models.build_method(RunConfig(data=TOKENS, net=TINY, method=MDLMCfg()), (2,))


def test_label_dropout_resolution():
    cond = RunConfig(data=DataCfg(name="gmm8d"), net=replace(TINY, num_classes=4), method=DiffusionCfg())
    assert models.resolve_label_dropout(cond).method.label_dropout == pytest.approx(0.1)
    assert models.resolve_label_dropout(cond, absent=0.0).method.label_dropout == 0.0
    uncond = replace(cond, net=TINY)
    assert models.resolve_label_dropout(uncond).method.label_dropout == 0.0
    with pytest.raises(ValueError, match="needs a class-conditional net"):
        models.resolve_label_dropout(replace(uncond, method=DiffusionCfg(label_dropout=0.2)))


def test_unet_needs_images_and_unknown_net_kind():
    with pytest.raises(ValueError, match="needs image data"):
        models.build_net(NetCfg(kind="unet"), (8,))
    with pytest.raises(ValueError, match="unknown net kind"):
        models.build_net(replace(TINY, kind="resnet"), (8,))  # type: ignore[arg-type]


def test_a_registered_teacher_kind_is_built():
    class Fake(torch.nn.Module):
        pass

    kind = models.TeacherKind("diffusion", False, lambda cfg, shape: Fake())
    with pytest.raises(ValueError, match="already registered"):
        models.register_teacher_kind(kind)
    old = models.TEACHER_KINDS["diffusion"]
    try:
        models.register_teacher_kind(kind, overwrite=True)
        assert isinstance(models.build_method(RunConfig(data=DataCfg(name="gmm8d"), net=TINY), (8,)), Fake)
    finally:
        models.register_teacher_kind(old, overwrite=True)
    assert type(models.build_method(RunConfig(data=DataCfg(name="gmm8d"), net=TINY), (8,))) is GaussianDiffusion


def test_seeded_init_is_deterministic_and_restores_the_global_rng():
    from fewstep.build.device import seeded_init

    cfg = RunConfig(data=DataCfg(name="gmm8d"), net=TINY)
    state = torch.random.get_rng_state()
    a = seeded_init(lambda: models.build_method(cfg, (8,)), 3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = seeded_init(lambda: models.build_method(cfg, (8,)), 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_every_train_option_reaches_the_trainer():
    import inspect

    from fewstep.build.trainers import NOT_TRAINER_OPTIONS, trainer_options
    from fewstep.config import TrainCfg
    from fewstep.train.trainer import Trainer

    params = inspect.signature(Trainer).parameters
    opts = trainer_options(TrainCfg(betas=[0.5, 0.9], lr=3e-4))  # type: ignore[arg-type]
    assert set(opts) <= set(params) and opts["betas"] == (0.5, 0.9) and opts["lr"] == 3e-4
    from dataclasses import fields
    assert {f.name for f in fields(TrainCfg)} == set(opts) | set(NOT_TRAINER_OPTIONS)


def test_every_method_option_is_spelled_once_and_reaches_its_method():
    """Each config field is a constructor argument of its method (same name, or a listed rename) or one the
    builder consumes; ``method_options`` refuses anything else."""
    from dataclasses import dataclass

    from fewstep.build.distill import DISCRETE_BUILDER_FIELDS, MM_BUILDER_FIELDS, MM_RENAME
    from fewstep.config import DMMDCfg, IDLMCfg, MMCfg
    from fewstep.methods.discrete_mmd import DiscreteMMD
    from fewstep.methods.idlm import IDLM
    from fewstep.methods.mm import MomentMatching

    mm = models.method_options(MMCfg(steps=3, renoise="fresh"), MomentMatching, rename=MM_RENAME,
                               builder=MM_BUILDER_FIELDS)
    assert mm["k"] == 3 and mm["renoise_mode"] == "fresh" and "lr" not in mm and "steps" not in mm
    imm = models.method_options(IMMCfg(group_size=8), InductiveMomentMatching, builder=models.IMM_MAP_FIELDS)
    assert imm["group_size"] == 8 and "param" not in imm
    assert models.method_options(IDLMCfg(t_band=[0.1, 0.9]), IDLM, builder=DISCRETE_BUILDER_FIELDS)["t_band"] == (
        0.1, 0.9)
    assert models.method_options(DMMDCfg(steps=2), DiscreteMMD, rename={"steps": "k"},
                                 builder=DISCRETE_BUILDER_FIELDS)["k"] == 2

    @dataclass(frozen=True)
    class Extra(IMMCfg):
        new_knob: int = 1

    with pytest.raises(TypeError, match="Extra.new_knob is not an argument of InductiveMomentMatching"):
        models.method_options(Extra(), InductiveMomentMatching, builder=models.IMM_MAP_FIELDS)
