"""The package's layering: dependencies point one way (docs/architecture.md). Lower layers never import higher
ones, packages of one layer never import each other, and no two modules import each other (directly or in a
ring), function-local imports included."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stablernn"

# layer of each top-level module or package of stablernn; a module may import only strictly lower layers (and its
# own package). Layer 0 holds the leaves, which may use one another as long as no cycle forms.
LAYERS: dict[str, int] = {
    "io": 0, "optim": 0, "figures": 0, "surrogate": 0, "data": 0, "fields": 0, "errors": 0,
    "cells": 1,
    "snn": 2,  # the stability conditions read cells only, so the one builder (models) can apply them
    "inits": 2.5,  # recurrent / chrono / LSUV inits read cells only, so the one builder (models) can apply them
    "models": 3,
    "adapters": 4, "export": 4,
    "lsc": 5, "dynamics": 5,
    "diagnostics": 6,
    "train": 7,
    "sweep": 8,
    "cli": 9,
    # the old paths, re-exporting the new ones for one release, and the package root
    "stability": 10, "experiments": 10, "__init__": 10, "__main__": 10,
}


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = SRC) -> set[str]:
    """Absolute names of the stablernn modules ``path`` imports (anywhere in the file)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("stablernn"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("stablernn"):
                continue
            # "from pkg import submodule" imports the submodule
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if _exists(sub) else mod)
    out.discard(me)
    return out


def _exists(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


GRAPH = {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}


def test_every_module_has_a_layer():
    assert sorted({top(m) for m in GRAPH} - set(LAYERS)) == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_or_sideways_import(module):
    here = top(module)
    bad = [dep for dep in sorted(GRAPH[module]) if top(dep) != here
           and LAYERS[top(dep)] >= LAYERS[here] and not (LAYERS[here] == 0 == LAYERS[top(dep)])]
    assert bad == [], f"{module} (layer {LAYERS[here]}) imports {bad}"


def test_no_import_cycles():
    """Between modules (package __init__ aggregators excluded: they only re-export)."""
    inits = {module_name(p) for p in SRC.rglob("__init__.py")}
    graph = {m: {d for d in deps if d in GRAPH and d not in inits} for m, deps in GRAPH.items() if m not in inits}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*path[path.index(d):], d] if d in path else [m, d])
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_checker_sees_a_violation(tmp_path):
    """The rule itself can fail: a function-local relative import of a higher layer is found."""
    f = tmp_path / "stablernn" / "cells" / "probe.py"
    f.parent.mkdir(parents=True)
    f.write_text("def g():\n    from ..train import fit\n    return fit\n")
    deps = imports_of(f, tmp_path / "stablernn")
    assert "stablernn.train" in deps and LAYERS[top("stablernn.train")] > LAYERS["cells"]
