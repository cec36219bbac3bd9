"""`make demo` and `make serve` run `python -m local_emulator` from the repository's root:
the functions' code directory is not on the path until the stack puts it there for the
handlers it loads. So no module of the emulator may import `chalicelib` at import time (the
tests' `pythonpath` has functions/ on it, and would hide such an import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_emulators_command_imports_without_the_functions_on_the_path() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = (
        "import sys; import local_emulator.cli, local_emulator.stack, "
        "local_emulator.containers; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'chalicelib'))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
