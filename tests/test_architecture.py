"""The layout stays readable: imports flow one way with no cycle, modules stay small, and
every public definition says what it is for.

These read the source statically (no imports), so a function-level import that dodges a
cycle at run time is still seen as the edge it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("jobs", "pipeline", "audio_codecs", "mucodec", "schemas", "testing", "core")
MAX_MODULE_LINES = 500

# Which project packages each package may import (docs/architecture.md:
# jobs -> pipeline -> {audio_codecs -> mucodec, schemas} -> core; generated test audio sits
# outside production code). The stages and jobs reach models only through the codec
# interface; a benchmark of one model (jobs/benchmarks/) may reach it directly.
MAY_IMPORT = {
    "jobs": {"jobs", "pipeline", "audio_codecs", "schemas", "testing", "core"},
    "pipeline": {"pipeline", "audio_codecs", "schemas", "core"},
    "audio_codecs": {"audio_codecs", "mucodec", "core"},
    "mucodec": {"mucodec", "core"},
    "schemas": {"schemas", "core"},
    "testing": {"testing", "pipeline", "core"},
    "core": {"core"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
    }


MODULES = _project_modules()


def _imports(source: str, package: str, known: set[str]) -> set[str]:
    """Project modules `source` imports anywhere in it; `from a import b` counts `a.b` if a module.

    `package` is the package relative imports start from.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
    return {name for name in found if name in known}


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _import_graph() -> dict[str, set[str]]:
    known = set(MODULES)
    return {
        name: _imports(path.read_text(), _package_of(name, path), known) - {name}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


@pytest.mark.parametrize("package", ["pipeline", "jobs"])
def test_stages_and_jobs_reach_codecs_only_through_the_interface(package: str) -> None:
    """No import of a codec's own folder, and no codec named in code: a new codec changes
    neither (docs/adding-a-codec.md)."""
    from audio_codecs.registry import BUILT_IN

    wrong = []
    for name, path in MODULES.items():
        if name.split(".")[0] != package or name.startswith(MODEL_BENCHMARKS):
            continue
        imported = _imports(path.read_text(), _package_of(name, path), set(MODULES))
        wrong += [(name, t) for t in imported if t.startswith("audio_codecs.")
                  and t not in CODEC_INTERFACE]  # fmt: skip
        wrong += [(name, node.value) for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and node.value in BUILT_IN]  # fmt: skip
    assert wrong == []


def test_no_import_cycle_among_project_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_function_level_and_relative_imports() -> None:
    source = "def f():\n    from pipeline import io\n    from . import scratch\n"
    known = {"pipeline", "pipeline.io", "pipeline.scratch"}
    assert _imports(source, "pipeline", known) == {"pipeline.io", "pipeline.scratch"}


MODEL_BENCHMARKS = "jobs.benchmarks."  # Benchmarks of one model may reach the model.
CODEC_INTERFACE = {"audio_codecs", "audio_codecs.base", "audio_codecs.plugin",
                   "audio_codecs.registry"}  # fmt: skip


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package: str) -> None:
    graph = _import_graph()
    wrong = {
        (module, target)
        for module, targets in graph.items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[package]
        and not (module.startswith(MODEL_BENCHMARKS) and target.startswith("mucodec."))
    }
    assert wrong == set()


def test_no_module_is_too_long() -> None:
    long = {
        name: lines
        for name, path in MODULES.items()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def _public_definitions(tree: ast.Module):
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if isinstance(node, definitions) and not node.name.startswith("_"):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, definitions) and not member.name.startswith("_"):
                        yield f"{node.name}.{member.name}", member


def test_every_public_definition_has_a_docstring() -> None:
    missing = [
        f"{name}.{definition}"
        for name, path in MODULES.items()
        for definition, node in _public_definitions(ast.parse(path.read_text()))
        if ast.get_docstring(node) is None
    ]
    assert missing == []


def test_docstrings_use_one_dialect() -> None:
    # Google style: "Args:" / "Returns:", not reST or numpydoc fields.
    foreign = (":param ", ":returns:", ":rtype:", "Parameters\n", "Returns\n    -------")
    offenders = [
        name
        for name, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and any(marker in (ast.get_docstring(node) or "") for marker in foreign)
    ]
    assert offenders == []
