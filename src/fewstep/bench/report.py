"""report.md from results rows: quality-vs-NFE tables with standard errors, acceleration factors, wall clock.

Acceleration factor (docs/benchmarks.md): for a model sampled with k steps, find the teacher NFE N at which
the teacher's best-sampler quality-vs-NFE curve reaches the model's value (log-linear interpolation between
measured NFEs on the primary metric); acceleration = N / k. A model at least as good as the teacher at its
largest NFE (within two standard errors) gets ">= N_max / k".
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

BASELINES = ("data", "teacher", "oracle", "teacher-budget")
"""Reference curves (not few-step models); ``teacher-budget`` is the teacher trained for IMM's wall-clock time."""


def best_curve(rows: list[dict], metric: str, method: str = "teacher",
               process: str | None = None) -> list[tuple[int, float, float, str]]:
    """[(nfe, value, stderr, sampler)] of ``method``'s best sampler at each NFE, sorted by NFE (rows of
    ``process`` only, when given: discrete suites have a masked and a uniform teacher)."""
    by_nfe: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r["method"] == method and r["metric"] == metric and process in (None, r.get("process")):
            by_nfe[r["nfe"]].append(r)
    out = []
    for n in sorted(by_nfe):
        cands = by_nfe[n]
        lower = cands[0]["lower_is_better"]
        best = min(cands, key=lambda r: r["value"] if lower else -r["value"])
        out.append((n, best["value"], best.get("stderr") or 0.0, best["sampler"]))
    return out


def acceleration(curve: list[tuple[int, float, float, str]], value: float, stderr: float, steps: int, *,
                 lower_is_better: bool = True) -> tuple[float, str]:
    """Acceleration N/k of a k-step model against a teacher curve; returns (number, printable string)."""
    if not curve:
        return math.nan, "n/a"
    sign = 1.0 if lower_is_better else -1.0
    n_max, v_max, se_max, _ = curve[-1]
    if sign * (value - v_max) <= 2.0 * math.hypot(stderr, se_max):
        return n_max / steps, f">= {n_max / steps:g}"
    prev = None
    for n, v, _, _ in curve:
        if sign * (v - value) <= 0:  # the teacher reaches the model's value at NFE n
            if prev is None:
                return n / steps, f"<= {n / steps:g}"
            pn, pv = prev
            frac = (value - pv) / (v - pv) if v != pv else 1.0
            nn = math.exp(math.log(pn) + frac * (math.log(n) - math.log(pn)))
            return nn / steps, f"{nn / steps:.3g}"
        prev = (n, v)
    return n_max / steps, f">= {n_max / steps:g}"


def _fmt(v: float | None, se: float | None) -> str:
    if v is None:
        return ""
    s = f"{v:.4g}"
    return s + (f" ± {se:.2g}" if se else "")


def _metric_table(rows: list[dict], metric: str) -> list[str]:
    rs = [r for r in rows if r["metric"] == metric]
    nfes = sorted({r["nfe"] for r in rs if r["method"] != "data"})
    discrete = any(r.get("process") in ("masked", "uniform") for r in rs)

    def key(r: dict) -> tuple:
        return r["method"], r["sampler"], r.get("teacher") or "", r.get("process") if discrete else ""

    keys = sorted({key(r) for r in rs}, key=lambda k: (BASELINES.index(k[0]) if k[0] in BASELINES else 9, k))
    head = "| method | sampler | teacher | " + ("process | " if discrete else "")
    lines = [head + " | ".join(f"NFE {n}" for n in nfes) + " |",
             "|---|---|---|" + ("---|" if discrete else "") + "---|" * len(nfes)]
    for k in keys:
        m = k[0]
        cells = []
        for n in nfes:
            hit = [r for r in rs if key(r) == k and (r["nfe"] == n or m == "data")]
            cells.append(_fmt(hit[0]["value"], hit[0].get("stderr")) if hit else "")
        if m == "data":
            cells = [cells[0]] + ["〃"] * (len(cells) - 1) if cells else []
        lines.append(f"| {m} | {k[1]} | {k[2]} | " + (f"{k[3]} | " if discrete else "") + " | ".join(cells) + " |")
    return lines


