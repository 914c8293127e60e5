"""Bench harness: schema of results.jsonl, report/figures, and the acceleration factor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fewstep.bench.report import acceleration, best_curve
from fewstep.bench.runner import BenchOptions, run_bench

REQUIRED = {"suite": str, "dataset": str, "method": str, "process": str, "steps": int, "sampler": str, "nfe": int,
            "metric": str, "value": float, "lower_is_better": bool, "n_samples": int, "seed": int,
            "sample_seconds": float, "device": str, "quick": bool, "git_sha": str}

CURVE = [(1, 1.0, 0.01, "ddim"), (2, 0.5, 0.01, "ddim"), (4, 0.1, 0.01, "ddim"), (8, 0.01, 0.001, "ddim")]


def test_acceleration_interpolates_log_linearly():
    # value halfway between NFE 2 (0.5) and NFE 4 (0.1) -> N = 2 * 2**0.5
    acc, text = acceleration(CURVE, 0.3, 0.0, 1)
    assert acc == pytest.approx(2 * math.sqrt(2))
    assert text.startswith("2.83")
    acc, _ = acceleration(CURVE, 0.3, 0.0, 2)
    assert acc == pytest.approx(math.sqrt(2))


def test_acceleration_at_least_max_when_matching_teacher_within_2se():
    acc, text = acceleration(CURVE, 0.0115, 0.0005, 2)
    assert acc == 4 and text == ">= 4"
    _, text = acceleration(CURVE, 0.02, 0.0005, 2)
    assert not text.startswith(">=")


def test_acceleration_higher_is_better():
    curve = [(1, 0.1, 0.0, "a"), (4, 0.5, 0.0, "a"), (16, 0.9, 0.0, "a")]
    acc, _ = acceleration(curve, 0.5, 0.0, 1, lower_is_better=False)
    assert acc == pytest.approx(4.0)


def test_best_curve_picks_best_sampler():
    rows = [{"method": "teacher", "metric": "energy", "nfe": 4, "value": v, "stderr": 0.0, "sampler": s,
             "lower_is_better": True} for s, v in (("ancestral", 0.2), ("ddim", 0.1))]
    assert best_curve(rows, "energy") == [(4, 0.1, 0.0, "ddim")]


def test_quick_oracle_bench_writes_schema_rows(tmp_path: Path):
    opts = BenchOptions(suite="toy", methods=("oracle",), datasets=("gmm8d",), quick=True, out=str(tmp_path),
                        teacher_nfe=(1, 8), device="cpu")
    rows = run_bench(opts, log=lambda s: None)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) > 0
    for line in lines:
        row = json.loads(line)
        for key, typ in REQUIRED.items():
            assert key in row, key
            assert isinstance(row[key], typ) or (typ is float and isinstance(row[key], int)), (key, row[key])
        assert "train_seconds" in row and "teacher" in row
    methods = {json.loads(x)["method"] for x in lines}
    assert methods == {"data", "oracle"}
    assert all(json.loads(x)["options"] == {"quick": True} for x in lines)  # model options beyond the defaults
    assert (tmp_path / "report.md").exists() and (tmp_path / "quality_vs_nfe_gmm8d.png").exists()
    assert (tmp_path / "samples_gmm8d_oracle-ddim_8.png").exists()
    energy = {(r["sampler"], r["nfe"]): r["value"] for r in rows if r["metric"] == "energy"}
    # the exact oracle improves with steps: 8 DDIM steps beat 1 step by a wide margin
    assert energy[("ddim", 8)] < 0.1 * energy[("ddim", 1)]


def test_options_record_lists_only_model_options_away_from_defaults():
    from fewstep.bench.runner import options_record

    assert options_record(BenchOptions(suite="toy", methods=("teacher",), steps=(1,), repeats=2, out="x")) == {}
    rec = options_record(BenchOptions(suite="toy", distill_set=(("gap", "fixed"),), distill_seed=1,
                                      distill_scale=0.5))
    assert rec == {"distill_set": {"gap": "fixed"}, "distill_seed": 1, "distill_scale": 0.5}
    json.dumps(rec)


def test_bench_rejects_unknown_things(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown suite"):
        run_bench(BenchOptions(suite="nope", out=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown methods"):
        run_bench(BenchOptions(suite="toy", methods=("nope",), out=str(tmp_path)))
    with pytest.raises(ValueError, match="not in suite"):
        run_bench(BenchOptions(suite="toy", datasets=("digits8x8",), out=str(tmp_path)))


def test_report_command_rederives_tables(tmp_path: Path):
    from fewstep.cli import main

    opts = BenchOptions(suite="toy", methods=("oracle",), datasets=("gmm8d",), quick=True, out=str(tmp_path / "a"),
                        teacher_nfe=(1, 2), device="cpu")
    run_bench(opts, log=lambda s: None)
    assert main(["report", "--results", str(tmp_path / "a" / "results.jsonl"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.md").read_text() == (tmp_path / "a" / "report.md").read_text()


def test_oracle_students_are_compared_with_the_oracle_curve():
    from fewstep.bench.report import student_table

    def row(method, sampler, nfe, value, teacher=None):
        return {"method": method, "sampler": sampler, "nfe": nfe, "steps": nfe, "metric": "energy",
                "value": value, "stderr": 0.0, "lower_is_better": True, "teacher": teacher}

    rows = [row("teacher", "ddim", 4, 0.1), row("teacher", "ddim", 16, 0.01),  # trained teacher
            row("oracle", "ddim", 4, 0.2), row("oracle", "ddim", 16, 0.02),  # a worse exact oracle curve
            row("mm-alternating", "student", 4, 0.02, "oracle"), row("mm-alternating", "student", 4, 0.02, "trained")]
    lines = {ln.split("|")[2].strip(): ln for ln in student_table(rows, "energy") if ln.startswith("| mm-")}
    assert lines["oracle"].split("|")[6].strip() == "oracle" and "(ddim)" in lines["oracle"]
    assert lines["oracle"].rstrip(" |").endswith(">= 4")  # reaches NFE 16
    assert lines["trained"].split("|")[6].strip() == "teacher" and "(ddim)" in lines["trained"]
    assert float(lines["trained"].split("|")[-2]) < 4  # the trained teacher reaches 0.02 before 16 NFE


def test_student_kernel_option_is_recorded_and_reaches_the_sampler():
    from fewstep.bench.context import BenchContext
    from fewstep.bench.providers_discrete import token_generator
    from fewstep.bench.runner import options_record

    assert options_record(BenchOptions(suite="grid2d", student_kernel="duo")) == {"student_kernel": "duo"}
    seen = {}

    class Spy:
        def sample(self, n, **kw):
            seen.update(kw)
            return None, {"nfe": 1, "steps_with_call": 1}

    import torch

    ctx = BenchContext(options=BenchOptions(suite="grid2d"), dataset="grid2d", device=torch.device("cpu"),
                       runs_dir=Path("."))
    token_generator(Spy(), 2, "ancestral", ctx, {}, kernel="duo")(4, None)
    assert seen["kernel"] == "duo"
    seen.clear()
    token_generator(Spy(), 2, "ancestral", ctx, {})(4, None)
    assert "kernel" not in seen
