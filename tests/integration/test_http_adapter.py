"""The requests adapters against real HTTP servers on 127.0.0.1.

A safety net (autouse) replaces socket connect for the duration of every test: it records
each attempt and refuses any destination that is not loopback, so no test here can send a
packet elsewhere, whatever the code under test decides. Refusals of private or metadata
addresses are shown with a resolver the test injects, and the recorded attempts prove the
guard refused before connecting.
"""

from __future__ import annotations

import datetime
import errno
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from chalicelib.adapters.guarded_http import GuardedResolver, url_refusal
from chalicelib.adapters.image_download import HttpImageFetcher
from chalicelib.adapters.webhook_delivery import HttpWebhookSender
from chalicelib.domain.models import ImageErrorCode
from chalicelib.domain.netguard import IPAddress, decide
from chalicelib.errors import ImageFailure
from chalicelib.ports import DeliveryResult

from tests.support.servers import serve

pytestmark = pytest.mark.timeout(30)

CAP = 1000
IMAGE = bytes(range(256)) * 3  # 768 bytes, under the cap
STOP = threading.Event()  # wakes every sleeping handler when the module is done


# -- the safety net ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every connect attempt, in order. Anything but loopback is refused before a packet."""
    attempts: list[tuple[str, int]] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        attempts.append((host, port))
        if not ipaddress.ip_address(host.split("%", maxsplit=1)[0]).is_loopback:
            raise OSError(errno.ENETUNREACH, f"test safety net: refused to connect to {host}")
        real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        try:
            guarded_connect(self, address)
        except OSError as exc:
            return exc.errno or errno.ECONNREFUSED
        return 0

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    return attempts


# -- a scriptable image host ---------------------------------------------------------------


@dataclass
class Seen:
    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]


@dataclass
class Host:
    url: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def chunked(data: bytes, size: int = 1000) -> bytes:
    out = b""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\n\r\n"


def make_handler(host: Host) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def handle(self) -> None:
            try:
                super().handle()
            except OSError:  # a client that closed a kept-alive connection with a reset
                self.close_connection = True

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            self._handle(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

        def _handle(self, body: bytes) -> None:
            parts = urlsplit(self.path)
            host.seen.append(
                Seen(
                    parts.path,
                    self.command,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    self.client_address,
                )
            )
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            try:
                self._route(parts.path, query)
            except OSError:  # the client went away (on purpose, in several tests)
                self.close_connection = True

        def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _raw(self, data: bytes) -> None:
            self.close_connection = True
            self.wfile.write(data)

        def _route(self, path: str, query: dict[str, str]) -> None:
            if path == "/ok":
                self._send(200, IMAGE, Content_Type="image/jpeg")
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), b"nope")
            elif path.startswith("/redirect/"):
                left = int(path.rsplit("/", 1)[1])
                if left == 0:
                    self._send(200, IMAGE)
                else:
                    self._send(302, Location=f"/redirect/{left - 1}")
            elif path == "/to":
                self._send(int(query.get("code", "302")), Location=query["url"])
            elif path == "/big-declared":
                self._send(200, b"x" * (CAP * 10))
            elif path == "/lying-length-chunked":
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n"
                head += b"\r\n"
                self._raw(head + chunked(b"x" * (CAP * 5)))
            elif path == "/lying-length-short":
                self._raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"y" * (CAP * 5))
            elif path == "/chunked-big":
                head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                self._raw(head + chunked(b"z" * (CAP * 5)))
            elif path == "/no-length-big":
                self._raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"w" * (CAP * 5))
            elif path == "/exactly-cap":
                self._send(200, b"e" * CAP)
            elif path == "/trickle-body":
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.close_connection = True
                for _ in range(100):
                    self.wfile.write(b"t")
                    if STOP.wait(0.2):
                        return
            elif path == "/trickle-headers":
                self.close_connection = True
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100):
                    self.wfile.write(b"s")
                    if STOP.wait(0.2):
                        return
            elif path == "/stall-headers":
                self.close_connection = True
                STOP.wait(float(query.get("seconds", "3")))
            elif path == "/stall-body":
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.close_connection = True
                self.wfile.write(b"s" * 10)
                STOP.wait(3)
            elif path == "/hook":
                extra = {"Retry-After": query["retry"]} if "retry" in query else {}
                self._send(int(query.get("code", "200")), b'{"ok": true}', **extra)
            else:
                self._send(404, b"not found")

    return Handler


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    box = Host(url="")
    with serve(make_handler(box)) as url:
        box.url = url
        yield box
        STOP.set()


