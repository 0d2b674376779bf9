"""The package's shape: subpackages in layers, each importing only its own layer's modules and the layers below it,
no import cycle between modules (at parse time or at import time), and a public API that is the functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthaug"
# Bottom first. A module may import from its own subpackage and from the ones before it, never from one after it.
LAYERS = ["core", "recipe", "storage", "data", "classifier", "reference", "diffusion", "generation", "auditing",
          "sharing", "evaluation", "study", "cli"]
PUBLIC = ("fit", "generate", "evaluate", "audit", "experiment", "sweep")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def synthaug_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The synthaug modules a module imports, at top level or inside functions: `import synthaug.x.y`,
    `from synthaug.x.y import z`, `from synthaug.x import y` (synthaug.x.y when that is a module, else synthaug.x) and
    `import synthaug`. Imports inside a module-level `__getattr__` (the package's lazy public API) are left out."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and node in tree.body:
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "synthaug")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"relative import at line {node.lineno}: write `from synthaug.x import ...`")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "synthaug":
            found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the synthaug modules it imports (itself left out)."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in paths}
    return {module_name(p, package): synthaug_imports(ast.parse(p.read_text(), str(p)), modules) - {module_name(p, package)}
            for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], each module imported by the one before it; None when there is none."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def layer_of(module: str) -> int | None:
    """The layer of a module (synthaug.<layer>...); None for the package's own __init__ and __main__."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for every import of a module from a higher layer than the importer's (or of the top package)."""
    bad = []
    for module, deps in graph.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if (dep == "synthaug" and module != "synthaug.cli") or (theirs is not None and theirs > mine):
                bad.append(f"{module} -> {dep}")
    return sorted(bad)


def test_every_subpackage_is_a_layer_with_a_docstring():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(folders + ["cli"]) == sorted(LAYERS), "a new subpackage needs its place in LAYERS"
    for folder in folders:
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())), f"{folder}/__init__.py: say what it owns"
    # a subpackage named like a public function would be rebound to the module whenever it is imported
    assert not set(folders) & set(PUBLIC)


def test_imports_point_down_with_no_cycle():
    graph = import_graph()
    unknown = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if d not in graph)
    assert not unknown, f"imports of modules that do not exist: {unknown}"
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)} (each module imports the next)"
    assert upward_imports(graph) == [], "imports from a higher layer"
    assert graph["synthaug.core.errors"] == set()


def test_the_checks_see_every_import_form_and_fail_on_a_planted_cycle_and_an_upward_import(tmp_path):
    modules = {"synthaug", "synthaug.data", "synthaug.data.synthetic", "synthaug.auditing.audit", "synthaug.reference.metrics"}
    tree = ast.parse(
        "import numpy, synthaug\n"
        "from synthaug.data import synthetic, __doc__\n"
        "def f():\n    import synthaug.auditing.audit\n    from synthaug.reference.metrics import prdc\n"
        "def __getattr__(name):\n    from synthaug.evaluation import evaluate\n"
    )
    assert synthaug_imports(tree, modules) == {"synthaug", "synthaug.data.synthetic", "synthaug.data",
                                               "synthaug.auditing.audit", "synthaug.reference.metrics"}
    package = tmp_path / "synthaug"
    for folder in ("core", "data", "study"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text('"""x"""\n')
    (package / "__init__.py").write_text("def __getattr__(name):\n    from synthaug.study import a\n    return a\n")
    (package / "study" / "a.py").write_text("from synthaug.data.b import x\n")
    (package / "data" / "b.py").write_text("from synthaug.core.errors import UserError\n\ndef x():\n    from synthaug.data import c\n")
    (package / "data" / "c.py").write_text("import synthaug.study.a\n")  # data -> study: upward, and closes a cycle
    (package / "core" / "errors.py").write_text("class UserError(Exception):\n    pass\n")
    graph = import_graph(package)
    cycle = find_cycle(graph)
    assert cycle is not None and len(cycle) == 4 and cycle[0] == cycle[-1]
    assert " -> ".join(cycle) in " -> ".join(["synthaug.study.a", "synthaug.data.b", "synthaug.data.c"] * 3)
    assert upward_imports(graph) == ["synthaug.data.c -> synthaug.study.a"]
    assert upward_imports(import_graph()) == []


def test_the_public_api_is_the_functions():
    import synthaug

    for name in PUBLIC:
        assert callable(getattr(synthaug, name)) and not isinstance(getattr(synthaug, name), type(synthaug)), name
    import synthaug.generation.generate  # noqa: F401  importing the module must not rebind the public name

    assert synthaug.generate.__module__ == "synthaug.generation.generate" and callable(synthaug.generate)


@pytest.mark.slow
def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """Highest modules first, each imported with no synthaug module loaded: an import-time cycle fails, naming the
    module. `synthaug.__main__` is left out: importing it runs the CLI."""
    graph = import_graph()
    try:
        order = list(TopologicalSorter(graph).static_order())[::-1]  # dependents before their dependencies
    except CycleError:  # reported by test_imports_point_down_with_no_cycle; still try every module
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
