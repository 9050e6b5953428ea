"""`mucodec` is the model and nothing else, and `core` what every package stands on: neither
imports pipeline, storage or job code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*(ROOT / "mucodec").glob("**/*.py"), *(ROOT / "core").glob("**/*.py")])
FORBIDDEN = {"ray", "pyarrow", "webdataset", "fsspec", "s3fs", "pipeline", "jobs"}


def _imported_roots(source: str) -> set[str]:
    """Top-level packages a module imports, statically (including import_module("x"))."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mucodec_and_core_import_nothing_forbidden(path: Path) -> None:
    assert not _imported_roots(path.read_text()) & FORBIDDEN


def test_the_check_sees_every_import_form() -> None:
    source = (
        "import ray.data\n"
        "from pipeline.io import x\n"
        "def f():\n"
        "    import s3fs\n"
        "    importlib.import_module('fsspec.core')\n"
    )
    assert _imported_roots(source) >= {"ray", "pipeline", "s3fs", "fsspec"}
