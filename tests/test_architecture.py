"""The package layout is the architecture: imports run one way, from the math up to the face, and never loop.

The allowed direction is written once, in ``LAYERS`` (lowest first). A module may import modules of its own
layer or of a lower one; an import of a higher layer, or any import cycle between modules (function-level
imports included: a lazy import is still a dependency), fails the test with the offending edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fewstep

ROOT = Path(fewstep.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("rng", "schedules", "weights"),  # math and file formats
    ("processes",),
    ("nets",),
    ("data", "metrics"),  # neither imports methods nor train
    ("denoisers",),
    ("samplers",),
    ("methods",),
    ("train",),
    # the face: configs, builders, policy, bench, CLI
    ("config", "validation"),
    ("build.device", "build.datasets"),
    ("policy",),
    ("presets",),
    ("build.models",),
    ("build.trainers",),
    ("build.pretrained",),
    ("build.distill_config",),
    ("build.runs",),
    ("build.export",),
    ("build.distill",),
    ("build",),
    ("bench",),
    ("demo",),
    ("api",),  # train / distill / load / evaluate
    ("",),  # fewstep/__init__.py: the public API
    ("cli",),
    ("__main__",),
)


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> fewstep modules it imports (relative names, '' = the package), anywhere in its file."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if mod else []
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here if is_pkg else here[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    parent = ".".join(["fewstep", *base, *([node.module] if node.module else [])])
                else:
                    parent = node.module or ""
                names = [f"{parent}.{a.name}" if f"{parent}.{a.name}"[8:] in mods else parent for a in node.names]
            for name in names:
                if name != "fewstep" and not name.startswith("fewstep."):
                    continue
                rel = name[len("fewstep."):] if name != "fewstep" else ""
                while rel not in mods and "." in rel:
                    rel = rel.rsplit(".", 1)[0]
                if rel in mods and rel != mod:
                    targets.add(rel)
        graph[mod] = targets
    return graph


def _rank(mod: str) -> int:
    best, best_len = None, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            hit = mod == prefix or (prefix and mod.startswith(prefix + "."))
            if hit and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    if best is None:
        raise AssertionError(f"module fewstep.{mod} is in no layer: add it to LAYERS")
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for mod in _modules():
        _rank(mod)


def test_no_upward_imports():
    graph = _imports(_modules())
    upward = sorted(f"fewstep.{a or '__init__'} -> fewstep.{b or '__init__'}"
                    for a, bs in graph.items() for b in bs if _rank(b) > _rank(a))
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles = _cycles(_imports(_modules()))
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import_and_a_cycle():
    """The checks can fail: a made-up lower module importing a higher one, and a two-module loop."""
    assert _rank("data.source") < _rank("methods.mm") < _rank("build.runs") < _rank("cli")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    graph = _imports(_modules())
    assert "methods.base" in graph["methods.mm"] and "data.source" in graph["methods.base"]
