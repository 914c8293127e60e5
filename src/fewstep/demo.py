"""``make demo`` / ``fewstep demo``: train small teachers on built-in data (2-D checkerboard, 8x8 digits),
sample them at several step counts, distill them into 1- and 4-step Moment Matching students (alternating and
instant), train Inductive Moment Matching models from scratch (sampled in 1 and 4 steps), and write an
illustrated report (Markdown + HTML). Text sections train masked (MDLM) teachers on ``grid2d`` and the
``text-hmm`` source (exact likelihood), distill them with IDLM (factorised and latent-mixture students), and,
when Tiny Shakespeare is found (``data.text.find_tinyshakespeare``), train a character-level teacher; samples
and metrics at several step counts.

It reuses the benchmark harness with shorter training and fewer samples, so the demo's numbers are
produced exactly like the benchmark's (but from smaller models; the full runs are on the benchmark pages,
BENCHMARKS.md and benchmarks/*.md).
Later methods add themselves to ``DEMO_METHODS``.
"""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

from fewstep.bench.runner import BenchOptions, run_bench

DEMO_METHODS: tuple[str, ...] = ("teacher", "mm-alternating", "mm-instant", "imm")
DEMO_NFE = (1, 2, 4, 8, 16, 64, 256)
DEMO_STEPS = (1, 4)
"""Steps of the few-step students."""
DISTILL_SCALE = 0.25
"""Fraction of the default distillation length (``DISTILL_TRAIN``) the demo's students train for."""
TEXT_NFE = (1, 4, 16, 64, 256)
"""Steps of the demo's discrete teachers (masked sampling is cached: at most L evaluations per sample)."""


TEXT_SUITES: tuple[tuple[str, tuple[str, ...], tuple[int, ...], float, float, int, int | None], ...] = (
    ("grid2d", ("teacher", "idlm", "idlm-latent", "dmmd"), (1, 2, 4), 0.1, 0.1, 20000, None),
    ("text-hmm", ("teacher", "idlm"), (4, 16), 0.15, 0.1, 1000, None),
    ("text-char", ("teacher",), (), 0.25, 0.1, 200, 400),
)
"""(suite, methods, student steps, teacher train scale, distillation scale, samples, evaluator steps): grid2d
shows the factorised vs the latent-mixture IDLM student and D-MMD students at 1-4 steps; text-hmm a masked IDLM
student."""


def _text_parts(out: Path, *, device: str, quick: bool) -> list[tuple[str, Path]]:
    """The demo's discrete suites: grid2d and text-hmm (masked teacher + IDLM students) and, if its file is
    found, text-char (teacher)."""
    from fewstep.data.text import find_tinyshakespeare

    parts = []
    for suite, methods, steps, scale, dscale, n, evaluator_steps in TEXT_SUITES:
        if suite == "text-char":
            try:
                find_tinyshakespeare()
            except FileNotFoundError as e:
                print(f"[demo] skipping text-char: {e}")
                continue
        opts = BenchOptions(suite=suite, methods=methods, teacher_nfe=TEXT_NFE if not quick else (1, 16),
                            steps=steps if not quick else steps[:1], quick=quick, device=device,
                            out=str(out / suite), processes=("masked",), repeats=1, min_repeats=1,
                            n_samples=None if quick else n, runs_dir=str(out / "runs"), train_scale=scale,
                            distill_scale=dscale, evaluator_steps=evaluator_steps,
                            command=f"fewstep demo --out {out}")
        run_bench(opts)
        parts.append((suite, out / suite / "report.md"))
    return parts


def run_demo(out: Path, *, device: str = "auto", quick: bool = False) -> Path:
    """Run the demo into ``out``; returns the path of ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    parts = []
    for suite, datasets, scale in (("toy", ("checkerboard2d",), 0.4), ("digits", ("digits8x8",), 0.35)):
        opts = BenchOptions(suite=suite, methods=DEMO_METHODS, teacher_nfe=DEMO_NFE if not quick else (1, 4, 16),
                            steps=DEMO_STEPS, quick=quick, device=device, out=str(out / suite), datasets=datasets,
                            repeats=2, repeat_budget=128, min_repeats=1, runs_dir=str(out / "runs"),
                            train_scale=scale, distill_scale=DISTILL_SCALE, command=f"fewstep demo --out {out}")
        run_bench(opts)
        parts.append((suite, out / suite / "report.md"))
    parts += _text_parts(out, device=device, quick=quick)
    md = [f"# fewstep demo ({time.perf_counter() - t0:.0f} s)", "",
          "Small Gaussian diffusion teachers trained on built-in data, sampled with ancestral and DDIM samplers "
          "at 1-256 network evaluations (NFE), then distilled into 1- and 4-step students by Moment Matching "
          "(mm-alternating: with an auxiliary denoiser; mm-instant: parameter-space JVP through the teacher); "
          "imm is Inductive Moment Matching, a few-step model trained from scratch without a teacher "
          "(pushforward and restart samplers). "
          "Fewer teacher steps are faster but worse; the students close that gap (see the acceleration table). "
          "The text sections train masked discrete diffusion (MDLM) teachers: on text-hmm the oracle NLL is the "
          "exact negative log-likelihood per token under the true source (its own samples give the `data` row), on "
          "text-char GenPPL is scored by a small character model trained here (fewer steps than the benchmark's). "
          "idlm students are IDLM inverse distillations of the masked teachers (one student serves every step "
          "count); idlm-latent adds a latent-noise input, so that even one step can represent the correlated grid2d "
          "table (a factorised one-step sampler cannot go below TV 0.414). "
          "Full-size numbers: BENCHMARKS.md.", ""]
    for suite, path in parts:
        text = path.read_text()
        text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m, s=suite: f"![{m.group(1)}]({s}/{m.group(2)})", text)
        md += [text.replace("# fewstep bench", "## suite"), ""]
        for png in sorted((out / suite).glob("samples_*_*.png")):
            md.append(f"![{png.stem}]({suite}/{png.name})")
        for txt in sorted((out / suite).glob("samples_*_*.txt"), key=_steps_of):
            md += [f"#### {txt.stem}", "", *[f"    {line}" for line in txt.read_text().splitlines()[:14]], ""]
        md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n")
    report = out / "report.html"
    report.write_text(_to_html("\n".join(md)))
    return report


def _steps_of(path: Path) -> tuple[str, int]:
    head, _, k = path.stem.rpartition("_")
    return head, int(k) if k.isdigit() else 0


def _to_html(md: str) -> str:
    """A minimal Markdown -> HTML (headers, tables, images, lists, paragraphs) for the demo report."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not re.match(r"^\|[-| ]+\|$", r)]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("    "):
            flush_table()
            body.append(f"<pre>{html.escape(line[4:])}</pre>")
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        img = re.match(r"!\[([^\]]*)\]\(([^)]+)\)", line)
        if img:
            body.append(f'<img src="{html.escape(img.group(2))}" alt="{html.escape(img.group(1))}" '
                        'style="max-width:45%;margin:4px">')
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 4)
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>fewstep demo</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"
