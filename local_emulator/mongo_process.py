"""The embedded MongoDB-compatible server in a process of its own (the emulator's default).

mongoeco is pure Python: in the emulator's process its event loop takes the GIL from the
image threads for every command (docs/performance.md). On AWS the database is a service of its
own too. The parent (`MongoProcess`) starts `python -m local_emulator.mongo_process`, gives it
its settings (credentials included) as one JSON line on its stdin, never on the command line,
and reads one JSON line back: the URI, or why the server could not start. The child serves
until its stdin closes: the parent's `stop()` closes it, and so does the parent's death by any
signal, SIGKILL included, so no server outlives its stack. The child is in a session of its
own: a Ctrl-C at the terminal reaches the emulator, which stops the server in its order.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from local_emulator.mongo import EmbeddedMongo, MongoEngine

if TYPE_CHECKING:
    from local_emulator.credentials import MongoCredentials

REPO = Path(__file__).resolve().parent.parent
START_SECONDS = 30.0
STOP_SECONDS = 15.0


class MongoProcess:
    """`EmbeddedMongo`'s surface (`start()` returns the URI; `stop()`), its server in a child
    process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: MongoEngine = "memory",
        data_dir: Path | None = None,
        credentials: MongoCredentials | None = None,
    ) -> None:
        self._settings: dict[str, Any] = {
            "host": host,
            "port": port,
            "engine": engine,
            "dataDir": str(data_dir.resolve()) if data_dir is not None else None,
            "credentials": (
                {"username": credentials.username, "password": credentials.password}
                if credentials is not None
                else None
            ),
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._uri = ""

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "local_emulator.mongo_process"],
            cwd=REPO,  # where `-m` finds local_emulator (the data directory's path is absolute)
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps(self._settings).encode() + b"\n")
            self._process.stdin.flush()
            answer = _read_line(self._process.stdout, START_SECONDS)
            if not answer:
                raise RuntimeError(
                    "the embedded MongoDB server's process ended before it served "
                    f"(exit status {self._process.poll()})"
                )
            reply = json.loads(answer)
            if "error" in reply:
                raise RuntimeError(f"the embedded MongoDB server did not start: {reply['error']}")
            self._uri = str(reply["uri"])
            return self._uri
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the child's signal to stop
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS)
            raise TimeoutError(
                f"the embedded MongoDB server did not stop within {STOP_SECONDS:.0f} s; killed"
            ) from None
        finally:
            if process.stdout is not None:
                process.stdout.close()


def _read_line(stream: IO[bytes], seconds: float) -> bytes:
    """One line from the child, or b"" if it ended first; TimeoutError after `seconds`."""
    deadline = time.monotonic() + seconds
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the embedded MongoDB server did not start within {seconds:.0f} s")
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return b""
            line += chunk
    return line


def main() -> int:
    """The child: read the settings, serve, say the URI, and serve until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    from local_emulator.credentials import MongoCredentials

    out = sys.stdout
    settings = json.loads(sys.stdin.readline() or "{}")
    given = settings.get("credentials")
    server = EmbeddedMongo(
        host=settings.get("host", "127.0.0.1"),
        port=int(settings.get("port", 0)),
        engine=settings.get("engine", "memory"),
        data_dir=Path(settings["dataDir"]) if settings.get("dataDir") else None,
        credentials=MongoCredentials(given["username"], given["password"]) if given else None,
    )
    stop_now = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop_now
        stop_now = True
        os.close(0)  # wakes the read below

    signal.signal(signal.SIGTERM, on_term)
    try:
        uri = server.start()
    except BaseException as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"uri": uri}) + "\n")
    out.flush()
    try:
        while not stop_now and os.read(0, 4096):
            pass  # nothing is sent after the settings: EOF is the signal
    except OSError:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
