"""The package's shape stays as it was left: no import runs back up its layers
(`scripts/import_layers.py`), and no function is longer than 60 lines. Both read the source only."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LONGEST_FUNCTION = 60  # lines, decorators and docstring included


def load_import_layers():
    spec = importlib.util.spec_from_file_location("import_layers", REPO / "scripts" / "import_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def long_functions(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > LONGEST_FUNCTION:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_import_runs_back_up_the_layers() -> None:
    upward = load_import_layers().upward_imports(REPO / "distill")
    assert [str(u) for u in upward] == []


def test_every_distill_module_has_a_layer() -> None:
    layers = load_import_layers()
    for path in (REPO / "distill").rglob("*.py"):
        layers.layer_of(layers.unit_of(path))  # raises for a module nobody placed


def test_no_function_is_longer_than_60_lines() -> None:
    assert long_functions(REPO / "distill") == []
