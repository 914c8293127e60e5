"""Merge the results.jsonl files of several `fewstep bench` commands of one suite (e.g. one command per method or
step count, sharing --runs-dir) into one file; the `data` rows every command writes are kept once.

    python benchmarks/scripts/merge_results.py OUT.jsonl bench_out/mnist14/*/results.jsonl
    fewstep report --results OUT.jsonl --out REPORT_DIR      # tables, acceleration, quality-vs-NFE figure
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: str, inputs: list[str]) -> None:
    rows, seen = [], set()
    for path in inputs:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = (row["dataset"], row["method"], row.get("teacher"), row["sampler"], row["steps"], row["metric"])
            if key in seen:
                if row["method"] != "data":
                    raise SystemExit(f"{path}: a second row for {key}")
                continue
            seen.add(key)
            rows.append(row)
    Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows from {len(inputs)} files -> {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: merge_results.py OUT.jsonl IN.jsonl [IN.jsonl ...]")
    main(sys.argv[1], sys.argv[2:])