def _bases(r: dict, curves: dict[str, list]) -> list[str]:
    """The curves a few-step row is compared with: the oracle's samplers for students of the exact oracle,
    the same-wall-clock teacher (when present) and the trained teacher for models trained from scratch,
    otherwise the trained teacher."""
    if r.get("process") in ("masked", "uniform"):
        return [f"teacher/{r['process']}"]
    if r.get("teacher") == "oracle" and curves["oracle"]:
        return ["oracle"]
    if r.get("teacher") is None and curves["teacher-budget"]:
        return ["teacher-budget"] + (["teacher"] if curves["teacher"] else [])
    return ["teacher"]


def student_table(rows: list[dict], metric: str) -> list[str]:
    """Each few-step model against its reference's best-sampler curve (``_bases``)."""
    students = [r for r in rows if r["metric"] == metric and r["method"] not in BASELINES]
    if not students:
        return []
    curves = {m: best_curve(rows, metric, m) for m in ("teacher", "oracle", "teacher-budget")}
    for proc in {r.get("process") for r in students} & {"masked", "uniform"}:
        curves[f"teacher/{proc}"] = best_curve(rows, metric, "teacher", proc)
    lines = [f"Few-step models vs a reference's best sampler (primary metric `{metric}`; acceleration = reference "
             "NFE reaching the same value / steps; students of the exact oracle are compared with the oracle's "
             "samplers, models trained from scratch with the teacher trained for the same wall-clock time "
             "(`teacher-budget`) and with the full teacher):", "",
             "| method | teacher | sampler | steps | value | vs | reference best @ same NFE | ratio to ref.@max |"
             " acceleration |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(students, key=lambda r: (r["method"], r.get("teacher") or "", r["sampler"], r["steps"])):
        for base in _bases(r, curves):
            curve = curves[base]
            t_max = curve[-1][1] if curve else math.nan
            same = {n: (v, se, s) for n, v, se, s in curve}.get(r["nfe"])
            _, acc = acceleration(curve, r["value"], r.get("stderr") or 0.0, r["steps"],
                                  lower_is_better=r["lower_is_better"])
            ratio = r["value"] / t_max if t_max not in (0.0,) and not math.isnan(t_max) else math.nan
            lines.append(f"| {r['method']} | {r.get('teacher')} | {r['sampler']} | {r['steps']} | "
                         f"{_fmt(r['value'], r.get('stderr'))} | {base} | "
                         f"{_fmt(same[0], same[1]) + ' (' + same[2] + ')' if same else ''} | {ratio:.3g} | {acc} |")
    return lines + [""]


SEQ_LENGTH = {"hmm-v32-l64": 64, "grid2d": 2, "tinyshakespeare-l128": 128}
"""Sequence length L of the discrete benchmark datasets (for tokens per step, L / k)."""


def discrete_student_table(rows: list[dict], metric: str) -> list[str]:
    """Discrete few-step students against their process's teacher curve (docs/benchmarks.md, "Acceleration").

    Columns: tokens per step L / k; the primary value; entropy and its relative difference from the teacher's
    at its largest NFE; the teacher at the same steps; the curve-based acceleration N / k (log-linear
    interpolation; ">= 1024/k" when within 2 SE of the teacher at its largest NFE). A student whose entropy
    differs from the teacher's by more than 2% gets no acceleration (a gain bought with lost diversity), nor does
    one more than 2 SE *better* than real data on a lower-is-better metric with a data row (``oracle_nll``
    below the source's own value means collapsed, over-predictable samples; docs/benchmarks.md).
    """
    students = [r for r in rows if r["metric"] == metric and r["method"] not in BASELINES
                and r.get("process") in ("masked", "uniform")]
    if not students:
        return []
    ent = {(r["method"], r.get("process"), r["sampler"], r["nfe"]): r for r in rows if r["metric"] == "entropy"}
    tv2 = {(r["method"], r.get("process"), r["sampler"], r["nfe"]): r for r in rows if r["metric"] == "ngram_tv2"}
    data = {r.get("dataset"): r for r in rows if r["metric"] == metric and r["method"] == "data"}
    lines = [f"Discrete students vs their process's teacher (primary `{metric}`; entropy within 2% of the "
             "teacher's at its largest NFE, and a value not below real data's, required for an acceleration"
             + ("; bigram TV beside it, teacher's at its largest NFE in brackets" if tv2 else "") + "):", "",
             "| method | process | steps | tokens/step | value | entropy (vs teacher) | "
             + ("bigram TV | " if tv2 else "") + "teacher @ same steps | teacher @ max NFE | acceleration |",
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if tv2 else "")]
    for r in sorted(students, key=lambda r: (r["method"], r["process"], r["steps"])):
        proc = r["process"]
        curve = best_curve(rows, metric, "teacher", proc)
        if not curve:
            continue
        n_max, v_max, se_max, s_max = curve[-1]
        same = {n: (v, se) for n, v, se, _ in curve}.get(r["nfe"])
        _, acc = acceleration(curve, r["value"], r.get("stderr") or 0.0, r["steps"],
                              lower_is_better=r["lower_is_better"])
        e_s, e_t = ent.get((r["method"], proc, r["sampler"], r["nfe"])), ent.get(("teacher", proc, s_max, n_max))
        ent_cell = ""
        if e_s is not None and e_t is not None:
            rel = (e_s["value"] - e_t["value"]) / e_t["value"]
            ent_cell = f"{e_s['value']:.4g} ({rel:+.1%})"
            if abs(rel) > 0.02:
                acc = f"— (entropy {rel:+.1%})"
        floor = data.get(r["dataset"]) if r["lower_is_better"] else None
        if floor is not None and r["value"] < floor["value"] - 2 * math.hypot(floor.get("stderr") or 0.0,
                                                                           r.get("stderr") or 0.0):
            acc = "— (below real data)"
        length = SEQ_LENGTH.get(r.get("dataset", ""), None)
        tps = f"{length / r['steps']:g}" if length else ""
        tv_cell = ""
        if tv2:
            mine, ref = tv2.get((r["method"], proc, r["sampler"], r["nfe"])), tv2.get(("teacher", proc, s_max, n_max))
            tv_cell = (f"{mine['value']:.3g}" if mine else "") + (f" ({ref['value']:.3g})" if ref else "") + " | "
        lines.append(f"| {r['method']} | {proc} | {r['steps']} | {tps} | {_fmt(r['value'], r.get('stderr'))} | "
                     f"{ent_cell} | {tv_cell}{_fmt(*same) if same else ''} | {_fmt(v_max, se_max)} ({n_max}) | "
                     f"{acc} |")
    return lines + [""]


