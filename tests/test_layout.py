"""The package reads as the pipeline: no import cycles, and no layer imports a later one."""

from __future__ import annotations

import ast
from pathlib import Path

import autotune

PACKAGE = Path(autotune.__file__).parent
# Pipeline order: a module may import only from its own layer or an earlier one.
LAYERS = ["errors", "interrupts", "budget_text", "config", "paths", "load", "rank", "trial"]
LAYERS += ["search", "results", "api", "cli"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("autotune", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every autotune module ``path`` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autotune"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("autotune.")}
    return out


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def test_no_module_imports_a_later_layer() -> None:
    upward = [
        f"{name} -> {target}"
        for name, path in _modules().items()
        if name != "autotune"
        for target in _imports(path)
        if target != "autotune" and _layer(target) > _layer(name)
    ]
    assert upward == []


def test_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: {t for t in _imports(p) if t in modules} for name, p in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return [*path, name, target]
            if target not in state and (cycle := visit(target, [*path, name])):
                return cycle
        state[name] = 2
        return None

    cycles = [c for name in sorted(graph) if name not in state and (c := visit(name, []))]
    assert cycles == []


def test_every_subpackage_says_what_it_owns() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init} has no docstring"


def test_modules_stay_small() -> None:
    # cli.py holds the option declarations of every command together.
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    big = {name: n for name, n in sizes.items() if n > 340 and name != "cli.py"}
    assert big == {}
