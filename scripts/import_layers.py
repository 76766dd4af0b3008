"""Count the imports inside distill that run back up its layers.

distill's packages stand in layers, each allowed to import only from its own layer and the ones below:
the data flow of the pipeline (spec -> providers -> prompts -> synthesis -> review -> train -> evaluate
-> release), then what is built on a finished run (serving, cold start), the stage runner, the service
and the command line. An import from a lower layer into a higher one is "upward": it makes the lower
package depend on everything above it, and it is how cycles start.

    python scripts/import_layers.py          # list every upward import; exit 1 when there is one
    python scripts/import_layers.py --count  # print only the number
    python scripts/import_layers.py --inside # also count distill imports made inside functions, outside the CLI

The command line's lazy imports (inside functions, for `distill --help`'s start-up time) are counted
like any other: the CLI is the top layer, so they are never upward.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "distill"

# Lowest first. A unit is a top-level module or package of distill.
LAYERS: list[set[str]] = [
    {"__init__", "__main__", "errors", "quiet", "threads", "files", "paths", "located_yaml", "sandbox", "signing", "scanning",
     "conversation"},
    {"spec", "spec_refs", "keys", "lineage", "runlock", "reports", "student_plan"},
    {"providers"},
    {"rundir", "prompts"},
    {"synthesis"},
    {"review"},
    {"train"},
    {"evaluate"},
    {"release"},
    {"validate", "stages", "starter"},
    {"scale"},
    {"stage_table"},
    {"serving"},
    {"coldstart"},
    {"pipeline"},
    {"service"},
    {"cli"},
]
TOP = {"__main__"}  # the entry point may import the command line


@dataclass(frozen=True)
class Upward:
    file: str
    line: int
    imported: str
    importer_layer: int
    imported_layer: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.imported} (layer {self.importer_layer} -> {self.imported_layer})"


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(f"distill.{unit} is in no layer: add it to LAYERS in {Path(__file__).name}")


def unit_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every distill module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "distill":
            names = [f"distill.{a.name}" for a in node.names] if node.module == "distill" else [node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "distill"]
    return found


def upward_imports(package: Path = PACKAGE) -> list[Upward]:
    found = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(path)
        if unit in TOP:
            continue
        here = layer_of(unit)
        for line, name in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            parts = name.split(".")
            if len(parts) < 2 or parts[1] == "__version__" or parts[1] == unit:
                continue
            there = layer_of(parts[1])
            if there > here:
                found.append(Upward(path.relative_to(package.parent).as_posix(), line, name, here, there))
    return found


def imports_inside_functions(package: Path = PACKAGE) -> int:
    """distill imports made inside a function body, the CLI's (deliberately lazy, for start-up time) excepted."""
    count = 0
    for path in package.rglob("*.py"):
        if unit_of(path) in ("cli", "__main__"):
            continue
        inside = {}  # each import statement once, however deeply its functions nest
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update({id(n): n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))})
        count += sum(len(imported_modules(n)) for n in inside.values())
    return count


def main(argv: list[str]) -> int:
    found = upward_imports()
    if "--inside" in argv:
        print(f"{imports_inside_functions()} distill import(s) inside functions outside the CLI", file=sys.stderr)
    if "--count" in argv:
        print(len(found))
    else:
        for upward in found:
            print(upward)
        print(f"{len(found)} upward import(s)", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
