"""The package's shape: modules import only downwards (no cycle, at parse time or at import time) and stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"
MAX_LINES = 350


def module_name(path: Path) -> str:
    return "synthaug" if path.name == "__init__.py" else f"synthaug.{path.stem}"


def synthaug_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The synthaug modules a module imports, at top level or inside functions: `import synthaug.x`,
    `from synthaug.x import y`, `from synthaug import x` (synthaug.x when x is one of `modules`, else the package)
    and `import synthaug`. Imports inside a module-level `__getattr__` (the package's lazy re-export) are left out."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and node in tree.body:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "synthaug")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"relative import at line {node.lineno}: write `from synthaug.x import ...`")
        elif isinstance(node, ast.ImportFrom) and node.module == "synthaug":
            found.update(f"synthaug.{a.name}" if f"synthaug.{a.name}" in modules else "synthaug" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "synthaug":
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the synthaug modules it imports (itself left out)."""
    paths = sorted(package.glob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): synthaug_imports(ast.parse(p.read_text(), str(p)), modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], each module imported by the one before it; None when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    unknown = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if d not in graph)
    assert not unknown, f"imports of modules that do not exist: {unknown}"
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)} (each module imports the next)"
    # The bottom layers import no stage.
    stages = {"synthaug.train", "synthaug.generate", "synthaug.evaluate", "synthaug.audit", "synthaug.experiment", "synthaug.cli"}
    assert graph["synthaug.errors"] == set()
    assert not (graph["synthaug.config"] | graph["synthaug.recipe"] | graph["synthaug.rundir"] | graph["synthaug.runtime"]) & stages


def test_the_import_parser_sees_every_form_and_reports_a_planted_cycle(tmp_path):
    modules = {"synthaug", "synthaug.dataset", "synthaug.audit", "synthaug.metrics", "synthaug.evaluate"}
    tree = ast.parse(
        "import numpy, synthaug\n"
        "from synthaug import dataset, __version__\n"
        "def f():\n    import synthaug.audit\n    from synthaug.metrics import prdc\n"
        "def __getattr__(name):\n    from synthaug import evaluate\n"
    )
    assert synthaug_imports(tree, modules) == {"synthaug", "synthaug.dataset", "synthaug.audit", "synthaug.metrics"}
    package = tmp_path / "synthaug"
    package.mkdir()
    (package / "__init__.py").write_text("def __getattr__(name):\n    from synthaug import a\n    return a\n")
    (package / "a.py").write_text("from synthaug.b import x\n")
    (package / "b.py").write_text("from synthaug.errors import UserError\n\ndef x():\n    from synthaug import c\n")
    (package / "c.py").write_text("import synthaug.a\n")
    (package / "errors.py").write_text("class UserError(Exception):\n    pass\n")
    cycle = find_cycle(import_graph(package))
    assert cycle is not None and len(cycle) == 4 and cycle[0] == cycle[-1]
    assert " -> ".join(cycle) in " -> ".join(["synthaug.a", "synthaug.b", "synthaug.c"] * 3)


def test_no_module_is_too_long():
    lengths = {p.name: len(p.read_text().splitlines()) for p in sorted(PACKAGE.glob("*.py"))}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}; split the module by what it does"


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Highest modules first, each imported with no synthaug module loaded: an import-time cycle fails, naming the
    module. `synthaug.__main__` is left out: importing it runs the CLI."""
    graph = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())[::-1]  # dependents before their dependencies
    except CycleError:  # reported by test_the_import_graph_has_no_cycle; still try every module
        order = sorted(graph)
    order.remove("synthaug.__main__")
    script = (
        "import importlib, sys, traceback\n"
        f"for name in {order!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'synthaug' or m.startswith('synthaug.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        print(f'import {name} failed:\\n{traceback.format_exc()}')\n"
        "        sys.exit(1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
