"""``fewstep bench speed`` (issue 28): the interleaved timing helpers and a quick end-to-end run of two sections."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fewstep.bench.speed import interleaved, ratio, speed_report
from fewstep.cli import main


def test_interleaved_runs_arms_in_turn_and_ratio_is_mean_of_paired_ratios() -> None:
    order: list[str] = []

    def arm(name: str, seconds: float):
        def run() -> None:
            order.append(name)
            time.sleep(seconds)
        return run

    times = interleaved({"a": arm("a", 0.02), "b": arm("b", 0.01)}, repeats=3)
    assert order == ["a", "b"] * 4  # one warm-up call each, then three repetitions in turn
    assert all(len(v) == 3 for v in times.values())
    value, se = ratio(times, "a", "b")
    assert 1.3 < value < 3.0 and se is not None and se >= 0
    assert ratio({"a": [2.0, 4.0], "b": [1.0, 1.0]}, "a", "b") == (3.0, pytest.approx(1.0))


def test_report_marks_targets() -> None:
    base = {"date": "d", "host_cpu": "cpu", "threads": 1, "git_sha": "g", "quick": True, "command": "c",
            "dataset": "x", "sampler": "ddim", "batch": 64, "nfe": 4}
    rows = [{**base, "metric": "sampler_vs_forwards", "value": 1.05, "stderr": 0.01, "lower_is_better": True,
             "target": 1.10},
            {**base, "metric": "sampler_vs_forwards", "value": 1.20, "stderr": 0.01, "lower_is_better": True,
             "target": 1.10}]
    text = speed_report(rows)
    assert "| 1.050 ± 0.010 | 1.1 | yes |" in text and "| 1.200 ± 0.010 | 1.1 | **no** |" in text


def test_cli_quick_masked_trainer_and_distill_sections(tmp_path: Path) -> None:
    out = tmp_path / "speed"
    assert main(["bench", "speed", "--quick", "--repeats", "2", "--sections", "masked,trainer,distill",
                 "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert {r["metric"] for r in rows} == {"masked_vs_limit", "trainer_vs_loop", "distill_vs_teacher_step"}
    distill = [r for r in rows if r["metric"] == "distill_vs_teacher_step"]
    assert {r["method"] for r in distill} == {"mm-alternating", "mm-instant"}
    assert all(set(r["seconds"]) == {r["method"], "teacher"} for r in distill)
    for r in rows:
        assert r["suite"] == "speed" and r["value"] > 0 and set(r["seconds"]) and r["options"] == {"repeats": 2}
    masked = next(r for r in rows if r["metric"] == "masked_vs_limit")
    assert masked["network_calls"] <= 64 and masked["nfe"] <= 64  # <= L calls, NFE <= L per sample
    with pytest.raises(SystemExit, match="--sections"):
        main(["bench", "speed", "--sections", "nope", "--out", str(out)])
