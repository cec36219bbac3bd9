"""docs/operations.md's configuration table names every environment variable the code reads,
says who reads it, and names nothing that nobody reads.

Who reads what is found in the source, never by importing it: every `.py` file under
`functions/` (the functions) and under `local_emulator/` (the emulator), whatever the modules
are called, is parsed with `ast`, and a read is

- `os.environ.get(K)`, `os.environ[K]`, `K in os.environ`, `os.getenv(K)`;
- the same on a mapping that holds the environment: a parameter annotated `Mapping[str, str]`
  or `dict[str, str]` (how the code passes the environment on: `Settings.from_env(env)`,
  `tune_pillow(os.environ)`), or a local made from `os.environ` (`e = os.environ if env is
  None else env`, `user_env = dict(os.environ)`);
- a call to a function that does one of those with one of its parameters as the key
  (`_int(e, "MAX_ROWS", 100_000)`, `_env_flag("LOCAL_WORKER_PROCESSES", "0")`);

where K is a string literal or a module-level constant holding one (`NAMESPACE_ENV =
"METRICS_NAMESPACE"`). A key the code computes (a loop over a table) is not a read here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
SECTION = "## Configuration"
SIDES = {"functions": ROOT / "functions", "emulator": ROOT / "local_emulator"}
SKIPPED_DIRS = {".chalice", "__pycache__", ".aws-sam"}
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z0-9]$")
CODE = re.compile(r"`([^`]+)`")
ENV_ANNOTATION = re.compile(r"\b(Mapping|MutableMapping|dict)\[str, str\]")


# -- the table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    variables: tuple[str, ...]
    readers: frozenset[str]


def table_rows(text: str) -> list[Row]:
    """The rows of the section's table: the variables of the first cell (each in backticks)
    and the sides the `Read by` cell names."""
    if SECTION not in text:
        raise AssertionError(f"docs/operations.md has no {SECTION!r} section")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    header: list[str] | None = None
    rows: list[Row] = []
    for line in section.splitlines():
        if not line.lstrip().startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        by = cells[header.index("read by")]
        variables = tuple(name for name in CODE.findall(cells[0]) if VARIABLE.match(name))
        readers = frozenset(side for side in SIDES if re.search(rf"\b{side}\b", by))
        rows.append(Row(variables, readers))
    return rows


# -- the source --------------------------------------------------------------------------
def python_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*.py")):
        if not SKIPPED_DIRS.intersection(path.relative_to(folder).parts):
            yield path


def _is_os_attribute(node: ast.AST, name: str) -> bool:
    """`node` is `os.<name>` (`os.environ`, `os.getenv`)."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr == name
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _module_constants(tree: ast.Module) -> dict[str, str]:
    constants: dict[str, str] = {}
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if (
            isinstance(target, ast.Name)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            constants[target.id] = value.value
    return constants


@dataclass
class Scope:
    """One function: which of its names hold the environment, and its parameters."""

    env_names: set[str] = field(default_factory=set)
    params: list[str] = field(default_factory=list)


@dataclass
class Side:
    files: dict[Path, ast.Module]
    constants: dict[str, str]  # module-level string constants, where one name has one value
    reads: set[str] = field(default_factory=set)
    # function name -> positions of the parameters it reads the environment with
    readers: dict[str, set[int]] = field(default_factory=dict)


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _scope(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Scope:
    scope = Scope()
    arguments = [*func.args.posonlyargs, *func.args.args, *func.args.kwonlyargs]
    scope.params = [arg.arg for arg in [*func.args.posonlyargs, *func.args.args]]
    for arg in arguments:
        if arg.annotation is not None and ENV_ANNOTATION.search(ast.unparse(arg.annotation)):
            scope.env_names.add(arg.arg)
    for node in ast.walk(func):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if _holds_env(node.value, scope):
                scope.env_names.update(t.id for t in targets if isinstance(t, ast.Name))
    return scope


def _holds_env(node: ast.AST, scope: Scope) -> bool:
    if _is_os_attribute(node, "environ"):
        return True
    if isinstance(node, ast.Name):
        return node.id in scope.env_names
    if isinstance(node, ast.IfExp):
        return _holds_env(node.body, scope) or _holds_env(node.orelse, scope)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return len(node.args) == 1 and _holds_env(node.args[0], scope)
    return False


def _keys_read(node: ast.AST, scope: Scope) -> Iterator[ast.expr]:
    """The key expressions of the environment reads `node` is."""
    if isinstance(node, ast.Call):
        func = node.func
        env_get = (
            isinstance(func, ast.Attribute) and func.attr == "get" and _holds_env(func.value, scope)
        )
        if (env_get or _is_os_attribute(func, "getenv")) and node.args:
            yield node.args[0]
    elif (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _holds_env(node.value, scope)
    ):
        yield node.slice
    elif (
        isinstance(node, ast.Compare)
        and len(node.ops) == 1
        and isinstance(node.ops[0], ast.In | ast.NotIn)
        and _holds_env(node.comparators[0], scope)
    ):
        yield node.left


def _keys_written(func: ast.FunctionDef | ast.AsyncFunctionDef, scope: Scope) -> set[str]:
    """The names `func` sets (`os.environ[k] = v`) or removes (`os.environ.pop(k)`) by."""
    written: set[str] = set()
    for node in ast.walk(func):
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            key = node.slice if _holds_env(node.value, scope) else None
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "pop"
            and _holds_env(node.func.value, scope)
            and node.args
        ):
            key = node.args[0]
        if isinstance(key, ast.Name):
            written.add(key.id)
    return written


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def scan(folder: Path) -> Side:
    files = {path: ast.parse(path.read_text(encoding="utf-8")) for path in python_files(folder)}
    values: dict[str, set[str]] = {}
    for tree in files.values():
        for name, value in _module_constants(tree).items():
            values.setdefault(name, set()).add(value)
    side = Side(files, {name: next(iter(v)) for name, v in values.items() if len(v) == 1})
    for tree in files.values():
        local = _module_constants(tree)
        scopes = {func: _scope(func) for func in _functions(tree)}
        for node in ast.walk(tree):
            func = _innermost(scopes, node)
            scope = scopes[func] if func is not None else Scope()
            for key in _keys_read(node, scope):
                if isinstance(key, ast.Name) and func is not None and key.id in scope.params:
                    # a parameter as the key: the callers name the variable (unless the
                    # function sets or removes it: it reads only to restore it later)
                    if key.id not in _keys_written(func, scope):
                        side.readers.setdefault(func.name, set()).add(scope.params.index(key.id))
                else:
                    _note(side, local, key)
    for tree in files.values():
        local = _module_constants(tree)
        for node in ast.walk(tree):
            called = _called_name(node) if isinstance(node, ast.Call) else None
            if isinstance(node, ast.Call) and called is not None and called in side.readers:
                offset = 1 if isinstance(node.func, ast.Attribute) else 0  # self, cls
                for position in side.readers[called]:
                    if 0 <= position - offset < len(node.args):
                        _note(side, local, node.args[position - offset])
    return side


def _innermost(
    scopes: dict[ast.FunctionDef | ast.AsyncFunctionDef, Scope], node: ast.AST
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The innermost function `node` is in (by line), or None at module level."""
    line = getattr(node, "lineno", None)
    if line is None:
        return None
    best: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for func in scopes:
        if func.lineno <= line <= (func.end_lineno or func.lineno) and (
            best is None or func.lineno >= best.lineno
        ):
            best = func
    return best


def _note(side: Side, local: dict[str, str], key: ast.expr) -> None:
    value: str | None = None
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        value = key.value
    elif isinstance(key, ast.Name):
        value = local.get(key.id, side.constants.get(key.id))
    if value is not None and VARIABLE.match(value):
        side.reads.add(value)


# -- the checks --------------------------------------------------------------------------
def mismatches(rows: list[Row], reads: dict[str, set[str]]) -> list[str]:
    """What the table gets wrong against `reads` (side -> variables it reads)."""
    problems: list[str] = []
    marked: dict[str, set[str]] = {}
    for row in rows:
        if not row.variables:
            problems.append("a row names no variable in backticks")
        if not row.readers:
            problems.append(f"{', '.join(row.variables)}: `Read by` names no side")
        for name in row.variables:
            if name in marked:
                problems.append(f"{name}: in two rows")
            marked[name] = set(row.readers)
    for side, names in reads.items():
        for name in sorted(names):
            if name not in marked:
                problems.append(f"{name}: read by the {side}, not in the table")
            elif side not in marked[name]:
                problems.append(f"{name}: read by the {side}, not marked {side!r}")
    for name, sides in sorted(marked.items()):
        for side in sorted(sides):
            if name not in reads.get(side, set()):
                problems.append(f"{name}: marked {side!r}, but the {side} never read it")
    return problems


def reads_by_side() -> dict[str, set[str]]:
    return {side: scan(folder).reads for side, folder in SIDES.items()}


def test_the_table_names_every_variable_read_and_who_reads_it() -> None:
    rows = table_rows(OPERATIONS.read_text(encoding="utf-8"))
    assert mismatches(rows, reads_by_side()) == []


def test_the_scan_finds_each_side_reading_what_it_is_known_to_read() -> None:
    """A scan that found nothing would pass the table's test; these reads are certain."""
    reads = reads_by_side()
    assert {"MAX_ROWS", "OUTPUT_QUALITY", "DEFAULT_WEBHOOK_SECRET_ID", "METRICS_NAMESPACE"} <= (
        reads["functions"]
    )
    assert {"LOCAL_WORKER_PROCESSES", "LOCAL_TIME_SCALE", "IMAGE_PIPELINE_TENANTS"} <= (
        reads["emulator"]
    )


def test_the_scanner_finds_each_kind_of_read_and_only_those(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "import os\n"
        "from collections.abc import Mapping\n"
        'NAME_ENV = "VIA_CONSTANT"\n'
        "def _int(env: Mapping[str, str], name: str, default: int) -> int:\n"
        "    return int(env.get(name, default))\n"
        "def _flag(name: str) -> bool:\n"
        '    return os.environ.get(name, "") == "1"\n'
        "def settings(env: Mapping[str, str] | None = None) -> object:\n"
        "    e = os.environ if env is None else env\n"
        '    return (e.get("DIRECT"), _int(e, "THROUGH_HELPER", 1), _flag("FLAG"),\n'
        '            os.environ[NAME_ENV], os.getenv("GETENV"), "IN_TEST" in os.environ)\n'
        "def wsgi(environ: dict[str, object]) -> object:\n"
        '    return environ.get("HTTP_HOST")\n'
        "def loop(env: Mapping[str, str]) -> object:\n"
        '    return [env.get(n) for n in ("NOT_A_READ",)]\n'
    )
    (tmp_path / "pkg" / ".chalice").mkdir()
    (tmp_path / "pkg" / ".chalice" / "b.py").write_text('import os\nos.environ["SKIPPED"]\n')
    found = scan(tmp_path / "pkg").reads
    assert found == {"DIRECT", "THROUGH_HELPER", "FLAG", "VIA_CONSTANT", "GETENV", "IN_TEST"}
    table = (
        f"{SECTION}\n\n| Variable | Read by | Default | Meaning |\n|---|---|---|---|\n"
        "| `ONE`, `TWO` | functions | 1 | x |\n| `THREE` | emulator, functions | | y |\n"
        "| `GONE` | emulator | | z |\n\n## Next\n| `FOUR` | functions | | |\n"
    )
    rows = table_rows(table)
    assert [row.variables for row in rows] == [("ONE", "TWO"), ("THREE",), ("GONE",)]
    assert mismatches(rows, {"functions": {"ONE", "TWO", "THREE"}, "emulator": {"THREE"}}) == [
        "GONE: marked 'emulator', but the emulator never read it"
    ]
    more = {"functions": {"ONE", "TWO", "THREE", "NEW"}, "emulator": {"THREE", "GONE"}}
    assert mismatches(rows, more) == ["NEW: read by the functions, not in the table"]
    swapped = {"functions": {"ONE", "TWO"}, "emulator": {"ONE", "THREE", "GONE"}}
    assert mismatches(rows, swapped) == [
        "ONE: read by the emulator, not marked 'emulator'",
        "THREE: marked 'functions', but the functions never read it",
    ]
