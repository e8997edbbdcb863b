"""docs/architecture.md stays true: its module map names every core module and no other."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CORE_SRC = REPO / "packages" / "core" / "src"


def _modules_on_disk() -> set[str]:
    found = set()
    for path in CORE_SRC.rglob("*.py"):
        rel = path.relative_to(CORE_SRC).as_posix()
        if path.name == "__init__.py" and rel != "mllm/__init__.py":
            continue  # a folder has its own row
        found.add(rel)
    return found


def _modules_in_map() -> set[str]:
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(mllm/[\w/]+\.py)` \|", section, flags=re.M))


def test_module_map_lists_every_core_module_and_no_other():
    on_disk, in_map = _modules_on_disk(), _modules_in_map()
    assert not on_disk - in_map, f"modules missing from docs/architecture.md: {sorted(on_disk - in_map)}"
    assert not in_map - on_disk, f"docs/architecture.md names modules that do not exist: {sorted(in_map - on_disk)}"


def test_core_keeps_a_handful_of_top_level_modules():
    top = sorted(p.name for p in (CORE_SRC / "mllm").glob("*.py"))
    assert len(top) <= 8, top
