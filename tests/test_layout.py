"""The house rules of src/hmsa, read from the code: what each room may import, thin nodes,
short functions. docs/layout.md explains the rooms."""

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "hmsa"
#: the library: no Kedro, nothing of the Kedro project, the pipelines or the command line
LIBRARY = ("data", "models", "training", "autolabel", "evaluation", "runtime", "io")
#: what each room may import from hmsa besides itself (None: anything)
ALLOWED = {
    "models": (),
    "runtime": (),
    "io": (),
    "data": ("io", "runtime"),
}
NODE_LINES, FUNCTION_LINES = 15, 60


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).parts


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, leaving out ``if TYPE_CHECKING:`` blocks (annotations only)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
               and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
               for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hmsa" and len(parts) > 1 else None


def test_the_library_imports_no_kedro_and_each_room_only_what_it_may():
    broken = []
    for path, parts in _modules():
        room = parts[0] if len(parts) > 1 else None
        if room not in LIBRARY:
            continue
        for module in _imports(path):
            top, other = module.split(".")[0], _room(module)
            if top.startswith("kedro"):
                broken.append(f"{'/'.join(parts)} imports {module}: the library imports no Kedro")
            if other in ("pipelines", "project", "commands", "pipeline_registry", "settings"):
                broken.append(f"{'/'.join(parts)} imports {module}: the library is below the Kedro project")
            if room in ALLOWED and other and other != room and other not in ALLOWED[room]:
                broken.append(f"{'/'.join(parts)} imports {module}: {room}/ may import {ALLOWED[room] or 'nothing'}")
    assert not broken, "\n".join(broken)


def _body_lines(fn: ast.FunctionDef) -> int:
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_nodes_are_thin():
    """A node reads what the catalog gives it, makes a library call, returns what it stores."""
    files = sorted((PACKAGE / "pipelines").rglob("nodes.py")) + [PACKAGE / "pipelines" / "_training.py"]
    thick = [f"{path.relative_to(PACKAGE)}::{fn.name} has {_body_lines(fn)} lines"
             for path in files for fn in ast.parse(path.read_text()).body
             if isinstance(fn, ast.FunctionDef) and not fn.name.startswith("_") and _body_lines(fn) > NODE_LINES]
    assert not thick, "\n".join(thick)


@pytest.mark.parametrize("room", [*LIBRARY, "mlops", "project", "commands", "bench"])
def test_no_function_is_longer_than_a_screen(room):
    long = [f"{path.relative_to(PACKAGE)}::{fn.name} has {_body_lines(fn)} lines"
            for path in sorted((PACKAGE / room).rglob("*.py")) for fn in ast.walk(ast.parse(path.read_text()))
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(fn) > FUNCTION_LINES]
    assert not long, "\n".join(long)


def test_every_module_lives_in_a_room():
    """At the package root only Kedro's entry points (and the name stored models import)."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "__main__.py", "pipeline_registry.py", "serving.py", "settings.py"]
