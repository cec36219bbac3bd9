"""`python -m local_emulator demo` (what `make demo` runs), end to end as a person runs it: it
uses the emulator's API key by itself and never prints it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_the_demo_finishes_with_the_emulators_key_and_never_shows_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "local_emulator", "demo", "--timeout", "240"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = result.stdout.splitlines()
    assert any(line.startswith("ready http://127.0.0.1:") for line in lines), output
    assert "signature verified" in lines, output
    assert any(line.startswith("done: job ") for line in lines), output
    assert (
        "== output CSV" in lines
        and "S. No.,Product Name,Input Image Urls,Output Image Urls" in (result.stdout)
    )
    assert "ipk_" not in output  # an API key (tenancy.new_api_key) never reaches the screen
