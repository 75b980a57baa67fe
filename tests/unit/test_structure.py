"""The layout rules of docs/ARCHITECTURE.md, checked on the source so they cannot drift.

Each rule reads the code with ``ast`` (nothing is imported), and each failure names the
file and line that breaks it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("catalog", "evaluator", "dashboard")
MAX_FUNCTION_LINES = 80
MAX_POSITIONAL = 8


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every production module."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _where(name: str, node: ast.AST) -> str:
    return f"{MODULES[name].relative_to(REPO)}:{node.lineno}"


def test_evaluator_holds_only_sub_packages():
    loose = sorted(p.name for p in (REPO / "evaluator").glob("*.py") if p.name not in ("__init__.py", "errors.py"))
    assert not loose, f"files directly in evaluator/ (move them into a stage's sub-package): {loose}"


def _imported(name: str, node: ast.AST) -> list[str]:
    """The project modules an import statement loads (a ``from`` of a sub-module counts as it)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                   for alias in node.names]
    else:
        return []
    return [t for t in targets if t in MODULES and t != name]


def _import_graph() -> dict[str, set[str]]:
    """Every import, at module level or inside a function: both run on some path."""
    return {name: {t for node in ast.walk(tree) for t in _imported(name, node)} for name, tree in TREES.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_circle():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    """The check above could pass by finding nothing: show it finds a real circle."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_evaluator_never_imports_dashboard():
    """The dashboard depends on the evaluator; the CLI reaches it only by a lazy string."""
    graph = _import_graph()
    bad = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith(("evaluator", "catalog"))
                 for t in ts if t.startswith("dashboard"))
    assert not bad, bad


def _functions():
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield name, node


def test_functions_are_short():
    long = [f"{_where(n, f)} {f.name}: {f.end_lineno - f.lineno + 1} lines"
            for n, f in _functions() if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)


def test_few_positional_parameters():
    def positional(f: ast.FunctionDef) -> int:
        names = [a.arg for a in f.args.posonlyargs + f.args.args]
        return len([a for a in names if a not in ("self", "cls")])

    many = [f"{_where(n, f)} {f.name}: {positional(f)}" for n, f in _functions() if positional(f) > MAX_POSITIONAL]
    assert not many, f"over {MAX_POSITIONAL} positional parameters (use a config object):\n" + "\n".join(many)


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def _environment_reads(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "getenv" or (node.func.attr in ("get", "setdefault") and _is_environ(node.func.value)):
                yield node
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            yield node


def test_environment_is_read_in_one_module():
    allowed = "evaluator.workspace.settings"
    reads = [_where(n, node) for n, tree in TREES.items() if n != allowed for node in _environment_reads(tree)]
    assert not reads, f"environment read outside {allowed}: {reads}"
    assert "os.environ" in MODULES[allowed].read_text(), "the settings module reads nothing?"


def test_every_stage_module_says_what_it_does():
    missing = [str(MODULES[n].relative_to(REPO)) for n, tree in TREES.items() if not ast.get_docstring(tree)]
    assert not missing, f"modules without a docstring: {missing}"


@pytest.mark.parametrize("function", ["git_revision", "package_versions", "git_rev", "versions", "_fail", "fail"])
def test_one_definition_of_shared_helpers(function):
    defs = [_where(n, f) for n, f in _functions() if f.name == function and f.col_offset == 0]
    assert len(defs) <= 1, f"{function} is defined {len(defs)} times: {defs}"


def test_one_workdir_option():
    """``--workdir`` is a click option declared once (evaluator/cli/options.py); commands share it."""
    places = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            is_click_option = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "option"
            if is_click_option and any(isinstance(a, ast.Constant) and a.value == "--workdir" for a in node.args):
                places.append(_where(name, node))
    assert len(places) == 1, f"--workdir declared in {len(places)} places: {places}"


def test_one_formula_guard():
    """Spreadsheet-formula prefixes are spelled once (catalog/schema.py)."""
    places = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and {"=", "+", "-", "@"} <= {
                e.value for e in node.elts if isinstance(e, ast.Constant)
            }:
                places.append(_where(name, node))
    assert places == [p for p in places if p.startswith("catalog/schema.py")] and len(places) == 1, places


def test_readme_lists_every_environment_variable():
    from evaluator.workspace.settings import VARIABLES

    readme = (REPO / "README.md").read_text()
    names = [name.strip() for key in VARIABLES for name in key.split(",")]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert not missing, f"README's environment table lacks {missing}"
