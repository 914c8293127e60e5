"""The MDLM / Duo transformer against the public reference code's numbers.

``tests/fixtures/duo_dit_tiny.safetensors`` holds a tiny random configuration of the reference ``DIT``
(github.com/s-sahoo/duo ``models/dit.py``, commit in the file's metadata; hidden 16, 2 heads, 2 blocks, cond 12,
vocabulary 11, every parameter perturbed so that the zero-initialised adaLN layers carry signal), fixed tokens and
noise levels, and the logits the reference computed (run outside this repository on the CPU: its SDPA attention
path, with flash-attn's torch rotary function). Only these numbers are committed, not the reference code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fewstep.nets.mdlm_dit import MDLMDiT

FIXTURE = Path(__file__).parents[1] / "fixtures" / "duo_dit_tiny.safetensors"


def test_logits_match_the_reference_implementation():
    data = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        assert "s-sahoo/duo" in f.metadata()["source"]
    state = {k[len("model."):]: v for k, v in data.items() if k.startswith("model.")}
    net = MDLMDiT(11, dim=16, heads=2, blocks=2, cond=12).eval()
    assert sorted(net.state_dict()) == sorted(state)  # key for key
    net.load_state_dict(state)
    with torch.no_grad():
        logits = net(data["input.tokens"], data["input.sigma"])
    ref = data["output.logits"]
    assert logits.shape == ref.shape
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
    # the noise level and every position matter (the fixture is not degenerate)
    with torch.no_grad():
        other = net(data["input.tokens"], data["input.sigma"] + 1.0)
    assert (other - ref).abs().max() > 1e-2
