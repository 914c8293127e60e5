"""``make demo`` / ``fewstep demo`` (minutes): the main job on built-in data. A small diffusion teacher on the 2-D
checkerboard, a Moment Matching student distilled from it (1 and 4 steps), an Inductive Moment Matching model
trained from scratch (1 and 4 steps), one side-by-side picture (teacher at 1 / 4 / 64 steps vs the students) and
the quality-vs-NFE plot, plus one text example (a masked discrete teacher on the ``text-hmm`` source, exact
likelihood, at 4 and 16 steps); an illustrated report (Markdown + HTML).

``make demo-full`` / ``fewstep demo --full`` (about half an hour on 2 cores): the tour of every suite: teachers
on the checkerboard and 8x8 digits, both MM variants and IMM at 1 and 4 steps, masked teachers on ``grid2d``
and ``text-hmm`` with IDLM (factorised and latent-mixture) and D-MMD students, and, when Tiny Shakespeare is
found (``data.text.find_tinyshakespeare``), a character-level teacher.

Both reuse the benchmark harness with shorter training and fewer samples, so the demo's numbers are
produced exactly like the benchmark's (but from smaller models; the full runs are on the benchmark pages,
BENCHMARKS.md and benchmarks/*.md).
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


SHORT_TOY = dict(methods=("teacher", "mm-alternating", "imm"), teacher_nfe=(1, 4, 64), steps=(1, 4),
                 train_scale=0.25, distill_scale=0.25, imm_scale=0.1)
"""The short demo's checkerboard run: bench methods, teacher NFE, student steps and length scales (teacher,
distillation, IMM)."""
SHORT_TEXT = dict(train_scale=0.06, teacher_nfe=(4, 16), n_samples=500)
"""The short demo's text example: a masked teacher on text-hmm."""
PANELS = (("teacher-ancestral_1", "teacher, 1 step"), ("teacher-ancestral_4", "teacher, 4 steps"),
          ("teacher-ancestral_64", "teacher, 64 steps"), ("mm-alternating-trained_1", "MM student, 1 step"),
          ("mm-alternating-trained_4", "MM student, 4 steps"), ("imm-pushforward_1", "IMM, 1 step"),
          ("imm-restart_4", "IMM, 4 steps"))
"""The side-by-side picture: (sample figure stem after ``samples_<dataset>_``, title)."""


