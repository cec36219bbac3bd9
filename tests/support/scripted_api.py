"""A scripted API and a scripted storage on loopback for the CLI's tests: each answers a route
with the answers the test gave it, in order, and records every request, so what goes over the
wire is checked, not what the code meant to send.

The fixtures `api` and `storage` (one server each, started once per module, emptied before
each test) are imported by the modules that use them:
`from tests.support.scripted_api import api_fixture, servers_fixture, storage_fixture`."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from pipeline_cli.cli import main
from tests.support.servers import serve

KEY = "ipk_0123456789ab_s3cr3t-value-never-printed"
JOB = "7ccca9c7-868c-417e-baee-5f244c0fda81"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Scripted:
    """Answers (method, path without query) with the next scripted (status, headers, body);
    the last answer of a route repeats. Records every request."""

    answers: dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] = field(
        default_factory=dict
    )
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def reset(self) -> None:
        with self.lock:
            self.answers.clear()
            self.seen.clear()

    def on(self, method: str, path: str, status: int, body: Any, **headers: str) -> None:
        self.answers.setdefault((method, path), []).append((status, headers, body))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                with script.lock:
                    script.seen.append(
                        Seen(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                        )
                    )
                    queue = script.answers.get((self.command, path)) or [
                        (404, {}, {"error": "no such route", "details": []})
                    ]
                    status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        return Handler


@pytest.fixture(scope="module", name="scripted_servers")
def servers_fixture() -> Iterator[tuple[Scripted, Scripted]]:
    """The API and storage, started once for the module (a server takes 0.5 s to stop)."""
    api, storage = Scripted(), Scripted()
    with serve(api.handler()) as api.url, serve(storage.handler()) as storage.url:
        yield api, storage


@pytest.fixture(name="api")
def api_fixture(scripted_servers: tuple[Scripted, Scripted]) -> Scripted:
    for script in scripted_servers:
        script.reset()
    return scripted_servers[0]


@pytest.fixture(name="storage")
def storage_fixture(scripted_servers: tuple[Scripted, Scripted], api: Scripted) -> Scripted:
    return scripted_servers[1]


def run(api: Scripted, *argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI against the scripted API: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = main(["--api", api.url, *argv], out, err, environ=environ or {})
    return code, out.getvalue(), err.getvalue()


def status_doc(status: str = "completed", **extra: Any) -> dict[str, Any]:
    """A job's status document as the API answers it (two images, both done)."""
    return {
        "requestId": JOB,
        "status": status,
        "progress": {"totalImages": 2, "processedImages": 2, "percent": 100.0},
        "products": [],
        "nextCursor": None,
        **extra,
    }
