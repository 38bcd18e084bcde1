"""Import layers of src/emofusion: no import cycle between modules, no import from a lower layer to a higher one.

Every ``import`` / ``from ... import`` of an emofusion module counts, at any depth (inside functions too: a
function-level import is still a dependency, only a later one). The layers, bottom first, are :data:`LAYERS`;
modules of one layer may import each other (but not in a cycle). A module that matches no layer fails the test:
put it in the layer it belongs to.

A new top-level module (``emofusion/<name>.py`` or a package ``emofusion/<name>/``) is in no layer until it is listed
in :data:`LAYERS`: the root package ``emofusion`` covers only its own ``__init__``, so nothing lands in the base layer
unnoticed. Modules under a listed package (``emofusion.features.backbones.fer``) are in that package's layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom first. A name covers the module itself and, for a package, every module under it; the root package covers
# only itself (see the module docstring).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "emofusion",
            "emofusion.errors",
            "emofusion.log",
            "emofusion.io",
            "emofusion.packages",
            "emofusion.provenance",
            "emofusion.config",
            "emofusion.device",
            "emofusion.metrics",
            "emofusion.layout",
            "emofusion.repair",
            "emofusion.runlog",
        ),
    ),
    (
        "data and timelines",
        ("emofusion.video", "emofusion.container", "emofusion.corpus", "emofusion.labels", "emofusion.audio"),
    ),
    ("models", ("emofusion.models",)),
    ("asr", ("emofusion.asr",)),
    ("faces", ("emofusion.faces",)),
    ("features", ("emofusion.features",)),
    ("fusion data", ("emofusion.fusion_data",)),
    ("training", ("emofusion.training",)),
    ("evaluation", ("emofusion.evaluation",)),
    ("report", ("emofusion.report",)),
    ("predict", ("emofusion.predict",)),
    ("status", ("emofusion.status",)),
    ("commands", ("emofusion.commands",)),
    ("cli", ("emofusion.cli",)),
]


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported module
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """``{module name: file}`` of every module of ``package`` under ``src`` (a package is its ``__init__``)."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_edges(modules: dict[str, Path], package: str) -> list[Edge]:
    """Every import of a module of ``package`` by a module of ``modules``, at any depth of its file."""
    edges = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the importing module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                # `import pkg.sub.mod` names the deepest module that exists
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and (target == package or target.startswith(package + ".")) and target != name:
                    edges.append(Edge(name, target, path, node.lineno))
    return sorted(set(edges), key=lambda e: (str(e.path), e.line, e.target))


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]], root: str) -> int | None:
    """Index of the layer whose most specific name covers ``module``; None when none does. ``root`` (the package
    checked) covers only itself: were it to cover what lies under it, every unlisted module would be in its layer."""
    best, best_len = None, -1
    for i, (_, names) in enumerate(layers):
        for n in names:
            below = module.startswith(n + ".") and n != root
            if (module == n or below) and len(n) > best_len:
                best, best_len = i, len(n)
    return best


