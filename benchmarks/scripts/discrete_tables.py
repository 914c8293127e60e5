"""Merge the per-process discrete bench runs into benchmarks/results/<suite>.jsonl (the data rows once; a
teacher row measured in two folders once, the first kept) and print the tables of benchmarks/teachers.md,
idlm.md and dmmd.md: the teachers' and, when students are present, the students' against their process's teacher curve
(``bench.report.discrete_student_table``: tokens per step, entropy vs the teacher, acceleration).

    python benchmarks/scripts/discrete_tables.py bench_out/text/hmm-masked bench_out/text/hmm-uniform --suite text-hmm
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = {"text-hmm": ("oracle_nll", "entropy", "ngram_tv1", "ngram_tv2", "ngram_tv3"),
           "text-char": ("genppl", "entropy", "distinct4"), "grid2d": ("tv",)}


def fmt(r: dict | None) -> str:
    if r is None:
        return ""
    se = r.get("stderr")
    return f"{r['value']:.4g}" + (f" ± {se:.2g}" if se else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--suite", required=True)
    ap.add_argument("--out", default="benchmarks/results")
    a = ap.parse_args()
    rows, seen_data, seen = [], False, set()
    for d in a.dirs:
        part = [json.loads(line) for line in (Path(d) / "results.jsonl").read_text().splitlines() if line]
        if seen_data:
            part = [r for r in part if r["method"] != "data"]
        seen_data = True
        key = lambda r: (r["method"], r["process"], r["sampler"], r["nfe"], r["metric"])  # noqa: E731
        part = [r for r in part if r["method"] != "teacher" or key(r) not in seen]
        seen |= {key(r) for r in part if r["method"] == "teacher"}
        rows += part
    out = Path(a.out) / f"{a.suite}.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols = COLUMNS[a.suite]
    get = {(r["method"], r["process"], r["nfe"], r["metric"]): r for r in rows}
    data = [r for r in rows if r["method"] == "data"]
    students = print_students(rows, cols[0])
    if a.suite == "grid2d":
        for proc in ("masked", "uniform"):
            cells = [fmt(get.get(("teacher", proc, n, "tv"))) for n in (1, 2, 4, 8, 16, 64, 256, 1024)]
            print(f"| {proc} | " + " | ".join(cells) + " |")
        for method in sorted({r["method"] for r in students}):
            for proc in ("masked", "uniform"):
                cells = [fmt(get.get((method, proc, n, "tv"))) for n in (1, 2, 4)]
                if any(cells):
                    print(f"| {method} | {proc} | " + " | ".join(cells) + " |")
        return
    drow = {r["metric"]: r for r in data}
    print("| data | — | " + " | ".join(fmt(drow.get(c)) for c in cols) + f" | {data[0]['n_samples']} | | |")
    for proc in ("masked", "uniform"):
        for n in (1, 2, 4, 8, 16, 64, 256, 1024):
            first = get.get(("teacher", proc, n, cols[0]))
            if first is None:
                continue
            sps = first.get("samples_per_second")
            extra = f" {sps:.3g} |" if a.suite == "text-hmm" else ""
            print(f"| {proc} | {n} | " + " | ".join(fmt(get.get(("teacher", proc, n, c))) for c in cols) +
                  f" | {first['n_samples']} | {first.get('nfe_spent', n):.4g} |{extra}")


def print_students(rows: list[dict], metric: str) -> list[dict]:
    """Print the students-vs-teacher-curve table; returns the student rows of ``metric``."""
    from fewstep.bench.report import discrete_student_table

    students = [r for r in rows if r["metric"] == metric and r["method"] not in ("teacher", "data")]
    if students:
        print("\n".join(discrete_student_table(rows, metric)))
    return students


if __name__ == "__main__":
    main()
