"""The domain imports only the domain and the standard library: every module under
functions/chalicelib/domain, read with `ast` (never imported), so that a reach upwards
(config, errors, a service, an adapter) or to a third-party library fails here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "functions" / "chalicelib" / "domain"
DOMAIN_PACKAGE = "chalicelib.domain"


def imported_modules(source: str) -> list[str]:
    """Every module an `import` or `from ... import` of `source` names (relative ones as
    written, with their dots), wherever it stands (functions, TYPE_CHECKING blocks)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def outside_the_domain(module: str) -> bool:
    if module.startswith("."):  # relative: within this package, the domain
        return False
    if module == DOMAIN_PACKAGE or module.startswith(DOMAIN_PACKAGE + "."):
        return False
    return module.split(".", maxsplit=1)[0] not in sys.stdlib_module_names | {"__future__"}


MODULES = sorted(DOMAIN.glob("*.py"))


def test_the_domain_has_modules() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_a_domain_module_imports_only_the_domain_and_the_standard_library(path: Path) -> None:
    reaching = [m for m in imported_modules(path.read_text()) if outside_the_domain(m)]
    assert reaching == [], f"domain/{path.name} imports {reaching}"


@pytest.mark.parametrize(
    ("source", "reaching"),
    [
        ("from chalicelib.config import Settings", ["chalicelib.config"]),
        ("import chalicelib.errors", ["chalicelib.errors"]),
        ("def f():\n    from chalicelib.services import cancel", ["chalicelib.services"]),
        ("from PIL import Image", ["PIL"]),
        ("import pymongo.errors", ["pymongo.errors"]),
        ("from chalicelib.domain.models import Job\nimport datetime", []),
        ("from . import models\nfrom __future__ import annotations", []),
    ],
)
def test_the_check_tells_a_reach_outside_the_domain(source: str, reaching: list[str]) -> None:
    assert [m for m in imported_modules(source) if outside_the_domain(m)] == reaching
