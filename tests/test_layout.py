"""The shape of the code, checked: the stage layering (import-linter), no import circles, small
files and functions, a clean `ruff check`, and test modules that never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tiny import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "rlaif_code"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# The one function allowed to be longer: PPO's loop reads best as one piece, as CleanRL writes it.
LONG_FUNCTIONS_ALLOWED = {("ppo/stage.py", "train")}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_stages_import_only_what_sits_below_them() -> None:
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(REPO_ROOT / "pyproject.toml"), no_cache=True) == 0


def test_no_module_imports_itself_through_a_circle() -> None:
    import grimp

    graph = grimp.build_graph("rlaif_code", cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert circles == []


def test_source_files_and_functions_stay_small() -> None:
    too_long = []
    for path in _sources():
        relative = path.relative_to(PACKAGE).as_posix()
        lines = path.read_text().splitlines()
        if len(lines) > MAX_FILE_LINES:
            too_long.append(f"{relative}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (relative, node.name) not in LONG_FUNCTIONS_ALLOWED:
                    too_long.append(f"{relative}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src", "tests", "benchmarks"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_test_modules_do_not_import_each_other() -> None:
    tests = REPO_ROOT / "tests"
    names = {path.stem for path in tests.rglob("test_*.py")}
    offenders = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            imported = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                imported = [alias.name.split(".")[0] for alias in node.names]
            offenders += [f"{path.relative_to(tests)} imports {name}" for name in imported if name in names]
    assert offenders == []