@pytest.fixture(autouse=True)
def _forget_requests(host: Host) -> None:
    host.seen.clear()


# -- helpers ---------------------------------------------------------------------------------


class FakeDns:
    """A resolver with fixed answers; a list of answers per name is used in turn (the last
    one repeats), to script a name whose address changes between two lookups."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def __call__(self, name: str, port: int) -> list[str]:
        self.calls.append(name)
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: unknown to the fake DNS")
        sequence = self.answers[name]
        index = min(self.calls.count(name), len(sequence)) - 1
        return list(sequence[index])


def fetcher(**overrides: Any) -> HttpImageFetcher:
    options: dict[str, Any] = {
        "max_bytes": CAP,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "deadline": 5.0,
        "allow_private": True,
    }
    options.update(overrides)
    return HttpImageFetcher(**options)


def fetch_failure(fetch: Callable[[], bytes]) -> ImageFailure:
    with pytest.raises(ImageFailure) as caught:
        fetch()
    return caught.value


def only_loopback_server(ip: IPAddress) -> str | None:
    """A policy for guarded tests: the test server's loopback is reachable, nothing else
    that the real guard refuses is."""
    return None if ip == ipaddress.ip_address("127.0.0.1") else decide(ip, allow_private=False)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- downloads -------------------------------------------------------------------------------


def test_200_returns_the_bytes(host: Host) -> None:
    assert fetcher().fetch(host.url + "/ok") == IMAGE
    assert host.seen[0].headers["user-agent"] == "image-pipeline/0.1"


def test_404_is_an_http_error_that_is_not_retried(host: Host) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + "/status/404"))
    assert failure.code == ImageErrorCode.HTTP_ERROR
    assert "404" in failure.message
    assert failure.retryable is False


@pytest.mark.parametrize("status", [503, 500, 429])
def test_5xx_and_429_are_http_errors_worth_retrying(host: Host, status: int) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + f"/status/{status}"))
    assert failure.code == ImageErrorCode.HTTP_ERROR
    assert str(status) in failure.message
    assert failure.retryable is True


def test_a_chain_of_three_redirects_is_followed(host: Host) -> None:
    assert fetcher().fetch(host.url + "/redirect/3") == IMAGE
    assert host.paths() == ["/redirect/3", "/redirect/2", "/redirect/1", "/redirect/0"]


def test_five_redirects_are_the_most_followed(host: Host) -> None:
    assert fetcher().fetch(host.url + "/redirect/5") == IMAGE


def test_a_sixth_redirect_is_refused(host: Host) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + "/redirect/6"))
    assert failure.code == ImageErrorCode.HTTP_ERROR
    assert "too many redirects" in failure.message
    assert failure.retryable is False
    assert len(host.seen) == 6  # the original request and five redirects, no more


def test_a_redirect_to_another_scheme_is_an_invalid_url(host: Host) -> None:
    url = host.url + "/to?url=" + quote("file:///etc/passwd")
    failure = fetch_failure(lambda: fetcher().fetch(url))
    assert failure.code == ImageErrorCode.INVALID_URL
    assert "redirect" in failure.message


def test_a_3xx_without_location_is_an_http_error(host: Host) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + "/status/302"))
    assert failure.code == ImageErrorCode.HTTP_ERROR
    assert "302" in failure.message


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.jpg", "http://user:pw@example.com/a.jpg", "not a url"]
)
def test_invalid_urls_are_refused_before_any_lookup(url: str, connects: list[object]) -> None:
    dns = FakeDns({})
    failure = fetch_failure(lambda: fetcher(resolve=dns).fetch(url))
    assert failure.code == ImageErrorCode.INVALID_URL
    assert failure.retryable is False
    assert dns.calls == [] and connects == []


# -- the address guard -----------------------------------------------------------------------


def test_a_guarded_fetch_by_name_connects_to_the_vetted_address(
    host: Host, connects: list[tuple[str, int]]
) -> None:
    dns = FakeDns({"images.example.test": [["127.0.0.1"]]})
    data = fetcher(resolve=dns).fetch(f"http://images.example.test:{host.port}/ok")
    assert data == IMAGE
    assert dns.calls == ["images.example.test"]
    assert connects == [("127.0.0.1", host.port)]
    assert host.seen[0].headers["host"] == f"images.example.test:{host.port}"


def test_loopback_is_refused_when_private_hosts_are_not_allowed(
    host: Host, connects: list[object]
) -> None:
    failure = fetch_failure(lambda: fetcher(allow_private=False).fetch(host.url + "/ok"))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert failure.retryable is False
    assert connects == [] and host.seen == []


@pytest.mark.parametrize("answer", ["10.0.0.5", "169.254.169.254", "::ffff:169.254.169.254"])
def test_a_name_resolving_to_a_forbidden_address_is_refused_without_connecting(
    answer: str, connects: list[object]
) -> None:
    dns = FakeDns({"images.example.test": [[answer]]})
    guarded = fetcher(allow_private=False, resolve=dns)
    failure = fetch_failure(lambda: guarded.fetch("http://images.example.test/a.jpg"))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert answer in failure.message
    assert dns.calls == ["images.example.test"]
    assert connects == []


def test_one_forbidden_answer_among_several_refuses_the_name(connects: list[object]) -> None:
    dns = FakeDns({"images.example.test": [["127.0.0.1", "10.0.0.5"]]})
    guard = GuardedResolver(allow_private=False, resolve=dns, policy=only_loopback_server)
    failure = fetch_failure(lambda: fetcher(guard=guard).fetch("http://images.example.test/a"))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert "10.0.0.5" in failure.message
    assert connects == []


@pytest.mark.parametrize(
    "literal",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/a.jpg",
        "http://2852039166/latest/meta-data/",
        "http://0xa9fea9fe/latest/meta-data/",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://[fd00::1]/a.jpg",
    ],
)
def test_literal_forbidden_addresses_are_refused_without_dns_or_connection(
    literal: str, connects: list[object]
) -> None:
    dns = FakeDns({})
    failure = fetch_failure(lambda: fetcher(allow_private=False, resolve=dns).fetch(literal))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert dns.calls == [] and connects == []


@pytest.mark.parametrize(
    "target",
    [
        "http://metadata.example.test/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:10.0.0.1]/",
        "http://10.0.0.5:8080/a.jpg",
    ],
)
def test_a_redirect_to_a_forbidden_address_is_refused_when_guarded(
    host: Host, target: str, connects: list[tuple[str, int]]
) -> None:
    dns = FakeDns(
        {"images.example.test": [["127.0.0.1"]], "metadata.example.test": [["169.254.169.254"]]}
    )
    guard = GuardedResolver(allow_private=False, resolve=dns, policy=only_loopback_server)
    url = f"http://images.example.test:{host.port}/to?url=" + quote(target)
    failure = fetch_failure(lambda: fetcher(guard=guard).fetch(url))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert host.paths() == ["/to"]  # the first hop happened, the second never connected
    assert connects == [("127.0.0.1", host.port)]


def test_dns_rebinding_is_caught_at_connect_time(connects: list[object]) -> None:
    """The name passes a check (public answer), then answers loopback when the connection
    is made: the connection-time guard refuses, and nothing connects anywhere."""
    dns = FakeDns({"rebind.example.test": [["8.8.8.8"], ["127.0.0.1"]]})
    url = "http://rebind.example.test/a.jpg"
    assert url_refusal(url, allow_private=False, resolve=dns) is None
    failure = fetch_failure(lambda: fetcher(allow_private=False, resolve=dns).fetch(url))
    assert failure.code == ImageErrorCode.BLOCKED_ADDRESS
    assert "127.0.0.1" in failure.message
    assert dns.calls == ["rebind.example.test", "rebind.example.test"]
    assert connects == []


def test_a_name_that_does_not_resolve_is_a_fetch_failure(connects: list[object]) -> None:
    failure = fetch_failure(lambda: fetcher(resolve=FakeDns({})).fetch("http://nowhere.test/a"))
    assert failure.code == ImageErrorCode.FETCH_FAILED
    assert failure.retryable is True
    assert connects == []


# -- size cap --------------------------------------------------------------------------------


def test_a_declared_length_over_the_cap_is_refused_early(host: Host) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + "/big-declared"))
    assert failure.code == ImageErrorCode.TOO_LARGE
    assert "declared" in failure.message
    assert failure.retryable is False


@pytest.mark.parametrize("path", ["/lying-length-chunked", "/chunked-big", "/no-length-big"])
def test_the_cap_holds_while_streaming_whatever_the_headers_say(host: Host, path: str) -> None:
    failure = fetch_failure(lambda: fetcher().fetch(host.url + path))
    assert failure.code == ImageErrorCode.TOO_LARGE
    assert str(CAP) in failure.message


def test_a_short_length_cannot_smuggle_more_bytes_than_declared(host: Host) -> None:
    assert fetcher().fetch(host.url + "/lying-length-short") == b"y" * 10


def test_a_body_exactly_at_the_cap_is_accepted(host: Host) -> None:
    assert len(fetcher().fetch(host.url + "/exactly-cap")) == CAP


# -- time limits -----------------------------------------------------------------------------


def test_a_trickling_body_hits_the_total_deadline(host: Host) -> None:
    started = time.monotonic()
    failure = fetch_failure(
        lambda: fetcher(deadline=1.0, read_timeout=5.0).fetch(host.url + "/trickle-body")
    )
    elapsed = time.monotonic() - started
    assert failure.code == ImageErrorCode.TIMEOUT
    assert "deadline" in failure.message
    assert failure.retryable is False  # slow, not failing: not worth two more deadlines
    assert 0.9 <= elapsed < 2.5


def test_trickling_headers_hit_the_total_deadline(host: Host) -> None:
    started = time.monotonic()
    failure = fetch_failure(
        lambda: fetcher(deadline=1.0, read_timeout=5.0).fetch(host.url + "/trickle-headers")
    )
    assert failure.code == ImageErrorCode.TIMEOUT
    assert failure.retryable is False
    assert time.monotonic() - started < 2.5


def test_the_deadline_is_measured_with_the_injected_clock(host: Host) -> None:
    ticks = iter(range(0, 1000, 10))  # each look at the clock: ten more seconds
    slow = fetcher(deadline=15.0, clock=lambda: float(next(ticks)))
    failure = fetch_failure(lambda: slow.fetch(host.url + "/ok"))
    assert failure.code == ImageErrorCode.TIMEOUT


def test_a_server_silent_before_the_headers_hits_the_read_timeout(host: Host) -> None:
    started = time.monotonic()
    failure = fetch_failure(
        lambda: fetcher(read_timeout=0.3, deadline=10.0).fetch(host.url + "/stall-headers")
    )
    assert failure.code == ImageErrorCode.TIMEOUT
    assert failure.retryable is True
    assert time.monotonic() - started < 2.0


def test_a_server_silent_mid_body_hits_the_read_timeout(host: Host) -> None:
    started = time.monotonic()
    failure = fetch_failure(
        lambda: fetcher(read_timeout=0.3, deadline=10.0).fetch(host.url + "/stall-body")
    )
    assert failure.code == ImageErrorCode.TIMEOUT
    assert time.monotonic() - started < 2.0


def test_a_refused_connection_is_a_fetch_failure_worth_retrying() -> None:
    failure = fetch_failure(lambda: fetcher().fetch(f"http://127.0.0.1:{closed_port()}/a.jpg"))
    assert failure.code == ImageErrorCode.FETCH_FAILED
    assert failure.retryable is True


# -- one session, pooled, shared by threads --------------------------------------------------


def test_downloads_reuse_pooled_connections(host: Host) -> None:
    shared = fetcher()
    for _ in range(3):
        assert shared.fetch(host.url + "/ok") == IMAGE
    assert len({s.client for s in host.seen}) == 1


def test_one_fetcher_serves_a_thread_pool(host: Host) -> None:
    shared = fetcher()
    results: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        data = shared.fetch(host.url + "/redirect/1")
        with lock:
            results.append(data)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [IMAGE] * 8


# -- TLS through the guard: SNI and certificate checks use the name ------------------------


@dataclass
class TlsHost:
    url_port: int
    ca_file: Path


def _tls_material(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


@pytest.fixture(scope="module")
def tls_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsHost]:
    ca_file, cert_file, key_file = _tls_material(
        tmp_path_factory.mktemp("tls"), "images.example.test"
    )
    box = Host(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(box))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TlsHost(int(server.server_address[1]), ca_file)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_https_by_name_verifies_the_certificate_for_that_name(
    tls_host: TlsHost, connects: list[tuple[str, int]]
) -> None:
    session = requests.Session()
    session.verify = str(tls_host.ca_file)
    dns = FakeDns({"images.example.test": [["127.0.0.1"]]})
    secure = fetcher(session=session, resolve=dns)
    assert secure.fetch(f"https://images.example.test:{tls_host.url_port}/ok") == IMAGE
    assert dns.calls == ["images.example.test"]
    assert connects == [("127.0.0.1", tls_host.url_port)]


def test_https_to_a_name_the_certificate_does_not_cover_fails(tls_host: TlsHost) -> None:
    session = requests.Session()
    session.verify = str(tls_host.ca_file)
    dns = FakeDns({"other.example.test": [["127.0.0.1"]]})
    secure = fetcher(session=session, resolve=dns)
    failure = fetch_failure(
        lambda: secure.fetch(f"https://other.example.test:{tls_host.url_port}/ok")
    )
    assert failure.code == ImageErrorCode.FETCH_FAILED
    assert "TLS" in failure.message


# -- url_refusal: the check used before a URL is accepted --------------------------------------


@pytest.mark.parametrize(
    ("url", "answers", "refused"),
    [
        ("http://images.example.test/a", ["93.184.215.14"], False),
        ("http://images.example.test/a", ["10.1.2.3"], True),
        ("http://images.example.test/a", ["2606:4700::1111", "fd00::1"], True),
        ("http://169.254.169.254/", [], True),
        ("http://localhost:8000/", [], True),
        ("gopher://images.example.test/", [], True),
    ],
)
def test_url_refusal(url: str, answers: list[str], refused: bool) -> None:
    dns = FakeDns({"images.example.test": [answers]})
    assert (url_refusal(url, allow_private=False, resolve=dns) is not None) is refused


def test_url_refusal_does_not_judge_a_name_that_does_not_resolve_now() -> None:
    assert url_refusal("http://nowhere.test/", allow_private=False, resolve=FakeDns({})) is None


def test_url_refusal_allows_private_hosts_when_told_but_still_checks_syntax() -> None:
    assert url_refusal("http://127.0.0.1:9/hook", allow_private=True) is None
    assert url_refusal("ftp://127.0.0.1/hook", allow_private=True) is not None


# -- webhooks --------------------------------------------------------------------------------


def sender(**overrides: Any) -> HttpWebhookSender:
    options: dict[str, Any] = {"allow_private": True, "timeout": 2.0}
    options.update(overrides)
    return HttpWebhookSender(**options)


def test_webhook_200_delivers_body_and_headers(host: Host) -> None:
    result = sender().post(host.url + "/hook", b'{"a":1}', {"webhook-id": "msg_1"})
    assert result == DeliveryResult(200)
    assert host.seen[0].method == "POST"
    assert host.seen[0].body == b'{"a":1}'
    assert host.seen[0].headers["webhook-id"] == "msg_1"


def test_webhook_500_is_returned_as_is(host: Host) -> None:
    assert sender().post(host.url + "/hook?code=500", b"{}", {}) == DeliveryResult(500)


@pytest.mark.parametrize("value", ["120", "Wed, 21 Oct 2026 07:28:00 GMT"])
def test_webhook_retry_after_is_returned_as_sent(host: Host, value: str) -> None:
    url = host.url + "/hook?code=503&retry=" + quote(value)
    assert sender().post(url, b"{}", {}) == DeliveryResult(503, retry_after=value)


def test_webhook_retry_after_longer_than_any_date_is_cut(host: Host) -> None:
    url = host.url + "/hook?code=429&retry=" + "9" * 500
    assert sender().post(url, b"{}", {}).retry_after == "9" * 64


def test_webhook_410_is_returned_as_is(host: Host) -> None:
    assert sender().post(host.url + "/hook?code=410", b"{}", {}) == DeliveryResult(410)


def test_webhook_302_is_returned_not_followed(host: Host) -> None:
    url = host.url + "/to?url=" + quote("/hook")
    assert sender().post(url, b"{}", {}).status_code == 302
    assert host.paths() == ["/to"]


def test_webhook_timeout_is_a_result_not_an_exception(host: Host) -> None:
    started = time.monotonic()
    result = sender(timeout=0.5).post(host.url + "/stall-headers", b"{}", {})
    assert result.status_code is None and result.timed_out
    assert result.error.startswith("timeout: ")
    assert time.monotonic() - started < 2.0


def test_webhook_refused_connection_is_a_result(connects: list[object]) -> None:
    result = sender().post(f"http://127.0.0.1:{closed_port()}/hook", b"{}", {})
    assert result.status_code is None and not result.timed_out
    assert result.error.startswith("connection failed: ")  # the detail alone, no code


@pytest.mark.parametrize("answer", ["169.254.169.254", "10.0.0.5", "127.0.0.1"])
def test_webhook_to_a_forbidden_address_is_refused_without_connecting(
    answer: str, connects: list[object]
) -> None:
    dns = FakeDns({"hooks.example.test": [[answer]]})
    result = sender(allow_private=False, resolve=dns).post(
        "http://hooks.example.test/hook", b"{}", {}
    )
    assert result.status_code is None and not result.timed_out
    assert result.error.startswith("blocked_address: ")
    assert connects == []


def test_webhook_rebinding_is_caught_at_connect_time(connects: list[object]) -> None:
    dns = FakeDns({"hooks.example.test": [["8.8.8.8"], ["169.254.169.254"]]})
    url = "https://hooks.example.test/hook"
    assert url_refusal(url, allow_private=False, resolve=dns) is None
    result = sender(allow_private=False, resolve=dns).post(url, b"{}", {})
    assert "blocked_address" in result.error
    assert connects == []


def test_webhook_invalid_url_is_a_result() -> None:
    result = sender().post("file:///etc/passwd", b"{}", {})
    assert result.status_code is None and "file" in result.error
