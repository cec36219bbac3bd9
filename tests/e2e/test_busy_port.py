"""`serve` and `demo` on a port another program holds: one line naming the address they could
not bind and how to choose another, no traceback, a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_busy_port_is_named_with_how_to_choose_another(command: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "local_emulator", command, "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=180,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: the API cannot listen on 127.0.0.1:{port}: address already in use; another "
        f"program holds port {port}: choose another with --port N (--port 0: any free port)\n"
    )
