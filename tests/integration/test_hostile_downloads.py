"""Hostile servers, for real: jobs whose images come from a loopback HTTP server that
redirects to forbidden places, trickles, lies about sizes, bombs with gzip or serves web pages.

The image server listens on 127.0.0.2 and the guard's policy allows that one address, so
every other address (127.0.0.1 included) is refused as in production. A socket hook refuses
and records any connection beyond loopback, so nothing leaves the machine even if the guard
broke. Each case runs a job through the services with the real HttpImageFetcher and asserts
the hostile row's code and that the other rows completed.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import ipaddress
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from chalicelib.adapters.guarded_http import GuardedResolver
from chalicelib.adapters.image_download import HttpImageFetcher
from chalicelib.config import Settings
from chalicelib.domain.models import ImageErrorCode, JobStatus, RowStatus
from chalicelib.domain.netguard import IPAddress, decide
from chalicelib.entrypoints import queue_handlers
from chalicelib.services import upload
from PIL import Image

from tests.fakes import FakeWorld, make_world
from tests.unit.test_hostile_input import drain, storage_record

SERVER_IP = "127.0.0.2"
HEADER = "S. No.,Product Name,Input Image Urls\n"
CAP = 256 * 1024
DEADLINE = 1.0


def picture() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(out, "JPEG", quality=90)
    return out.getvalue()


PICTURE = picture()
GZIP_BOMB = gzip.compress(b"\x00" * (8 * 1024 * 1024), 9)


HITS: Counter[str] = Counter()  # requests per path and query, every hop counted
HITS_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        with HITS_LOCK:
            HITS[self.path] += 1
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = getattr(self, "route_" + parts.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send(404, b"not found", "text/plain")
            return
        route(query)

    def send(self, code: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def route_img(self, query: dict[str, str]) -> None:
        self.send(200, PICTURE, "image/jpeg")

    def route_to(self, query: dict[str, str]) -> None:
        self.send(int(query.get("code", "302")), b"", "text/plain", Location=query["u"])

    def route_hops(self, query: dict[str, str]) -> None:
        left = int(query["n"])
        target = "/img" if left <= 1 else f"/hops?n={left - 1}"  # n redirects in all
        self.send(302, b"", "text/plain", Location=target)

    def route_loop(self, query: dict[str, str]) -> None:
        self.send(302, b"", "text/plain", Location="/loop")

    def route_html(self, query: dict[str, str]) -> None:
        self.send(200, b"<!doctype html><title>404</title>", "image/jpeg")

    def route_svg(self, query: dict[str, str]) -> None:
        self.send(200, b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml")

    def route_json(self, query: dict[str, str]) -> None:
        self.send(200, b'{"url": "https://x.test/a.jpg"}', "image/png")

    def route_status(self, query: dict[str, str]) -> None:
        self.send(int(query["code"]), b"error", "text/plain")

    def route_declared_big(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(CAP * 100))
        self.end_headers()
        self.wfile.write(PICTURE)

    def route_endless(self, query: dict[str, str]) -> None:
        """No length, then more bytes than the cap (the connection closes the body)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = PICTURE + b"\x00" * 65536
        for _ in range(CAP // len(chunk) + 4):
            self.wfile.write(chunk)

    def route_chunked_big(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = b"\xff" * 65536
        for _ in range(CAP // len(piece) + 4):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def route_gzip_bomb(self, query: dict[str, str]) -> None:
        self.send(200, GZIP_BOMB, "image/jpeg", Content_Encoding="gzip")

    def route_trickle_body(self, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(PICTURE)))
        self.end_headers()
        self._trickle(PICTURE)

    def route_trickle_headers(self, query: dict[str, str]) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        self._trickle(b"X-Slow: " + b"a" * 400)

    def _trickle(self, data: bytes) -> None:
        for byte in data:
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)


@contextmanager
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer((SERVER_IP, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{SERVER_IP}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    with image_server() as where:
        yield where


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        try:
            loopback = ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except (ValueError, TypeError, IndexError):
            loopback = False
        if not loopback:
            attempts.append(address)
            raise ConnectionRefusedError(f"test hook: no connection to {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"tried to connect beyond loopback: {attempts}"


DNS = {"images.test": [SERVER_IP], "evil.test": ["10.0.0.1"], "meta.test": ["169.254.169.254"]}


def resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise socket.gaierror(socket.EAI_NONAME, host)
    return list(DNS[host])


def policy(ip: IPAddress) -> str | None:
    """Production's rules, except for the test server's own address."""
    return None if str(ip) == SERVER_IP else decide(ip, False)


def fetcher() -> HttpImageFetcher:
    return HttpImageFetcher(
        max_bytes=CAP,
        connect_timeout=1,
        read_timeout=DEADLINE * 3,
        deadline=DEADLINE,
        allow_private=False,
        guard=GuardedResolver(allow_private=False, resolve=resolve, policy=policy),
    )


def world_with_real_fetcher() -> FakeWorld:
    wanted: dict[str, Any] = {"fetch_attempts": 1, "fetch_backoff": 0.0}
    known = {f.name for f in dataclasses.fields(Settings)}
    settings = Settings(
        webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        **{k: v for k, v in wanted.items() if k in known},
    )
    world = make_world(settings)
    world.deps.fetcher = fetcher()
    return world


def run(world: FakeWorld, good: str, hostile: str) -> dict[int, tuple[RowStatus, list[str]]]:
    text = HEADER + f"1,Good,{good}\n2,Hostile,{hostile}\n3,Good too,{good}?again\n"
    accepted = upload.submit_csv(world.deps, text.encode(), None, None, "default")
    queue_handlers.ingest(world.deps, [storage_record(accepted.job.input_key)])
    drain(world)
    job = world.store.get_job(accepted.job.request_id)
    assert job is not None and job.status == JobStatus.COMPLETED_WITH_ERRORS
    return {
        row.serial: (row.status, [str(e["code"]) for e in row.errors])
        for row in world.store.iter_rows(accepted.job.request_id)
    }


CASES: list[tuple[str, str, ImageErrorCode]] = [
    # redirects to forbidden addresses, each hop checked again
    ("redirect-to-rfc1918", "/to?u=http://10.0.0.1/a.jpg", ImageErrorCode.BLOCKED_ADDRESS),
    (
        "redirect-to-metadata",
        "/to?u=http://169.254.169.254/latest/",
        ImageErrorCode.BLOCKED_ADDRESS,
    ),
    ("redirect-to-other-loopback", "/to?u=http://127.0.0.1/a.jpg", ImageErrorCode.BLOCKED_ADDRESS),
    ("redirect-to-decimal-ip", "/to?u=http://2130706433/a.jpg", ImageErrorCode.BLOCKED_ADDRESS),
    ("redirect-to-localhost", "/to?u=http://localhost/a.jpg", ImageErrorCode.BLOCKED_ADDRESS),
    (
        "redirect-307-to-mapped-v6",
        "/to?code=307&u=http://[::ffff:a9fe:a9fe]/",
        ImageErrorCode.BLOCKED_ADDRESS,
    ),
    ("redirect-to-name-of-private", "/to?u=http://evil.test/a.jpg", ImageErrorCode.BLOCKED_ADDRESS),
    ("redirect-scheme-relative", "/to?u=//meta.test/latest/", ImageErrorCode.BLOCKED_ADDRESS),
    ("redirect-to-file", "/to?u=file:///etc/passwd", ImageErrorCode.INVALID_URL),
    ("redirect-to-ftp", "/to?u=ftp://images.test/a.jpg", ImageErrorCode.INVALID_URL),
    ("redirect-to-gopher", "/to?u=gopher://images.test:70/_x", ImageErrorCode.INVALID_URL),
    ("redirect-with-credentials", "/to?u=http://u:p@images.test/img", ImageErrorCode.INVALID_URL),
    ("six-redirects", "/hops?n=6", ImageErrorCode.HTTP_ERROR),
    ("redirect-loop", "/loop", ImageErrorCode.HTTP_ERROR),
    # sizes and time
    ("declared-length-over-cap", "/declared-big", ImageErrorCode.TOO_LARGE),
    ("no-length-over-cap", "/endless", ImageErrorCode.TOO_LARGE),
    ("chunked-over-cap", "/chunked-big", ImageErrorCode.TOO_LARGE),
    ("gzip-bomb", "/gzip-bomb", ImageErrorCode.TOO_LARGE),
    ("trickling-body", "/trickle-body", ImageErrorCode.TIMEOUT),
    ("trickling-headers", "/trickle-headers", ImageErrorCode.TIMEOUT),
    # content that is not a picture, whatever the Content-Type says
    ("html-as-image-jpeg", "/html", ImageErrorCode.NOT_AN_IMAGE),
    ("svg", "/svg", ImageErrorCode.NOT_AN_IMAGE),
    ("json-as-image-png", "/json", ImageErrorCode.NOT_AN_IMAGE),
    ("http-404", "/status?code=404", ImageErrorCode.HTTP_ERROR),
]


@pytest.mark.parametrize(
    ("path", "code"), [(p, c) for _, p, c in CASES], ids=[n for n, _, _ in CASES]
)
def test_url_hostile_server_fails_one_image_and_the_job_goes_on(
    host: str, path: str, code: ImageErrorCode
) -> None:
    good = f"http://images.test:{host.split(':')[1]}/img"
    started = time.monotonic()
    rows = run(world_with_real_fetcher(), good, f"http://{host}{path}")
    assert rows[2] == (RowStatus.FAILED, [str(code)])
    assert rows[1] == rows[3] == (RowStatus.COMPLETED, [])
    assert time.monotonic() - started < DEADLINE * 6  # nothing held a worker for long


def test_url_five_redirects_are_still_followed(host: str) -> None:
    assert fetcher().fetch(f"http://{host}/hops?n=5") == PICTURE


# Transient on every try: each is fetched as often as FETCH_ATTEMPTS allows, never more.
RETRIED = {"/status?code=503", "/status?code=429"}


@pytest.mark.parametrize(
    "path",
    [p for _, p, _ in CASES] + sorted(RETRIED),
    ids=[n for n, _, _ in CASES] + sorted(RETRIED),
)
def test_url_hostile_fetched_no_more_often_than_the_retry_policy_allows(
    host: str, path: str
) -> None:
    """With the default three attempts: what is permanent (blocked, too large, not an image,
    a 404) and what trickles until the deadline is fetched once; what fails transiently
    (a 503, a 429) three times, no more."""
    world = world_with_real_fetcher()
    world.deps.settings = dataclasses.replace(
        world.deps.settings, fetch_attempts=3, fetch_backoff=0.01, download_deadline=DEADLINE
    )
    calls: Counter[str] = Counter()
    real = world.deps.fetcher

    class Counting:
        def fetch(self, url: str) -> bytes:
            calls[url] += 1
            return real.fetch(url)

    world.deps.fetcher = Counting()
    hostile = f"http://{host}{path}"
    good = f"http://images.test:{host.split(':')[1]}/img"
    with HITS_LOCK:
        HITS.clear()
    run(world, good, hostile)
    expected = 3 if path in RETRIED else 1
    assert calls[hostile] == expected
    if not path.startswith(("/to", "/hops", "/loop")):  # no hop of its own: one request each
        with HITS_LOCK:
            assert HITS[path] == expected, dict(HITS)
