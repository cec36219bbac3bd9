"""What each function's bundle holds (functions/Makefile, read back by infra.bundles), and the
same bundle assembled offline: heavy imaging only in the worker's, no Chalice command-line
dependency anywhere, the docs page only in the API's, every module of functions/ carried."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra import bundles
from infra.bundles import BundleSpec, assemble, closure, read_makefile, spec_closure

FUNCTIONS = bundles.FUNCTIONS
# Pillow with simplejpeg (and its numpy), and the HEIC/HEIF and JPEG XL decoders (packaging
# is the JPEG XL plugin's)
IMAGING = {"pillow", "numpy", "simplejpeg", "pi-heif", "pillow-jxl-plugin", "packaging"}
# Chalice's command-line tool's dependencies: none belongs in a Lambda bundle
CHALICE_CLI = {
    "pip",
    "setuptools",
    "wheel",
    "click",
    "inquirer",
    "blessed",
    "jinja2",
    "pyyaml",
    "readchar",
    "editor",
}


def _names(distributions: list[metadata.Distribution]) -> set[str]:
    return {canonicalize_name(d.metadata["Name"]) for d in distributions}


@pytest.fixture(scope="module")
def specs() -> dict[str, BundleSpec]:
    return read_makefile()


def test_only_the_worker_installs_imaging_and_only_the_api_carries_the_docs_page(
    specs: dict[str, BundleSpec],
) -> None:
    imaging = {f for f, s in specs.items() if "requirements-imaging.txt" in s.requirements}
    assert imaging == {"WorkerFunction"}
    web = {f for f, s in specs.items() if s.carries("chalicelib/web/swagger-ui/x.js")}
    assert web == {"ApiFunction"}
    for spec in specs.values():
        assert spec.requirements[0] == "requirements.txt"
        assert spec.carries("chalicelib/bootstrap.py") and spec.carries("app.py")


def test_every_module_of_functions_is_in_the_bundles_code() -> None:
    """A package added to functions/ (handlers/, say) that CODE does not list would be left
    out of every bundle: the functions would fail on AWS only."""
    (spec, *_) = read_makefile().values()
    modules = {
        p.name
        for p in FUNCTIONS.iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.name != "__pycache__"
    }
    assert modules <= set(spec.code)
    assert {"app.py", "chalicelib"} <= set(spec.code)


def test_the_closures_hold_what_each_function_uses_and_no_command_line_tool(
    specs: dict[str, BundleSpec],
) -> None:
    light = _names(spec_closure(specs["IngestFunction"]))
    api = _names(spec_closure(specs["ApiFunction"]))
    worker = _names(spec_closure(specs["WorkerFunction"]))
    for names in (light, api, worker):
        assert {"chalice", "boto3", "botocore", "pymongo", "requests"} <= names
        assert not names & CHALICE_CLI, names & CHALICE_CLI
    assert not (light | api) & IMAGING
    assert worker - light == IMAGING


def test_the_makefile_installs_chalice_without_its_dependencies_for_lambda(
    specs: dict[str, BundleSpec],
) -> None:
    done = subprocess.run(
        ["make", "-n", "-C", str(FUNCTIONS), "build-WorkerFunction", "ARTIFACTS_DIR=/x"],
        capture_output=True,
        text=True,
        check=True,
    )
    pips = [line for line in done.stdout.splitlines() if " -m pip install " in line]
    assert len(pips) == 2
    # from the locks, every wheel checked against its hash (infra/lock.py)
    assert pips[0].endswith("--require-hashes -r requirements-imaging.lock")
    assert pips[1].endswith("--no-deps --require-hashes -r requirements-nodeps.lock")
    for line in pips:
        assert "--platform manylinux2014_aarch64" in line and "--python-version 3.13" in line
        assert "--only-binary=:all:" in line and '--target "/x"' in line
    (compile_line,) = [line for line in done.stdout.splitlines() if "compileall" in line]
    assert f"-x '{bundles.NOT_COMPILED}'" in compile_line
    assert "--invalidation-mode unchecked-hash" in compile_line
    nodeps = bundles.read_requirements(FUNCTIONS / bundles.NO_DEPS)
    assert [r.name for r in nodeps] == ["chalice"]


def test_closure_follows_extras_and_markers_but_not_no_deps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed = {
        "app": ["lib[fast]>=1", "old; python_version < '3.0'"],
        "lib": ["base", "speedup; extra == 'fast'", "docs; extra == 'docs'"],
        "base": [],
        "speedup": [],
        "cli": ["heavy"],
        "heavy": [],
    }
    asked: list[str] = []

    def distribution(name: str) -> Any:
        asked.append(name)
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return SimpleNamespace(requires=installed[name], name=name)

    monkeypatch.setattr(bundles.metadata, "distribution", distribution)
    found = closure([Requirement("app")], [Requirement("cli")])
    assert [d.name for d in found] == ["app", "base", "cli", "lib", "speedup"]
    assert "heavy" not in asked and "old" not in asked and "docs" not in asked
    with pytest.raises(metadata.PackageNotFoundError):
        closure([Requirement("missing")])


def test_requirement_files_follow_includes_and_refuse_options(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("# comment\nsix>=1  # why\n\n")
    (tmp_path / "all.txt").write_text("-r base.txt\nidna\n")
    assert [r.name for r in bundles.read_requirements(tmp_path / "all.txt")] == ["six", "idna"]
    (tmp_path / "bad.txt").write_text("--no-deps six\n")
    with pytest.raises(ValueError, match="not understood"):
        bundles.read_requirements(tmp_path / "bad.txt")


def test_the_makefile_rules_are_read_back(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        "CODE := app.py lib\n"
        "build-One:\n\t$(call bundle,a.txt b.txt,lib/web lib/x)\n"
        "build-Two: ; @echo not a bundle\n"
    )
    assert read_makefile(makefile) == {
        "One": BundleSpec("One", ("a.txt", "b.txt"), ("lib/web", "lib/x"), ("app.py", "lib"))
    }
    makefile.write_text(makefile.read_text() + "build-One:\n\t$(call bundle,c.txt,)\n")
    with pytest.raises(ValueError, match="twice"):
        read_makefile(makefile)
    makefile.write_text("build-One:\n\t$(call bundle,a.txt,)\n")
    with pytest.raises(ValueError, match="CODE"):
        read_makefile(makefile)


def test_an_assembled_bundle_is_its_code_its_closure_and_byte_code(tmp_path: Path) -> None:
    functions = tmp_path / "functions"
    (functions / "lib" / "web").mkdir(parents=True)
    (functions / "lib" / "__pycache__").mkdir()
    (functions / "app.py").write_text("import six\nimport lib\nVALUE = six.PY3\n")
    (functions / "lib" / "__init__.py").write_text("")
    (functions / "lib" / "__pycache__" / "old.cpython-313.pyc").write_bytes(b"stale")
    (functions / "lib" / "web" / "page.html").write_text("<p>docs</p>")
    (functions / "requirements.txt").write_text("six\n")
    (functions / bundles.NO_DEPS).write_text("idna\n")
    spec = BundleSpec("Fn", ("requirements.txt",), ("lib/web",), ("app.py", "lib", "absent"))
    dest = tmp_path / "bundle"
    found = assemble(spec, dest, functions)
    assert _names(found) == {"six", "idna"}
    assert (dest / "six.py").is_file() and (dest / "idna" / "__init__.py").is_file()
    assert (dest / "lib" / "__init__.py").is_file() and not (dest / "lib" / "web").exists()
    assert not (dest / "lib" / "__pycache__" / "old.cpython-313.pyc").exists()
    tag = sys.implementation.cache_tag
    pyc = dest / "__pycache__" / f"app.{tag}.pyc"
    assert pyc.is_file()
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, unchecked: used whatever the sources' times
    assert list((dest / "idna").glob(f"__pycache__/*.{tag}.pyc"))
    # it imports from itself alone: what it lacks is not found, though installed here
    for code, expected in (("import app; print(app.VALUE)", "True"), ("import yaml", "")):
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-B",
                "-c",
                f"import sys; sys.path.insert(0, {str(dest)!r}); {code}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.stdout.strip() == expected, done.stderr
        assert (done.returncode == 0) == bool(expected), done.stderr


def _locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a lock written by infra/lock.py."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin, *hashes = line.split()
        name, version = pin.split("==")
        out[name] = (version, [h.removeprefix("--hash=") for h in hashes])
    return out


def test_every_bundle_builds_from_a_lock_that_agrees_with_its_requirements() -> None:
    """Each lock pins every requirement of its files (at a version they accept) with a
    sha256 of its wheel; the API's bundle installs from requirements.lock."""
    from packaging.utils import canonicalize_name

    from infra.lock import LOCKS

    for lock, (files, _no_deps) in LOCKS.items():
        locked = _locked(FUNCTIONS / lock)
        assert locked, lock
        for name, (_version, hashes) in locked.items():
            assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
        for requirement_file in files:
            for requirement in bundles.read_requirements(FUNCTIONS / requirement_file):
                name = canonicalize_name(requirement.name)
                assert name in locked, f"{lock}: {name} of {requirement_file} is not locked"
                assert requirement.specifier.contains(locked[name][0], prereleases=True), (
                    f"{lock}: {name}=={locked[name][0]} is not {requirement.specifier}"
                )
    base = _locked(FUNCTIONS / "requirements.lock")
    imaging = _locked(FUNCTIONS / "requirements-imaging.lock")
    assert base.items() <= imaging.items()  # the worker runs the same versions and more
    done = subprocess.run(
        ["make", "-n", "-C", str(FUNCTIONS), "build-ApiFunction", "ARTIFACTS_DIR=/x"],
        capture_output=True,
        text=True,
        check=True,
    )
    pips = [line for line in done.stdout.splitlines() if " -m pip install " in line]
    assert pips[0].endswith("--require-hashes -r requirements.lock")
