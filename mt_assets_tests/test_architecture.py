"""The tree keeps the rules ARCHITECTURE.md states: every module is named there, none is longer
than 400 lines, and lib/ never imports Dagster or the defs layer (`dagster_pipes`, the
dependency-free client half of Pipes that the trainer process speaks, is allowed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mt_assets"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")
MAX_LINES = 400


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_architecture_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [_relative(p) for p in MODULES if f"`{_relative(p)}`" not in text]
    assert not missing, f"ARCHITECTURE.md does not name these modules (as `path`): {missing}"


def test_architecture_names_no_module_that_is_gone():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    named = {part.strip("`") for part in text.split() if part.startswith("`") and part.rstrip("`,.:;)").endswith(".py")}
    named = {name.rstrip("`,.:;)") for name in named}
    gone = sorted(name for name in named if "/" in name and not (PACKAGE / name).exists()
                  and not (ROOT / name).exists())
    assert not gone, f"ARCHITECTURE.md names modules that do not exist: {gone}"


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_module_is_at_most_400_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_relative(path)} has {lines} lines; split it by concept (see ARCHITECTURE.md)"


@pytest.mark.parametrize("path", sorted((PACKAGE / "lib").rglob("*.py")), ids=_relative)
def test_lib_imports_neither_dagster_nor_defs(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = sorted(name for name in imported
                 if (name.split(".")[0].startswith("dagster") and name != "dagster_pipes")
                 or name.startswith("mt_assets.defs")
                 or name in ("mt_assets.definitions", "mt_assets.cli"))
    assert not bad, f"{_relative(path)} imports {bad}: lib/ is plain Python, the Dagster layer lives in defs/"