def cycles(modules: Iterable[str], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for e in edges:
        graph[e.source].append(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def problems(src: Path, package: str, layers: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Every layering problem of ``package`` under ``src``, one line each, naming file:line."""
    modules = module_files(src, package)
    edges = import_edges(modules, package)
    out = [
        f"{path}: module {m} is in no layer; add it to LAYERS"
        for m, path in modules.items()
        if layer_of(m, layers, package) is None
    ]
    for e in edges:
        lo, hi = layer_of(e.source, layers, package), layer_of(e.target, layers, package)
        if lo is not None and hi is not None and hi > lo:
            out.append(f"{e}: upward import (layer {layers[lo][0]!r} below {layers[hi][0]!r})")
    for component in cycles(modules, edges):
        members = set(component)
        inside = [str(e) for e in edges if e.source in members and e.target in members]
        out.append("import cycle between " + ", ".join(component) + ":\n    " + "\n    ".join(inside))
    return out


def test_emofusion_has_no_import_cycle_and_no_upward_import():
    found = problems(SRC, "emofusion", LAYERS)
    assert not found, "\n".join(found)


# Packages with an entry module ``<package>.stage``: a command calls a stage only through it.
STAGES = (
    "emofusion.audio",
    "emofusion.faces",
    "emofusion.asr",
    "emofusion.features",
    "emofusion.training",
    "emofusion.evaluation",
    "emofusion.report",
    "emofusion.predict",
)


def test_commands_call_a_stage_only_through_its_entry_module():
    modules = module_files(SRC, "emofusion")
    found = []
    for e in import_edges(modules, "emofusion"):
        command = e.source.startswith("emofusion.commands.") and not e.source.rsplit(".", 1)[1].startswith("_")
        stage = next((s for s in STAGES if e.target.startswith(s + ".") or e.target == s), None)
        if command and stage and e.target != f"{stage}.stage":
            found.append(f"{e}: a command imports {stage}.stage only (re-export what it needs there)")
    for stage in STAGES:
        if f"{stage}.stage" not in modules:
            found.append(f"{stage} has no stage module (src/{stage.replace('.', '/')}/stage.py)")
    assert not found, "\n".join(found)


def test_package_inits_hold_no_logic():
    found = []
    for name, path in module_files(SRC, "emofusion").items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found.append(f"{path}:{node.lineno}: {name} defines {node.name}; move it into a module of the package")
    assert not found, "\n".join(found)


# --- the checker itself -------------------------------------------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


FAKE_LAYERS = [("low", ("pkg", "pkg.low")), ("high", ("pkg.high",))]


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "from pkg.low import b\n",
            "pkg/low/b.py": "def f():\n    from pkg.low.a import g\n    return g\n",
            "pkg/high.py": "",
        },
    )
    found = problems(src, "pkg", FAKE_LAYERS)
    assert len(found) == 1 and found[0].startswith("import cycle between pkg.low.a, pkg.low.b"), found
    assert f"{src / 'pkg/low/b.py'}:2: pkg.low.b imports pkg.low.a" in found[0]
    assert f"{src / 'pkg/low/a.py'}:1: pkg.low.a imports pkg.low.b" in found[0]


def test_checker_finds_an_upward_import_and_names_its_line(tmp_path):
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "import os\n\n\ndef f():\n    import pkg.high\n    return pkg.high\n",
            "pkg/high.py": "from . import low\nfrom .low import b\n",  # downward, relative: fine
            "pkg/low/b.py": "",
        },
    )
    assert problems(src, "pkg", FAKE_LAYERS) == [
        f"{src / 'pkg/low/a.py'}:5: pkg.low.a imports pkg.high: upward import (layer 'low' below 'high')"
    ]


def test_checker_names_a_module_outside_every_layer(tmp_path):
    src = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/stray.py": "", "pkg/high.py": ""})
    assert problems(src, "pkg", [("low", ("pkg", "pkg.stray")), ("high", ("pkg.high",))]) == []
    found = problems(src, "pkg", [("low", ("pkg.high",))])
    assert any("module pkg.stray is in no layer" in p for p in found) and len(found) == 2


def test_the_root_package_does_not_cover_a_new_top_level_module(tmp_path):
    """Listing the root puts its __init__ in a layer, not what lies under it: a new module or package at the top
    is named until it is listed, while a new module inside a listed package is in that package's layer."""
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/backbones/__init__.py": "",
            "pkg/low/backbones/fer.py": "",  # new, inside a listed package
            "pkg/high.py": "",
            "pkg/layout.py": "",  # new, top level
            "pkg/fusion_data/__init__.py": "",  # new, a top-level package
            "pkg/fusion_data/batches.py": "",
        },
    )
    found = problems(src, "pkg", FAKE_LAYERS)
    assert found == [
        f"{src / 'pkg/fusion_data/__init__.py'}: module pkg.fusion_data is in no layer; add it to LAYERS",
        f"{src / 'pkg/fusion_data/batches.py'}: module pkg.fusion_data.batches is in no layer; add it to LAYERS",
        f"{src / 'pkg/layout.py'}: module pkg.layout is in no layer; add it to LAYERS",
    ]
    listed = [("low", (*FAKE_LAYERS[0][1], "pkg.layout", "pkg.fusion_data")), FAKE_LAYERS[1]]
    assert problems(src, "pkg", listed) == []


@pytest.mark.parametrize(
    "line", ["import pkg.low.a", "from pkg.low import a", "from pkg.low.a import f", "from .low import a"]
)
def test_every_import_form_resolves_to_the_module(tmp_path, line):
    src = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low/__init__.py": "",
            "pkg/low/a.py": "f = 1\n",
            "pkg/c.py": f"def g():\n    {line}\n",
        },
    )
    edges = import_edges(module_files(src, "pkg"), "pkg")
    assert [(e.source, e.target, e.line) for e in edges] == [("pkg.c", "pkg.low.a", 2)]
