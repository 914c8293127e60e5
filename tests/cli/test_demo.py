"""The demo end to end in its quick mode: trains, samples, and writes an illustrated report."""

from __future__ import annotations

from pathlib import Path

import pytest

from fewstep.demo import run_demo


def test_quick_short_demo_has_the_picture_the_plot_and_a_text_example(tmp_path: Path):
    report = run_demo(tmp_path, device="cpu", quick=True)
    md = (tmp_path / "report.md").read_text()
    assert report.name == "report.html" and "side_by_side.png" in report.read_text()
    assert (tmp_path / "side_by_side.png").stat().st_size > 1000
    assert "toy/quality_vs_nfe_checkerboard2d.png" in md and "hmm-v32-l64" in md and "digits8x8" not in md
    toy = (tmp_path / "toy" / "report.md").read_text()
    assert "| mm-alternating | trained | student | 1 |" in toy and "| imm | None | pushforward | 4 |" in toy
    assert "mm-instant" not in toy
    for stem in ("teacher-ancestral_4", "mm-alternating-trained_4", "imm-restart_4"):  # panels of the picture
        assert (tmp_path / "toy" / f"samples_checkerboard2d_{stem}.png").exists(), stem
    assert list((tmp_path / "text-hmm").glob("samples_hmm-v32-l64_teacher-masked-ancestral_*.txt"))


@pytest.mark.slow  # about 4 minutes on 2 cores: the tour of every suite (make test-slow)
def test_quick_full_demo_writes_report(tmp_path: Path):
    report = run_demo(tmp_path, device="cpu", quick=True, full=True)
    assert report.exists() and report.name == "report.html"
    html = report.read_text()
    assert "<table>" in html and "quality_vs_nfe_checkerboard2d.png" in html and "digits8x8" in html
    for rel in ("toy/quality_vs_nfe_checkerboard2d.png", "digits/quality_vs_nfe_digits8x8.png",
                "toy/results.jsonl", "digits/results.jsonl"):
        assert (tmp_path / rel).exists(), rel
    assert list((tmp_path / "digits").glob("samples_digits8x8_teacher-ancestral_*.png"))
    for method in ("mm-alternating", "mm-instant"):  # both MM variants are in the report, at 1 and 4 steps
        assert (tmp_path / "digits" / f"samples_digits8x8_{method}-trained_4.png").exists(), method
        assert f"| {method} | trained | student | 1 |" in (tmp_path / "toy" / "report.md").read_text(), method
    for sampler in ("pushforward", "restart"):  # IMM trained from scratch, sampled in 1 and 4 steps
        assert f"| imm | None | {sampler} | 4 |" in (tmp_path / "toy" / "report.md").read_text(), sampler
        assert (tmp_path / "digits" / f"samples_digits8x8_imm-{sampler}_4.png").exists(), sampler
    assert (tmp_path / "report.md").read_text().startswith("# fewstep demo")
    hmm = (tmp_path / "text-hmm" / "report.md").read_text()  # the text section: a masked teacher on text-hmm
    assert "oracle_nll" in hmm and "masked" in hmm
    assert list((tmp_path / "text-hmm").glob("samples_hmm-v32-l64_teacher-masked-ancestral_*.txt"))
    assert "hmm-v32-l64" in (tmp_path / "report.md").read_text()
