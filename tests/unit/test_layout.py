"""The layout stays as README's table says: imports point schemas <- detectors <- retrainer <- streams, without cycles.

Imports inside functions count: hiding one there is how a cycle usually creeps back in.  Also checked: no long
functions, and each statistic or helper that once had copies has one home.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "detectors", "retrainer", "streams")
RANK = {package: rank for rank, package in enumerate(PACKAGES)}
MAX_FUNCTION_LINES = 120
# Declarative tables, not logic: one metric definition after another.
LONG_TABLES = {("streams.metrics", "WorkerMetrics.__init__")}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _imports(path: Path) -> Iterator[str]:
    """Every project module ``path`` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` names a module too.
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (name for name in candidates if name in MODULES)


GRAPH = {module: set(_imports(path)) - {module} for module, path in MODULES.items()}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def test_no_import_points_against_the_layers() -> None:
    upward = [f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
              if RANK[target.split(".")[0]] > RANK[module.split(".")[0]]]
    assert upward == []


def test_no_module_imports_itself_back() -> None:
    # Package __init__ files re-export their modules, so they are left out: a module importing a sibling by its
    # full name is not a cycle through the package.
    graph = {m: {t for t in targets if not _is_package(t)} for m, targets in GRAPH.items() if not _is_package(m)}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join((*path, start)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*path, nxt)))
    assert cycles == []


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    """The graph reads imports inside functions (a check that misses them cannot fail)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from detectors.ingest.join import OutcomeJoiner\n    import schemas.events\n")
    assert set(_imports(module)) == {"detectors.ingest.join", "schemas.events"}


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                assert node.end_lineno is not None
                yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")


def test_no_function_is_longer_than_a_screenful() -> None:
    long = [f"{module}.{name}: {n} lines" for module, path in MODULES.items()
            for name, n in _functions(ast.parse(path.read_text()))
            if n > MAX_FUNCTION_LINES and (module, name) not in LONG_TABLES]
    assert long == []


def _is_side_literal(node: ast.AST) -> bool:
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal"
            and isinstance(node.slice, ast.Tuple)
            and {getattr(e, "value", None) for e in node.slice.elts} == {"prediction", "outcome"})


def _is_constant(value: object) -> Callable[[ast.AST], bool]:
    return lambda node: isinstance(node, ast.Constant) and type(node.value) is type(value) and node.value == value


def _calls(attribute: str) -> Callable[[ast.AST], bool]:
    return lambda node: isinstance(node, ast.Attribute) and node.attr == attribute


# What was once written in several places (code, not prose), and the one module allowed to hold it.
ONE_HOME: dict[str, tuple[Callable[[ast.AST], bool], str | None]] = {
    "the MAD-to-sd factor": (_is_constant(1.4826), "detectors.distribution"),
    "the KS test": (_calls("ks_2samp"), "detectors.distribution"),
    "the chi-squared test": (_calls("chi2_contingency"), "detectors.distribution"),
    "the Side literal": (_is_side_literal, "schemas.events"),
    "the CloudEvents headers": (_is_constant("ce_specversion"), None),
}


@pytest.mark.parametrize("concept", ONE_HOME)
def test_each_concept_is_written_once(concept: str) -> None:
    matches, home = ONE_HOME[concept]
    holders = sorted(module for module, path in MODULES.items()
                     if any(matches(node) for node in ast.walk(ast.parse(path.read_text()))))
    assert len(holders) == 1 and holders[0] == (home or holders[0]), holders


def test_the_top_of_detectors_holds_only_detectors_and_their_statistics() -> None:
    top = {path.stem for path in (ROOT / "detectors").glob("*.py")} - {"__init__"}
    assert top == {"base", "registry", "exceptions", "glr", "cusum", "cusum_bank", "calibration", "outliers",
                   "river_adapters", "distribution", "rolling", "performance", "score_calibration",
                   "segment_baseline", "sequential"}
    assert {path.name for path in (ROOT / "detectors").iterdir() if (path / "__init__.py").exists()} == {
        "ingest", "monitors"}
