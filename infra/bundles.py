"""What each Lambda function's bundle holds, read back from functions/Makefile, and the same
bundle assembled offline from an installed environment.

`sam build` runs `make build-<LogicalId>` in functions/ for every function (template.yaml:
`Metadata: BuildMethod: makefile`); each rule there is one line,

    build-WorkerFunction:
    <tab>$(call bundle,requirements.txt requirements-imaging.txt,chalicelib/web)

naming the requirement files the function installs (with their dependencies; those of
`requirements-nodeps.txt` go in without theirs, in every bundle) and the code it leaves out.
`read_makefile` reads those rules; `closure` finds the installed distributions a set of
requirement files comes to (importlib.metadata, no index asked); `assemble` copies them and
the function's code into a folder: the benchmark of cold starts imports each function from
such a folder (benchmarks/cold_start.py), on this machine's architecture, never fetching.
"""

from __future__ import annotations

import compileall
import py_compile
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
MAKEFILE = FUNCTIONS / "Makefile"
NO_DEPS = "requirements-nodeps.txt"  # installed with --no-deps into every bundle
# Left uncompiled, as functions/Makefile's COMPILE does (nothing imports tests folders).
NOT_COMPILED = r"/tests?/"

_CODE = re.compile(r"^CODE := (?P<code>.*)$", re.M)
_RULE = re.compile(
    r"^build-(?P<function>[A-Za-z0-9]+):[^\n]*\n\t\$\(call bundle,(?P<args>[^)]*)\)", re.M
)


@dataclass(frozen=True)
class BundleSpec:
    """One function's bundle: requirement files, the code it may carry and the code paths it
    leaves out (paths relative to functions/)."""

    function: str
    requirements: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    code: tuple[str, ...] = ("app.py", "chalicelib")

    def carries(self, relative: str) -> bool:
        """Whether the code file or folder `relative` (to functions/) goes in this bundle."""
        parts = Path(relative).parts
        return not any(parts[: len(Path(x).parts)] == Path(x).parts for x in self.excluded)


def read_makefile(path: Path = MAKEFILE) -> dict[str, BundleSpec]:
    """Each `build-<LogicalId>` rule of functions/Makefile as a BundleSpec."""
    text = path.read_text(encoding="utf-8")
    code = _CODE.search(text)
    if code is None:
        raise ValueError(f"{path}: no `CODE := ...` line")
    specs: dict[str, BundleSpec] = {}
    for match in _RULE.finditer(text):
        requirements, _, excluded = match.group("args").partition(",")
        function = match.group("function")
        if function in specs:
            raise ValueError(f"{path}: build-{function} is there twice")
        specs[function] = BundleSpec(
            function,
            tuple(requirements.split()),
            tuple(excluded.split()),
            tuple(code.group("code").split()),
        )
    if not specs:
        raise ValueError(f"{path}: no build-<LogicalId> rule calling bundle")
    return specs


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements a requirements file lists, following `-r` includes."""
    out: list[Requirement] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += read_requirements(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith("-"):
            raise ValueError(f"{path}: option {line!r} is not understood here")
        else:
            out.append(Requirement(line))
    return out


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether `requirement` holds here (Python 3.13 on Linux, as on Lambda) for a dependent
    that asked for `extras`."""
    if requirement.marker is None:
        return True
    environment = {str(k): str(v) for k, v in default_environment().items()}
    return any(
        requirement.marker.evaluate(environment | {"extra": extra}) for extra in ("", *extras)
    )


def closure(
    requirements: Sequence[Requirement], no_deps: Sequence[Requirement] = ()
) -> list[metadata.Distribution]:
    """The installed distributions `requirements` come to with their dependencies (the
    extras they ask for included), and `no_deps` without theirs; sorted by name. Raises
    PackageNotFoundError for one that is not installed."""
    found: dict[str, metadata.Distribution] = {}
    followed: dict[str, set[str]] = {}  # name -> the extras whose dependencies are in
    pending = [(r, True) for r in requirements if _applies(r, ())]
    pending += [(r, False) for r in no_deps if _applies(r, ())]
    while pending:
        requirement, follow = pending.pop()
        name = canonicalize_name(requirement.name)
        if name not in found:
            found[name] = metadata.distribution(requirement.name)
        if not follow:
            continue
        extras = {""} | set(requirement.extras)
        new = extras - followed.get(name, set())
        if not new and name in followed:
            continue
        followed.setdefault(name, set()).update(extras)
        for text in found[name].requires or []:
            dependency = Requirement(text)
            if _applies(dependency, new - {""}):
                pending.append((dependency, True))
    return [found[name] for name in sorted(found)]


def spec_closure(spec: BundleSpec, functions: Path = FUNCTIONS) -> list[metadata.Distribution]:
    """The installed distributions of one function's bundle."""
    requirements = [r for f in spec.requirements for r in read_requirements(functions / f)]
    return closure(requirements, read_requirements(functions / NO_DEPS))


def _installed_files(distribution: metadata.Distribution) -> Iterator[tuple[Path, Path]]:
    """(source, path relative to site-packages) of each file a distribution installed in its
    site-packages (scripts elsewhere and byte code left out)."""
    base = Path(str(distribution.locate_file("")))
    for file in distribution.files or []:
        relative = Path(str(file))
        if relative.parts[0] == ".." or "__pycache__" in relative.parts:
            continue
        if relative.suffix == ".pyc":
            continue
        source = base / relative
        if source.is_file():
            yield source, relative


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def compile_bytecode(dest: Path) -> bool:
    """Byte code for every module under `dest` but tests, as functions/Makefile makes it for
    Lambda (unchecked hashes: used without looking at the sources' times)."""
    return bool(
        compileall.compile_dir(
            dest,
            quiet=1,
            rx=re.compile(NOT_COMPILED),
            workers=1,  # in this process: a couple of seconds a bundle
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    )


def assemble(
    spec: BundleSpec, dest: Path, functions: Path = FUNCTIONS
) -> list[metadata.Distribution]:
    """Copy the function's installed distributions and its code into `dest`, then compile
    them as functions/Makefile does (none of this environment's byte code is copied);
    returns the distributions."""
    distributions = spec_closure(spec, functions)
    for distribution in distributions:
        for source, relative in _installed_files(distribution):
            _copy(source, dest / relative)
    for top in spec.code:
        root = functions / top
        if not root.exists():
            continue  # as the Makefile's $(wildcard $(CODE))
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            relative = path.relative_to(functions)
            if "__pycache__" in relative.parts or path.suffix == ".pyc":
                continue
            if spec.carries(str(relative)):
                _copy(path, dest / relative)
    compile_bytecode(dest)
    return distributions
