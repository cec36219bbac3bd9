"""PyPI packages only the benchmarks use, installed on demand into the cache, never the venv.

`require("ssimulacra2")` installs the pinned packages of that name's group with pip (the
package index, by name) into `<cache>/pip/<group>/` on first use and puts that folder at the
END of `sys.path`: the venv's own numpy and Pillow stay the ones imported. Nothing here is
in requirements.txt: no test needs these, and the worker's bundle never has them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.corpus import DEFAULT_CACHE

# group -> the exact packages (no dependencies pulled: numpy and Pillow come from the venv)
GROUPS: dict[str, tuple[str, ...]] = {
    # the reference SSIMULACRA2: a Python port of libjxl's tool (Debian's libjxl-tools 0.7
    # does not ship `ssimulacra2`); it needs scipy's Gaussian filter
    "ssimulacra2": ("ssimulacra2==0.3.0", "scipy==1.18.1"),
    # jpegli (libjxl's JPEG encoder) bound for Python; wheels for x86_64 and aarch64
    "pyjpegli": ("pyjpegli==0.3.2",),
}


class ExtraMissing(RuntimeError):
    """pip could not install a benchmark-only package here."""


def require(group: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Install `group`'s packages (once) and make them importable; their folder."""
    folder = (cache / "pip" / group).resolve()
    stamp = folder / ".installed"
    wanted = "\n".join(GROUPS[group])
    if not (stamp.exists() and stamp.read_text() == wanted):
        print(f"pip install --target {folder} {' '.join(GROUPS[group])}", file=sys.stderr)
        done = subprocess.run(  # noqa: S603 - our interpreter, pinned names
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--upgrade",
                "--target",
                str(folder),
                *GROUPS[group],
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ExtraMissing(f"pip could not install {group}: {done.stderr.strip()[-400:]}")
        stamp.write_text(wanted)
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder
