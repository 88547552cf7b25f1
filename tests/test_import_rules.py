"""The folder table in DESIGN.md: arrows point down and never up.

Checked on the source, every import (module level or lazy), so a shortcut taken inside a
function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"modelops", "serving", "resources", "assets", "sensors", "jobs", "definitions", "demo"}
ALLOWED = {
    "modelops": {"modelops"},
    "serving": {"modelops", "serving"},
    "resources": {"modelops", "serving", "resources"},
    # One floor: assets, sensors and jobs import none of each other. What they share (fleet
    # schema, evidence windows, action vocabulary and run keys, the decision interface) is in
    # the core, and definitions.py hands the jobs to the sensor builders.
    "assets": {"modelops", "resources", "assets"},
    "jobs": {"modelops", "resources", "jobs"},
    "sensors": {"modelops", "resources", "sensors"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folder_imports_only_what_the_design_allows(folder: str) -> None:
    bad = {
        str(p.relative_to(ROOT)): sorted(_imports(p) - ALLOWED[folder])
        for p in sorted((ROOT / folder).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}
