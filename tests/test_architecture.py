"""The layout holds: no import cycle between kopt's packages and top-level modules (lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

KOPT = Path(__file__).resolve().parents[1] / "kopt"


def _unit(module: str) -> str | None:
    """``kopt.X`` for any module inside package or module ``X`` (None for names outside kopt)."""
    parts = module.split(".")
    if parts[0] != "kopt" or len(parts) < 2:
        return None
    name = parts[1]
    return f"kopt.{name}" if (KOPT / name).is_dir() or (KOPT / f"{name}.py").is_file() else None


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in KOPT.rglob("*.py"):
        module = ".".join(path.relative_to(KOPT.parent).with_suffix("").parts).removesuffix(".__init__")
        source = _unit(module)
        if source is None:
            continue  # kopt/__init__.py: the public face imports everything
        graph.add_node(source)
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                unit = _unit(target)
                if unit is not None and unit != source:
                    graph.add_edge(source, unit)
    return graph


def test_no_import_cycle_between_packages():
    graph = import_graph()
    assert {"kopt.core", "kopt.metrics", "kopt.policy", "kopt.graph", "kopt.export"} <= set(graph)
    assert list(nx.simple_cycles(graph)) == []


def test_the_floor_imports_nothing_above_it():
    graph = import_graph()
    assert set(graph.successors("kopt.core")) == set()
    assert set(graph.successors("kopt.graph")) <= {"kopt.core"}
    assert set(graph.successors("kopt.technique")) <= {"kopt.core", "kopt.graph"}
    assert set(graph.successors("kopt.metrics")) <= {"kopt.core"}


def test_the_root_holds_only_the_entry_points():
    """Everything else lives in a package that names its layer."""
    modules = sorted(path.stem for path in KOPT.glob("*.py"))
    assert modules == ["__init__", "api", "cli", "metrics", "registration"]


def test_private_keras_apis_are_used_in_one_module():
    """A Keras release that moves a private name breaks one file, ``kopt/core/keras_compat.py``."""
    users = sorted(
        str(path.relative_to(KOPT))
        for path in KOPT.rglob("*.py")
        if "keras.src" in path.read_text() and path.name != "keras_compat.py"
    )
    assert users == []


def test_every_error_and_warning_class_is_defined_in_one_module():
    """``kopt/core/errors.py`` holds the whole family (the CLI's internal usage error aside)."""
    elsewhere = sorted(
        f"{path.relative_to(KOPT)}:{node.name}"
        for path in KOPT.rglob("*.py")
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Warning"))
    )
    assert elsewhere == ["cli.py:UsageError"]
