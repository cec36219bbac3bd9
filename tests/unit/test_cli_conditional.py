"""The CLI polls conditionally: against a loopback API that answers `304` to the current ETag
(as the real one does), every poll after the first sends `If-None-Match` with the tag of the
last answer to the same URL, and a `304` (no body) is read as that answer again."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from pipeline_cli.cli import Console, wait_for
from pipeline_cli.client import ApiClient
from tests.support.scripted_api import JOB, KEY
from tests.support.servers import serve

STATUS = f"/api/getProcessingStatus/{JOB}"


@dataclass
class ConditionalApi:
    """A job's status and the job list, each with a version: `W/"<path>-<version>"` is the
    tag, and If-None-Match naming it answers 304 with no body. Records each GET's path, its
    If-None-Match and the answer's status."""

    status: str = "processing"
    version: int = 1
    seen: list[tuple[str, str | None, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def document(self, path: str) -> dict[str, Any]:
        if path.startswith("/api/jobs"):
            return {"jobs": [{"requestId": JOB, "status": self.status}], "nextCursor": None}
        done = self.status == "completed"
        return {
            "requestId": JOB,
            "status": self.status,
            "progress": {"totalImages": 2, "processedImages": 2 if done else 1, "percent": 50.0},
            "products": [],
            "nextCursor": None,
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with api.lock:
                    tag = f'W/"{self.path}-{api.version}"'
                    sent = self.headers.get("If-None-Match")
                    fresh = sent == tag
                    api.seen.append((self.path, sent, 304 if fresh else 200))
                    body = b"" if fresh else json.dumps(api.document(path)).encode()
                self.send_response(304 if fresh else 200)
                self.send_header("ETag", tag)
                self.send_header("Cache-Control", "private, no-cache")
                if not fresh:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def api() -> Iterator[ConditionalApi]:
    conditional = ConditionalApi()
    with serve(conditional.handler()) as conditional.url:
        yield conditional


def test_waiting_polls_with_if_none_match_and_reuses_the_body_on_304(api: ConditionalApi) -> None:
    client = ApiClient(api.url, api_key=KEY)
    console = Console(io.StringIO(), io.StringIO())
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the job ends after the fourth poll
        sleeps.append(seconds)
        if len(sleeps) == 3:
            with api.lock:
                api.status, api.version = "completed", 2

    final = wait_for(client, JOB, console, interval=0.5, timeout=0, sleep=sleep)
    assert final is not None and final["status"] == "completed"
    polls = [(sent, code) for path, sent, code in api.seen if path == f"{STATUS}?limit=1"]
    first_tag = f'W/"{STATUS}?limit=1-1"'
    assert polls == [
        (None, 200),
        (first_tag, 304),
        (first_tag, 304),
        (first_tag, 200),  # changed: the new document
    ]
    shown = console.err.getvalue().splitlines()  # type: ignore[attr-defined]
    assert shown and all(" processing " in line or " completed " in line for line in shown)
    assert any("images 1/2" in line for line in shown)  # the 304s read as the kept document


def test_the_job_list_and_each_page_keep_their_own_tag(api: ConditionalApi) -> None:
    client = ApiClient(api.url, api_key=KEY)
    first = client.jobs(limit=5)
    assert client.jobs(limit=5) == first  # a 304, the body kept
    client.jobs(limit=6)  # another URL: no tag of its own yet
    assert client.status(JOB, limit=1)["status"] == "processing"
    assert client.status(JOB, limit=1)["status"] == "processing"
    assert [(path, sent is not None, code) for path, sent, code in api.seen] == [
        ("/api/jobs?limit=5", False, 200),
        ("/api/jobs?limit=5", True, 304),
        ("/api/jobs?limit=6", False, 200),
        (f"{STATUS}?limit=1", False, 200),
        (f"{STATUS}?limit=1", True, 304),
    ]
    kept = client.jobs(limit=5)
    kept["jobs"].clear()  # a caller's changes do not touch the kept answer
    assert client.jobs(limit=5) == first