def run_demo(out: Path, *, device: str = "auto", quick: bool = False, full: bool = False) -> Path:
    """Run the demo (``full``: the tour of every suite) into ``out``; returns the path of ``report.html``."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if full:
        parts = _tour(out, device=device, quick=quick)
        intro = TOUR_INTRO
    else:
        parts = _short(out, device=device, quick=quick)
        intro = SHORT_INTRO
    md = [f"# fewstep demo ({time.perf_counter() - t0:.0f} s)", "", intro, ""]
    if not full:
        md += ["![teacher vs few-step models](side_by_side.png)", ""]
    for suite, path in parts:
        text = path.read_text()
        text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m, s=suite: f"![{m.group(1)}]({s}/{m.group(2)})", text)
        md += [text.replace("# fewstep bench", "## suite"), ""]
        if full:
            for png in sorted((out / suite).glob("samples_*_*.png")):
                md.append(f"![{png.stem}]({suite}/{png.name})")
        for txt in sorted((out / suite).glob("samples_*_*.txt"), key=_steps_of):
            md += [f"#### {txt.stem}", "", *[f"    {line}" for line in txt.read_text().splitlines()[:14]], ""]
        md.append("")
    (out / "report.md").write_text("\n".join(md) + "\n")
    report = out / "report.html"
    report.write_text(_to_html("\n".join(md)))
    return report


SHORT_INTRO = ("A small Gaussian diffusion teacher trained on the built-in 2-D checkerboard, sampled at 1, 4 and 64 "
               "network evaluations (NFE); a Moment Matching student distilled from it (mm-alternating, 1 and 4 "
               "steps); an Inductive Moment Matching model trained from scratch without a teacher (imm, 1 and 4 "
               "steps). The picture compares them side by side; fewer teacher steps are faster but worse, the "
               "few-step models close that gap (quality-vs-NFE plot and acceleration table below). The text example "
               "is a masked discrete diffusion (MDLM) teacher on the text-hmm source, whose oracle NLL is the exact "
               "negative log-likelihood per token under the true source. `make demo-full` tours every method and "
               "suite; full-size numbers: BENCHMARKS.md.")
TOUR_INTRO = ("Small Gaussian diffusion teachers trained on built-in data, sampled with ancestral and DDIM samplers "
              "at 1-256 network evaluations (NFE), then distilled into 1- and 4-step students by Moment Matching "
              "(mm-alternating: with an auxiliary denoiser; mm-instant: parameter-space JVP through the teacher); "
              "imm is Inductive Moment Matching, a few-step model trained from scratch without a teacher "
              "(pushforward and restart samplers). "
              "Fewer teacher steps are faster but worse; the students close that gap (see the acceleration table). "
              "The text sections train masked discrete diffusion (MDLM) teachers: on text-hmm the oracle NLL is the "
              "exact negative log-likelihood per token under the true source (its own samples give the `data` row), "
              "on text-char GenPPL is scored by a small character model trained here (fewer steps than the "
              "benchmark's). idlm students are IDLM inverse distillations of the masked teachers (one student serves "
              "every step count); idlm-latent adds a latent-noise input, so that even one step can represent the "
              "correlated grid2d table (a factorised one-step sampler cannot go below TV 0.414). "
              "Full-size numbers: BENCHMARKS.md.")


def _short(out: Path, *, device: str, quick: bool) -> list[tuple[str, Path]]:
    """The short demo's bench runs (checkerboard: teacher, MM student, IMM; text-hmm: a masked teacher) and the
    side-by-side picture."""
    toy = SHORT_TOY
    opts = BenchOptions(suite="toy", methods=toy["methods"], teacher_nfe=toy["teacher_nfe"], steps=toy["steps"],
                        samplers=("ancestral",), quick=quick, device=device, out=str(out / "toy"),
                        datasets=("checkerboard2d",), repeats=2, repeat_budget=128, min_repeats=1,
                        runs_dir=str(out / "runs"), train_scale=toy["train_scale"],
                        distill_scale=toy["distill_scale"], imm_scale=toy["imm_scale"],
                        command=f"fewstep demo --out {out}")
    run_bench(opts)
    side_by_side(out / "toy", "checkerboard2d", out / "side_by_side.png")
    text = SHORT_TEXT
    hmm = BenchOptions(suite="text-hmm", methods=("teacher",), teacher_nfe=text["teacher_nfe"] if not quick else (4,),
                       quick=quick, device=device, out=str(out / "text-hmm"), processes=("masked",), repeats=1,
                       min_repeats=1, n_samples=None if quick else text["n_samples"], runs_dir=str(out / "runs"),
                       train_scale=text["train_scale"], command=f"fewstep demo --out {out}")
    run_bench(hmm)
    return [("toy", out / "toy" / "report.md"), ("text-hmm", out / "text-hmm" / "report.md")]


def side_by_side(folder: Path, dataset: str, path: Path) -> Path:
    """One row of the ``PANELS`` sample figures the bench wrote into ``folder`` (missing ones are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    panels = [(folder / f"samples_{dataset}_{stem}.png", title) for stem, title in PANELS]
    panels = [(p, t) for p, t in panels if p.exists()]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(2.6 * max(len(panels), 1), 2.9))
    for ax, (png, title) in zip(list(getattr(axes, "flat", [axes])), panels):
        img = mpimg.imread(png)
        ax.imshow(img, **({"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tour(out: Path, *, device: str, quick: bool) -> list[tuple[str, Path]]:
    """The full tour: checkerboard and digits (teacher, both MM variants, IMM) and the text suites."""
    parts = []
    # IMM on digits at a ninth of its preset's length (the preset is 4x longer and 1.5x wider than the teacher's)
    for suite, datasets, scale, imm_scale in (("toy", ("checkerboard2d",), 0.4, 0.4),
                                              ("digits", ("digits8x8",), 0.35, 0.09)):
        opts = BenchOptions(suite=suite, methods=DEMO_METHODS, teacher_nfe=DEMO_NFE if not quick else (1, 4, 16),
                            steps=DEMO_STEPS, quick=quick, device=device, out=str(out / suite), datasets=datasets,
                            repeats=2, repeat_budget=128, min_repeats=1, runs_dir=str(out / "runs"),
                            train_scale=scale, distill_scale=DISTILL_SCALE, imm_scale=imm_scale,
                            command=f"fewstep demo --full --out {out}")
        run_bench(opts)
        parts.append((suite, out / suite / "report.md"))
    return parts + _text_parts(out, device=device, quick=quick)


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
