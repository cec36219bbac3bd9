"""docs/architecture.md's layer table is the tree's: every module under `functions/` and every
Protocol of the ports is in it, and it names no module, folder or class the tree lacks. Its
"ten behaviours" table names rows of the README's map and files that exist.

The tree is read as it is (every `.py` file under `functions/`, `.chalice` and `__init__.py`
aside; every class deriving from `Protocol` under `functions/chalicelib`), so a module renamed,
split or added fails here until the table says so.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from tests.unit.test_readme_map import README, map_rows

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
LAYERS = "## Layers"
QUESTIONS = "### How a newcomer finds ten behaviours"
CODE = re.compile(r"`([^`]+)`")
MODULE = re.compile(r"^[\w./-]+\.py$")
FOLDER = re.compile(r"^[\w./-]+/$")
CLASS = re.compile(r"^[A-Z][A-Za-z0-9]+$")
SKIPPED_DIRS = {".chalice", "__pycache__"}


@dataclass(frozen=True)
class Named:
    """What the layer table names: modules and folders (paths from `functions/`), classes."""

    modules: frozenset[str]
    folders: frozenset[str]
    classes: frozenset[str]


def _section(text: str, heading: str) -> str:
    if heading not in text:
        raise AssertionError(f"no {heading!r} section")
    body = text.split(heading, 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def _table(section: str) -> list[list[str]]:
    """The first table's body rows, as cells (header and separator left out)."""
    rows: list[list[str]] = []
    started = False
    for line in section.splitlines():
        if not line.lstrip().startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows.append(cells)
    return [row for row in rows[1:] if not set("".join(row)) <= set("-: ")]


def named_in_layers(text: str) -> Named:
    """Each row: its `Where` cell's folders and modules (from `functions/`); its last cell's
    modules, relative to the row's first folder unless they hold a `/` or are in its `Where`
    cell; every class named."""
    modules: set[str] = set()
    folders: set[str] = set()
    classes: set[str] = set()
    for cells in _table(_section(text, LAYERS)):
        where = CODE.findall(cells[1])
        base = next((w for w in where if FOLDER.match(w)), "")
        folders.update(w.rstrip("/") for w in where if FOLDER.match(w))
        modules.update(w for w in where if MODULE.match(w))
        for name in CODE.findall(" ".join(cells[2:])):
            if MODULE.match(name):
                modules.add(name if "/" in name or name in where else base + name)
            elif CLASS.match(name):
                classes.add(name)
    return Named(frozenset(modules), frozenset(folders), frozenset(classes))


def tree_modules(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*.py")
        if path.name != "__init__.py"
        and not SKIPPED_DIRS.intersection(path.relative_to(folder).parts)
    }


def tree_classes(folder: Path) -> tuple[set[str], set[str]]:
    """(every class defined in the modules under `folder`, the ports: the Protocols of the
    modules named for them, `ports.py` or a `ports/` package; a Protocol elsewhere is a
    module's own type, not a dependency)."""
    classes: set[str] = set()
    protocols: set[str] = set()
    for module in tree_modules(folder):
        is_ports = any(part.removesuffix(".py") == "ports" for part in module.split("/"))
        for node in ast.walk(ast.parse((folder / module).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.add(node.name)
                bases = [ast.unparse(base) for base in node.bases]
                if is_ports and any(re.match(r"^(typing\.)?Protocol\b", b) for b in bases):
                    protocols.add(node.name)
    return classes, protocols


def layer_problems(named: Named, folder: Path) -> list[str]:
    modules = tree_modules(folder)
    classes, protocols = tree_classes(folder)
    problems = [f"{m}: a module the table leaves out" for m in sorted(modules - named.modules)]
    problems += [f"{m}: no such module" for m in sorted(named.modules - modules)]
    missing_folders = sorted(f for f in named.folders if not (folder / f).is_dir())
    problems += [f"{f}/: no such folder" for f in missing_folders]
    problems += [f"{p}: a port the table leaves out" for p in sorted(protocols - named.classes)]
    problems += [f"{c}: no such class" for c in sorted(named.classes - classes)]
    return problems


def test_the_layer_table_names_every_module_and_port_and_nothing_else() -> None:
    named = named_in_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert layer_problems(named, FUNCTIONS) == []


def test_the_ten_questions_lead_to_rows_of_the_map_and_to_files() -> None:
    rows = _table(_section(ARCHITECTURE.read_text(encoding="utf-8"), QUESTIONS))
    behaviours = {behaviour for behaviour, _ in map_rows(README.read_text(encoding="utf-8"))}
    assert len(rows) >= 10
    for question, row, first_file in (cells[:3] for cells in rows):
        assert row in behaviours, f"{question}: {row!r} is not a row of the README's map"
        (path,) = CODE.findall(first_file)
        assert (ROOT / path).is_file(), f"{question}: {path} does not exist"


def test_the_checker_finds_what_is_left_out_and_what_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "inner").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "ports.py").write_text(
        "from typing import Protocol\nclass Store(Protocol): ...\nclass Queue(Protocol): ...\n"
        "class Plain: ...\n"
    )
    (tmp_path / "pkg" / "inner" / "a.py").write_text("")
    (tmp_path / "top.py").write_text("")
    text = (
        f"{LAYERS}\n\n| Layer | Where | What |\n|---|---|---|\n"
        "| ports | `pkg/ports.py` | `Store`, `Plain` |\n"
        "| inner | `pkg/inner/` | `a.py`, `b.py`; `pkg/ports.py` again; `Ghost` |\n"
        "| gone | `pkg/gone/` | nothing |\n\n## Next\n| x | `top.py` | |\n"
    )
    named = named_in_layers(text)
    assert named.modules == {"pkg/ports.py", "pkg/inner/a.py", "pkg/inner/b.py"}
    assert layer_problems(named, tmp_path) == [
        "top.py: a module the table leaves out",
        "pkg/inner/b.py: no such module",
        "pkg/gone/: no such folder",
        "Queue: a port the table leaves out",
        "Ghost: no such class",
    ]
