"""The functions' requirements locked with hashes, for the platform they are built for.

    python -m infra.lock          # rewrites functions/*.lock (make lock)

functions/Makefile installs every bundle from these files with `--require-hashes`: each
function ships exactly the wheels locked here, whenever it is built, and a wheel whose bytes
changed on the index fails the build. Each lock is what pip resolves for its requirement
files for Lambda's platform (the Makefile's: CPython 3.13, manylinux aarch64, wheels only),
every distribution pinned to the wheel it chose and that wheel's sha256:

- requirements.lock: requirements.txt (every function)
- requirements-imaging.lock: requirements.txt and requirements-imaging.txt (the worker)
- requirements-nodeps.lock: requirements-nodeps.txt (installed without its dependencies)

Change a requirement file, then run this and commit the locks with it.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
LOCKS: dict[str, tuple[tuple[str, ...], bool]] = {
    # lock file: (requirement files, without dependencies)
    "requirements.lock": (("requirements.txt",), False),
    "requirements-imaging.lock": (("requirements.txt", "requirements-imaging.txt"), False),
    "requirements-nodeps.lock": (("requirements-nodeps.txt",), True),
}
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-.+\.whl$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(files: Sequence[str], no_deps: bool, dest: Path) -> list[Path]:
    """The wheels pip picks for Lambda's platform (the Makefile's PIP flags)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", "3.13"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += ["--no-deps"] if no_deps else []
    for name in files:
        command += ["-r", str(FUNCTIONS / name)]
    subprocess.run([*command, "--dest", str(dest)], check=True)  # noqa: S603 - our own pip
    return sorted(dest.glob("*.whl"))


def lock_text(wheels: Sequence[Path], files: Sequence[str]) -> str:
    lines = [
        "# Written by python -m infra.lock from " + " and ".join(files) + ": do not edit.",
        "# Lambda's platform (CPython 3.13, manylinux aarch64); functions/Makefile installs it",
        "# with --require-hashes.",
    ]
    for wheel in sorted(wheels, key=lambda w: canonical(w.name.split("-")[0])):
        match = _WHEEL.match(wheel.name)
        if match is None:
            raise ValueError(f"not a wheel's name: {wheel.name}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{canonical(match['name'])}=={match['version']} \\")
        lines.append(f"    --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"


def main() -> int:
    for lock, (files, no_deps) in LOCKS.items():
        with tempfile.TemporaryDirectory() as tmp:
            wheels = download(files, no_deps, Path(tmp))
            (FUNCTIONS / lock).write_text(lock_text(wheels, files), encoding="utf-8")
        print(f"functions/{lock}: {len(wheels)} distribution(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
