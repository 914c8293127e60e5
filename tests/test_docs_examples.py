"""The Python examples of the documentation run as written (each method page's "Python" section, tiny lengths).

README's examples: the oracle one runs; the full-length one is checked to compile and to call only public API.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

import fewstep

REPO = Path(__file__).resolve().parents[1]
METHOD_PAGES = sorted((REPO / "docs" / "methods").glob("*.md"))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _page_example(page: Path) -> str:
    section = page.read_text().split("## Python", 1)
    assert len(section) == 2, f"{page.name} has no '## Python' section"
    blocks = _python_blocks(section[1].split("\n## ", 1)[0])
    assert len(blocks) == 1, f"{page.name}: expected one python block in its Python section"
    return blocks[0]


def test_every_method_page_has_an_example():
    names = {p.stem for p in METHOD_PAGES}
    assert {"gaussian-diffusion", "mm", "imm", "masked-diffusion", "uniform-diffusion", "idlm", "dmmd"} <= names
    for page in METHOD_PAGES:
        code = _page_example(page)
        assert "import fewstep" in code and len(code.strip().splitlines()) <= 8, page.name


@pytest.mark.parametrize("page", METHOD_PAGES, ids=lambda p: p.stem)
def test_method_page_example_runs(page: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEWSTEP_DATA", str(tmp_path / "data"))
    scores: list[dict] = []
    evaluate = fewstep.evaluate

    def recording_evaluate(*args, **kwargs):
        scores.append(evaluate(*args, **kwargs))
        return scores[-1]

    monkeypatch.setattr(fewstep, "evaluate", recording_evaluate)
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(_page_example(page), str(page), "exec"), scope)  # noqa: S102  (our own documentation)
    assert capsys.readouterr().out.strip(), "the example prints its metrics"
    assert scores and all(s and all(math.isfinite(v) for v in s.values()) for s in scores)
    models = [v for v in scope.values() if isinstance(v, fewstep.TrainedModel)]
    assert models, "the example builds a model through the public API"
    for m in models:
        assert (tmp_path / m.config.run_dir / "config.json").is_file()


def test_readme_examples():
    blocks = _python_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 2
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102  (the oracle example: no training)
    assert scope["x"].shape == (4096, 8) and scope["x"].dtype == torch.float64
    api = ast.parse(blocks[1])
    calls = {n.func.attr for n in ast.walk(api) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "fewstep"}
    assert calls and calls <= set(fewstep.__all__), calls
