"""Real HTTP servers on loopback for the tests: an image host and a webhook receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}


@contextmanager
def serve_bytes(body: bytes, content_type: str) -> Iterator[str]:
    """Answers every GET with the same body: many distinct URLs, one picture."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as base:
        yield base


@contextmanager
def image_host(root: Path) -> Iterator[str]:
    """Serves the files under `root`; `/html` answers a web page; anything else is 404."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            if name == "html":
                self._send(200, b"<html><body>not a picture</body></html>", "image/jpeg")
                return
            path = (root / name).resolve()
            if root.resolve() not in path.parents or not path.is_file():
                self._send(404, b"not found", "text/plain")
                return
            self._send(200, path.read_bytes(), TYPES.get(path.suffix, "application/octet-stream"))

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        yield url


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status_sent: int
    at: float = 0.0  # time.monotonic() on arrival


@dataclass
class WebhookReceiver:
    """Verifies each delivery's signature; answers `fail_first` deliveries with `fail_with`
    (500 unless told) and `fail_headers` (a Retry-After, say)."""

    secret: str
    fail_first: int = 0
    fail_with: int = 500
    fail_headers: Mapping[str, str] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, count: int, timeout: float) -> list[Delivery]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.deliveries) >= count, timeout)
            return list(self.deliveries)

    def successful(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status_sent < 300]


@contextmanager
def webhook_receiver(
    secret: str,
    fail_first: int = 0,
    *,
    fail_with: int = 500,
    fail_headers: Mapping[str, str] | None = None,
) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, fail_first, fail_with, dict(fail_headers or {}))
    verifier = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            arrived = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verifier.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
            with receiver.arrived:
                failing = len(receiver.deliveries) < receiver.fail_first
                code = receiver.fail_with if failing else 204 if verified else 500
                receiver.deliveries.append(Delivery(headers, body, verified, code, arrived))
                receiver.arrived.notify_all()
            self.send_response(code)
            for name, value in receiver.fail_headers.items() if failing else ():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve(Handler) as url:
        receiver.url = url + "/hook"
        yield receiver
