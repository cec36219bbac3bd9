"""Real HTTP servers on loopback for the tests: image hosts (plain, slow) and a webhook receiver."""

from __future__ import annotations

import threading
import time
from collections import Counter
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
    """Serves the files under `root`; `/html` answers a web page; anything else is 404. Every
    answer is readable by a page's script too (CORS), so the watch page can count bytes."""

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
            self.send_header("Access-Control-Allow-Origin", "*")
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


MUG = Path(__file__).resolve().parents[2] / "local_emulator" / "samples" / "images" / "mug.jpg"


@dataclass
class SlowImageHost:
    """One photo at every path: `/slow/...` sends its headers, then a byte every `step`
    seconds until `released` (or `hold_seconds` have passed), then the rest; any other path
    at once. Counts the requests of each path (`hits`) and the answers sent whole (`served`);
    `slow_asked` is set when a `/slow/` path is first asked for."""

    photo: bytes
    hold_seconds: float
    step: float
    hits: Counter[str] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)
    released: threading.Event = field(default_factory=threading.Event)
    slow_asked: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def fetched(self) -> int:
        """How many paths were asked for."""
        with self.lock:
            return len(self.hits)

    def slow_started(self) -> int:
        """How many `/slow/` paths were asked for."""
        with self.lock:
            return sum(1 for path in self.hits if path.startswith("/slow/"))


@contextmanager
def slow_image_host(
    hold_seconds: float, step: float = 0.25, photo: bytes | None = None
) -> Iterator[SlowImageHost]:
    """A `SlowImageHost` of `photo` (the sample mug unless told) on loopback; released on
    exit, so no answer holds the server's shutdown."""
    host = SlowImageHost(MUG.read_bytes() if photo is None else photo, hold_seconds, step)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            slow = self.path.startswith("/slow/")
            with host.lock:
                host.hits[self.path] += 1
            if slow:
                host.slow_asked.set()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(host.photo)))
            self.end_headers()
            sent = 0
            try:
                if slow:
                    deadline = time.monotonic() + host.hold_seconds
                    while not host.released.wait(host.step) and time.monotonic() < deadline:
                        self.wfile.write(host.photo[sent : sent + 1])
                        self.wfile.flush()
                        sent += 1
                self.wfile.write(host.photo[sent:])
                self.wfile.flush()
            except OSError:  # the fetcher gave up and closed the connection
                return
            with host.lock:
                host.served[self.path] += 1

    with serve(Handler) as host.url:
        try:
            yield host
        finally:
            host.released.set()