def _clock_table(rows: list[dict], metric: str) -> list[str]:
    rs = [r for r in rows if r["metric"] == metric and r["method"] != "data"]
    lines = ["| method | sampler | NFE | samples/s | sample seconds | train seconds |", "|---|---|---|---|---|---|"]
    for r in sorted(rs, key=lambda r: (r["method"], r.get("process", ""), r["sampler"], r["nfe"])):
        if r.get("process") in ("masked", "uniform"):
            r = {**r, "method": f"{r['method']} ({r['process']})"}
        sps = r.get("samples_per_second")
        ts = r.get("train_seconds")
        lines.append(f"| {r['method']} | {r['sampler']} | {r['nfe']} | {sps:.4g} | {r['sample_seconds']:.3g} | "
                     f"{'' if ts is None else f'{ts:.0f}'} |" if sps else
                     f"| {r['method']} | {r['sampler']} | {r['nfe']} |  | {r['sample_seconds']:.3g} | |")
    return lines


def write_report(rows: list[dict], out: Path, *, command: str = "") -> Path:
    """Write ``out/report.md`` and the quality-vs-NFE figures; returns the report path."""
    from fewstep.bench.plots import quality_vs_nfe

    if not rows:
        raise ValueError("no results to report")
    head = rows[0]
    lines = [f"# fewstep bench `{head['suite']}`", "",
             f"- date: {head.get('date', '')}; device: {head['device']}; git: `{head['git_sha']}`; "
             f"quick: {head['quick']}"]
    if command:
        lines.append(f"- command: `{command}`")
    if head["quick"]:
        lines.append("- **quick run: the numbers are meaningless (pipeline check only)**")
    lines.append("")
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        metrics = list(dict.fromkeys(r["metric"] for r in rs))
        primary = metrics[0]
        lines += [f"## {dataset}", "", f"![quality vs NFE](quality_vs_nfe_{dataset}.png)", ""]
        for m in metrics:
            arrow = "lower is better" if next(r for r in rs if r["metric"] == m)["lower_is_better"] else \
                "higher is better"
            lines += [f"### `{m}` ({arrow}; mean ± standard error over repeats)", ""] + _metric_table(rs, m) + [""]
        discrete = any(r.get("process") in ("masked", "uniform") for r in rs)
        lines += discrete_student_table(rs, primary) if discrete else student_table(rs, primary)
        lines += ["### Wall clock", ""] + _clock_table(rs, primary) + [""]
        quality_vs_nfe(rs, primary, out / f"quality_vs_nfe_{dataset}.png", title=dataset)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
