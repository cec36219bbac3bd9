"""The README's "Where things live" map names only code that exists.

Every `path:name` in the map's table is a file (from the repository root) that defines
`name`: a function or class at module level, or `Class.method` (any depth of nesting). Read
with `ast`, never imported, so the map is checked without the modules' dependencies.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Where things live"
ENTRY = re.compile(r"`([\w./-]+\.py):([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`")
MIN_ROWS = 15

type Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def map_rows(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(behaviour, [(path, dotted name), ...]) per row of the section's table."""
    if SECTION not in text:
        raise AssertionError(f"README.md has no {SECTION!r} section")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows: list[tuple[str, list[tuple[str, str]]]] = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 2:
            continue
        if set(cells[0]) <= set("-: ") or cells[0] == "Behaviour":
            continue  # the separator and the header
        rows.append((cells[0], ENTRY.findall(" ".join(cells[1:]))))
    return rows


def _children(body: list[ast.stmt]) -> dict[str, Definition]:
    return {
        node.name: node
        for node in body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def defines(source: str, dotted: str) -> bool:
    """Whether `source` defines `dotted` (`name` or `Class.method`, nested as deep as named)."""
    body: list[ast.stmt] = ast.parse(source).body
    for part in dotted.split("."):
        node = _children(body).get(part)
        if node is None:
            return False
        body = node.body
    return True


def missing(path: str, dotted: str) -> str | None:
    """Why `path:dotted` does not exist, or None when it does."""
    file = ROOT / path
    if not file.is_file():
        return f"{path}: no such file"
    if not defines(file.read_text(encoding="utf-8"), dotted):
        return f"{path} defines no {dotted}"
    return None


ROWS = map_rows(README.read_text(encoding="utf-8"))
ENTRIES = sorted({entry for _, entries in ROWS for entry in entries})


def test_the_map_has_its_rows_and_each_row_names_code() -> None:
    assert len(ROWS) >= MIN_ROWS, [behaviour for behaviour, _ in ROWS]
    assert [behaviour for behaviour, entries in ROWS if not entries] == []


@pytest.mark.parametrize(("path", "dotted"), ENTRIES, ids=[f"{p}:{n}" for p, n in ENTRIES])
def test_each_entry_of_the_map_exists(path: str, dotted: str) -> None:
    assert missing(path, dotted) is None, missing(path, dotted)


def test_the_checker_finds_what_is_there_and_only_that() -> None:
    source = "def f():\n    pass\n\nclass C:\n    class D:\n        def m(self): ...\n"
    assert defines(source, "f") and defines(source, "C") and defines(source, "C.D.m")
    assert not defines(source, "g") and not defines(source, "C.m") and not defines(source, "f.x")
    rows = map_rows(
        f"{SECTION}\n\n| Behaviour | Where |\n|---|---|\n"
        "| a | `x/y.py:f` → `x/z.py:C.m`, prose |\n| b | none |\n\n## Next\n| c | `q.py:g` |\n"
    )
    assert rows == [("a", [("x/y.py", "f"), ("x/z.py", "C.m")]), ("b", [])]
    assert missing("no/such/file.py", "f") == "no/such/file.py: no such file"
