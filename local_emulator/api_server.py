"""The Chalice app over HTTP, standing in for API Gateway: a front door that holds.

`chalice local` (http.server underneath) answers abuse badly: a listen backlog of 5, no
body cap, no timeouts, HTML error pages, closed sockets on bad framing, a version banner.
This server parses HTTP/1.1 itself, as strictly as API Gateway does, and hands well-formed
requests to Chalice's `LocalGateway` (routing, CORS preflights, authorizers, the app).

- A listen backlog of `backlog`. Connections wait for each request's head (request line and
  headers; and its body when a `Content-Length` of at most 1 MiB announces it) in one
  selector thread, without a thread of their own, up to `max_waiting` (past
  that the one waiting longest is closed): slow or idle clients (slowloris) cost a socket and
  a buffer, not a thread, and delay no one else. A complete head is served by a thread, up
  to `max_connections` requests at once (the next ones queue); the connection goes back to
  wait for its next request.
- Caps, each answered in the contract's JSON error shape before anything is read past it:
  a request line over `request_line_bytes` is a 414 (API Gateway's URL limit is 8192), a
  header section over `header_bytes` or `header_count` a 431 (API Gateway: 10240 bytes of
  request line and headers), a body that would make a Lambda event over Lambda's 6 MB
  request payload a 413, from its Content-Length before any of it is read (while reading,
  for a chunked body). The upload routes' 413 says to use the presigned upload.
- Timeouts: a connection with no request under way is closed after `idle_seconds` (nothing
  to answer: no request was made; a 408 there could be read as the answer to a request the
  client sends at the same moment). A request under way is bounded: its headers must arrive
  within `header_seconds` of its first byte, its body may pause at most
  `body_stall_seconds` and must arrive within `body_seconds`; past that the answer is a 408
  and the connection is closed.
- Every malformed request gets an answer, `{"error", "details"}` with a 4xx: bad framing
  (Content-Length not a number, negative, two different ones, with Transfer-Encoding; a
  bad chunk size; a body shorter than declared), unknown route (404), wrong method (405 with
  Allow), an unknown Host when bound to loopback (421, against DNS rebinding).
  Errors the app or the gateway answer in another shape are put in the contract's shape.
- TCP_NODELAY on every connection and each answer written at once (no 40 ms Nagle stall on
  keep-alive); no `Server` banner; the security headers on every answer (the app sets the
  pages' own Content-Security-Policy).
- Binary bodies: API Gateway matches `binary_types` against the media type, ignoring
  parameters (`multipart/form-data; boundary=...`) and header case, and accepts wildcards;
  here they reach the app base64-encoded, as on API Gateway.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import email.utils
import fnmatch
import http
import io
import ipaddress
import json
import math
import re
import selectors
import socket
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from chalice.config import Config
from chalice.local import (
    LambdaEventConverter,
    LocalChalice,
    LocalGateway,
    LocalGatewayException,
    RouteMatcher,
)

from local_emulator.servers import ConnectionTrackingMixin, serve_in_thread, server_url, stop_server

LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024  # Lambda's synchronous request payload limit
EVENT_OVERHEAD_BYTES = 2048  # what the event adds around the body and headers
UPLOAD_ROUTES = ("/api/uploadAndProcessDocument", "/api/validate")
PRESIGNED_UPLOAD_ROUTE = "/api/uploads"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HOST = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(?::(?P<port>\d*))?")
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,64}")
MAX_CHUNK_LINE = 4096
LINGER_SECONDS = 2.0
NO_CONTENT = frozenset({204, 304})  # answers that never have content
LINGER_BYTES = 64 * 1024 * 1024
PREREAD_BODY_BYTES = 1024 * 1024  # a body this small is read before a thread is given


@dataclass(frozen=True)
class FrontDoorLimits:
    """The caps and timeouts of the front door (docs/security.md has the table)."""

    lambda_payload_bytes: int = LAMBDA_PAYLOAD_BYTES
    lambda_response_bytes: int = LAMBDA_PAYLOAD_BYTES  # Lambda's synchronous response limit
    request_line_bytes: int = 8192
    header_bytes: int = 10240
    header_count: int = 100
    idle_seconds: float = 10.0
    header_seconds: float = 10.0
    body_stall_seconds: float = 10.0
    body_seconds: float = 60.0
    write_seconds: float = 30.0
    backlog: int = 1024
    max_connections: int = 128  # requests served at once (a thread each)
    max_waiting: int = 4096  # connections waiting for a request's head (no thread each)


class GatewayAuthorizer(Protocol):
    """What LocalGateway calls before the app (gateway_auth.TemplateGateway); a refusal
    raises a LocalGatewayException, answered as it is."""

    def authorize(
        self, raw_path: str, lambda_event: dict[str, Any], lambda_context: Any
    ) -> tuple[dict[str, Any], Any]: ...

    def preflight(
        self, raw_path: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes] | None:
        """API Gateway's own answer to an OPTIONS request (the template's CORS mock), or
        None when the function answers it."""


class HttpError(Exception):
    """A request refused: answered in the contract's shape, then (by default) closed."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        close: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers or {}
        self.close = close


class _Gone(Exception):
    """The client is gone (or does not read): nothing more can be said on this connection."""


class BinaryAwareEventConverter(LambdaEventConverter):
    def _is_binary(self, headers: dict[str, Any]) -> bool:
        content_type = next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")
        return is_binary(content_type, self._binary_types)


def is_binary(content_type: str, binary_types: list[str]) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type:
        return False
    return any(fnmatch.fnmatchcase(media_type, pattern.lower()) for pattern in binary_types)


class _DeadlineReader(io.RawIOBase):
    """A socket's reads bounded by a deadline (whatever the pace of the bytes) and,
    optionally, by the longest pause between two reads."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.deadline = math.inf
        self.stall: float | None = None

    def bound(self, seconds: float, stall: float | None = None) -> None:
        self.deadline = time.monotonic() + seconds
        self.stall = stall

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._sock.settimeout(remaining if self.stall is None else min(remaining, self.stall))
        try:
            return self._sock.recv_into(buffer)
        except (ConnectionResetError, BrokenPipeError):
            return 0


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    header_bytes: int

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def line(self) -> str:
        return f"{self.method} {self.target[:200]} {self.version}"


class _BufferedSocket:
    """What the handler reads a connection through: the bytes the head waiter read first,
    then the socket (through `_DeadlineReader`); what is left after a request goes back to
    the waiter with the connection (`take`)."""

    def __init__(self, raw: _DeadlineReader, initial: bytes = b"") -> None:
        self._raw = raw
        self._buffer = bytearray(initial)
        self._chunk = bytearray(65536)

    def _fill(self) -> bool:
        received = self._raw.readinto(self._chunk)
        if not received:
            return False
        self._buffer += memoryview(self._chunk)[:received]
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def peek(self, size: int = 1) -> bytes:
        if not self._buffer:
            self._fill()
        return bytes(self._buffer[: max(size, 1)])

    def readline(self, limit: int) -> bytes:
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                return self._take(limit)
            searched = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(min(size, len(self._buffer)))

    def take(self) -> bytes:
        return self._take(len(self._buffer))


def _head_end(buffer: bytes | bytearray) -> int:
    """Where a request's head (request line, headers, the empty line) ends; -1 before."""
    start = 0
    while buffer.startswith((b"\r\n", b"\n"), start):  # empty lines before the request line
        start += 2 if buffer.startswith(b"\r\n", start) else 1
    ends = [
        found + len(mark)
        for mark in (b"\n\r\n", b"\n\n")
        if (found := buffer.find(mark, start)) >= 0
    ]
    return min(ends, default=-1)


def _body_to_wait_for(head: bytes) -> int:
    """The body the head waiter reads too, before a thread serves the request: a
    `Content-Length` of at most PREREAD_BODY_BYTES, without `Expect` (the client waits for a
    100 Continue) or `Transfer-Encoding`; 0 for anything else (the handler reads it)."""
    lengths = []
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if name in (b"expect", b"transfer-encoding"):
            return 0
        if colon and name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) != 1 or not lengths[0].isdigit():
        return 0
    length = int(lengths[0])
    return length if length <= PREREAD_BODY_BYTES else 0


@dataclass
class _Waiting:
    """A connection between requests: what it has sent of the next one, and since when."""

    sock: socket.socket
    address: Any
    buffer: bytearray
    since: float  # when it began to wait (the idle clock)
    first_byte: float | None = None  # when the request's first byte came (the head clock)
    head_end: int = -1  # where its head ends in `buffer`, once it has
    head_done: float = 0.0  # when its head was complete (the body's clock)
    last_byte: float = 0.0  # when a byte last came (a body's pauses)
    wanted: int = 0  # the bytes to wait for: head and a small body
    body_late: bool = False  # its body did not arrive in time: the handler answers 408


class _HeadWaiter:
    """One thread, one selector: every connection waits here for its next request's head,
    without a thread of its own. A complete head (or one over the size caps, or out of
    time) goes to the server's request threads; a connection idle for `idle_seconds` or
    closed by its client is closed."""

    def __init__(self, server: FrontDoorServer) -> None:
        self._server = server
        self._limits = server.limits
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._incoming: list[_Waiting] = []
        self._waiting: dict[socket.socket, _Waiting] = {}
        self._stopping = False
        self._head_cap = self._limits.request_line_bytes + self._limits.header_bytes + 16

    def add(self, sock: socket.socket, address: Any, buffered: bytes) -> None:
        waiting = _Waiting(sock, address, bytearray(buffered), time.monotonic())
        if buffered:
            waiting.first_byte = waiting.since
        with self._lock:
            self._incoming.append(waiting)
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def run(self) -> None:
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._wake_read:
                        with contextlib.suppress(OSError):
                            self._wake_read.recv(4096)
                        continue
                    waiting = self._waiting.get(key.fileobj)  # type: ignore[call-overload]
                    if waiting is None:
                        continue
                    try:
                        self._receive(waiting)
                    except Exception as exc:  # one connection's trouble ends it, not the loop
                        sys.stderr.write(f"front door: a waiting connection failed: {exc!r}\n")
                        self._forget(waiting)
                        self._close(waiting)
                self._take_incoming()
                self._expire(time.monotonic())
        finally:
            for waiting in [*self._waiting.values(), *self._incoming]:
                self._close(waiting)
            self._selector.close()
            self._wake_read.close()
            self._wake_write.close()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        soonest = now + 0.5
        for waiting in self._waiting.values():
            soonest = min(soonest, self._deadline(waiting))
        return max(0.0, soonest - now)

    def _deadline(self, waiting: _Waiting) -> float:
        limits = self._limits
        if waiting.first_byte is None:
            return waiting.since + limits.idle_seconds
        if waiting.head_end < 0:
            return waiting.first_byte + limits.header_seconds
        return min(
            waiting.head_done + limits.body_seconds, waiting.last_byte + limits.body_stall_seconds
        )

    def _take_incoming(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for waiting in incoming:
            if self._ready(waiting):
                self._server.dispatch(waiting)
                continue
            if len(self._waiting) >= self._limits.max_waiting:
                self._evict()
            try:
                waiting.sock.setblocking(False)
                self._selector.register(waiting.sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                self._close(waiting)
                continue
            self._waiting[waiting.sock] = waiting

    def _ready(self, waiting: _Waiting) -> bool:
        """Whether the request can go to a thread: its head, and a small body, all there."""
        if waiting.head_end < 0:
            end = _head_end(waiting.buffer)
            if end < 0:
                return len(waiting.buffer) > self._head_cap  # the handler answers 414/431
            waiting.head_end = end
            waiting.head_done = waiting.last_byte = time.monotonic()
            waiting.wanted = end + _body_to_wait_for(bytes(waiting.buffer[:end]))
        return len(waiting.buffer) >= waiting.wanted

    def _receive(self, waiting: _Waiting) -> None:
        try:
            data = waiting.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._forget(waiting)
            if waiting.buffer:  # a request cut short (or half-closed): the handler answers
                self._server.dispatch(waiting)
            else:  # closed by the client between requests: nothing to answer
                self._close(waiting)
            return
        waiting.last_byte = time.monotonic()
        if waiting.first_byte is None:
            waiting.first_byte = waiting.last_byte
        waiting.buffer += data
        if self._ready(waiting):
            self._forget(waiting)
            self._server.dispatch(waiting)

    def _expire(self, now: float) -> None:
        for waiting in [w for w in self._waiting.values() if self._deadline(w) <= now]:
            self._forget(waiting)
            if waiting.first_byte is None:
                self._close(waiting)  # idle: no request under way, nothing to answer
            else:  # its head or its body is late: the handler answers 408
                waiting.body_late = waiting.head_end >= 0
                self._server.dispatch(waiting)

    def _evict(self) -> None:
        """Room for one more: the connection waiting longest goes."""
        oldest = min(self._waiting.values(), key=lambda w: w.first_byte or w.since)
        self._forget(oldest)
        self._close(oldest)

    def _forget(self, waiting: _Waiting) -> None:
        self._waiting.pop(waiting.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(waiting.sock)

    def _close(self, waiting: _Waiting) -> None:
        self._server.shutdown_request(waiting.sock)


class FrontDoorServer(ConnectionTrackingMixin, socketserver.TCPServer):
    """Connections wait for their requests' heads in one selector thread (`_HeadWaiter`);
    complete requests are served by up to `max_connections` threads; a real listen backlog."""

    allow_reuse_address = True
    quiet = False

    def __init__(
        self, address: tuple[str, int], app: Any, gateway: Any, limits: FrontDoorLimits
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.authorizer: GatewayAuthorizer | None = None  # API Gateway's part (the template's)
        self.routes = RouteMatcher(list(app.routes))
        self.limits = limits
        self.request_queue_size = limits.backlog
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.stopping = False
        # (each request's handler is made by `_serve`, not by socketserver)
        super().__init__(address, socketserver.BaseRequestHandler)
        self.allowed_hosts = _allowed_hosts(address[0], str(self.server_address[0]))
        self._waiter = _HeadWaiter(self)
        self._waiter_thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=limits.max_connections, thread_name_prefix="api-request"
        )

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._waiter_thread = threading.Thread(
            target=self._waiter.run, name="api-request-heads", daemon=True
        )
        self._waiter_thread.start()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._waiter.stop()
            self._waiter_thread.join(timeout=10)

    def process_request(self, request: Any, client_address: Any) -> None:
        lock, connections = self._tracked()
        with lock:
            connections.add(request)
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._waiter.add(request, client_address, b"")

    def dispatch(self, waiting: _Waiting) -> None:
        """A connection whose request's head is in (or late): served on a request thread."""
        if self.stopping:
            self.shutdown_request(waiting.sock)
            return
        try:
            self._pool.submit(self._serve, waiting)
        except RuntimeError:  # the pool is shut down: the server is stopping
            self.shutdown_request(waiting.sock)

    def _serve(self, waiting: _Waiting) -> None:
        keep = False
        handler: FrontDoorHandler | None = None
        try:
            waiting.sock.setblocking(True)
            handler = FrontDoorHandler(waiting.sock, waiting.address, self)
            keep = handler.serve_one(
                bytes(waiting.buffer), waiting.first_byte, body_late=waiting.body_late
            )
        except Exception as exc:  # a connection the handler could not end: the server goes on
            sys.stderr.write(f"front door: a connection failed: {exc!r}\n")
            keep = False
        if keep and handler is not None and not self.stopping:
            self._waiter.add(waiting.sock, waiting.address, handler.rfile.take())
        else:
            self.shutdown_request(waiting.sock)

    def server_close(self) -> None:
        self.stopping = True
        if not hasattr(self, "_waiter"):  # the bind failed: socketserver closes before we begin
            super().server_close()
            return
        self._waiter.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        lock, connections = self._tracked()
        with lock:
            left = list(connections)
        for conn in left:
            self.shutdown_request(conn)
        super().server_close()


def _allowed_hosts(host: str, bound: str) -> frozenset[str] | None:
    """The Host names answered when bound to loopback (any port); None: any Host."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(bound).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    names = {"localhost", "127.0.0.1", "[::1]", host.lower()}
    names.add(f"[{bound}]" if ":" in bound else bound)
    return frozenset(names)


class FrontDoorHandler:
    """One request of a connection, on a request thread."""

    def __init__(self, sock: socket.socket, client_address: Any, server: FrontDoorServer) -> None:
        self.sock = sock
        self.request = sock
        self.client_address = client_address
        self.server = server
        self.limits = server.limits
        self.reader = _DeadlineReader(sock)
        self.rfile = _BufferedSocket(self.reader)
        self._body_late = False

    # -- the connection -----------------------------------------------------------------

    def serve_one(
        self, buffered: bytes, first_byte: float | None, *, body_late: bool = False
    ) -> bool:
        """Serve the request whose head is (mostly) in `buffered`; False when the connection
        is to be closed. `body_late`: the waiter gave up on its body (a 408 once the body is
        wanted)."""
        self.rfile = _BufferedSocket(self.reader, buffered)
        self._body_late = body_late
        started = first_byte if first_byte is not None else time.monotonic()
        with contextlib.suppress(OSError, _Gone):
            return self._one_request(started)
        return False

    def _one_request(self, started: float) -> bool:
        """Serve one request (its head due `header_seconds` after its first byte)."""
        self.reader.bound(max(0.0, started + self.limits.header_seconds - time.monotonic()))
        request: _Request | None = None
        try:
            if not self.rfile.peek(1):
                return False  # the client closed the connection
            request = self._read_head()
            return self._serve(request)
        except HttpError as error:
            self._answer_error(error, request)
            return not error.close
        except TimeoutError:
            phase = "headers" if request is None else "body"
            self._answer_error(
                HttpError(408, f"the request's {phase} did not arrive in time", self._timeouts()),
                request,
            )
            return False

    def _timeouts(self) -> list[dict[str, float]]:
        limits = self.limits
        return [
            {
                "headerSeconds": limits.header_seconds,
                "bodyStallSeconds": limits.body_stall_seconds,
                "bodySeconds": limits.body_seconds,
            }
        ]

    # -- reading ------------------------------------------------------------------------

    def _read_head(self) -> _Request:
        limits = self.limits
        line = b""
        for _ in range(4):  # RFC 9112 2.2: ignore empty lines before the request line
            line = self.rfile.readline(limits.request_line_bytes + 1)
            if line not in (b"\r\n", b"\n"):
                break
        if len(line) > limits.request_line_bytes:
            raise HttpError(
                414,
                f"the request line is longer than {limits.request_line_bytes} bytes",
                [{"maxBytes": limits.request_line_bytes}],
            )
        if not line.endswith(b"\n"):
            raise HttpError(400, "the request ended before its request line did")
        method, target, version = _request_line(line)
        headers: list[tuple[str, str]] = []
        used = 0
        while True:
            raw = self.rfile.readline(limits.header_bytes - used + 1)
            used += len(raw)
            if used > limits.header_bytes:
                raise HttpError(
                    431,
                    f"the request's headers are larger than {limits.header_bytes} bytes",
                    [{"maxBytes": limits.header_bytes}],
                )
            if not raw.endswith(b"\n"):
                raise HttpError(400, "the request ended before its headers did")
            if raw in (b"\r\n", b"\n"):
                break
            if len(headers) >= limits.header_count:
                raise HttpError(
                    431,
                    f"the request has more than {limits.header_count} headers",
                    [{"maxHeaders": limits.header_count}],
                )
            headers.append(_header(raw))
        return _Request(method, target, version, headers, used + len(line))

    def _serve(self, request: _Request) -> bool:
        close = request.version == "HTTP/1.0" or any(
            token.strip().lower() == "close"
            for value in request.all("connection")
            for token in value.split(",")
        )
        has_body = False
        try:
            self._check_host(request)
            length, chunked = self._framing(request)
            has_body = chunked or length > 0
            path = self._route(request)
            self._check_size(request, path, length)
            expect = request.get("expect")
            if expect is not None:
                if expect.strip().lower() != "100-continue":
                    raise HttpError(417, "the only Expect this server meets is 100-continue")
                if has_body and request.version == "HTTP/1.1":
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self._read_chunked(request, path) if chunked else self._read_exactly(length)
            self._check_size(request, path, len(body), body)  # escapes counted
            self._invoke(request, body, close=close)
        except HttpError as error:
            # A body not read (or not all of it) leaves the connection unusable.
            error.close = error.close or close or (has_body and error.status in (404, 405))
            raise
        return not close

    def _check_host(self, request: _Request) -> None:
        hosts = request.all("host")
        if len(hosts) > 1:
            raise HttpError(400, "the request has more than one Host header")
        if not hosts:
            if request.version == "HTTP/1.1":
                raise HttpError(400, "an HTTP/1.1 request needs a Host header")
            return
        match = HOST.fullmatch(hosts[0].strip())
        if match is None:
            raise HttpError(400, "the Host header is malformed", [{"host": hosts[0][:200]}])
        allowed = self.server.allowed_hosts
        if allowed is not None and match.group("name").lower() not in allowed:
            raise HttpError(
                421,
                "this server does not answer for that Host (it is bound to loopback; "
                "use localhost or its address)",
                [{"host": hosts[0][:200], "allowed": sorted(allowed)}],
            )

    def _framing(self, request: _Request) -> tuple[int, bool]:
        """(Content-Length, chunked) as RFC 9112 6 allows, anything else a 400."""
        encodings = request.all("transfer-encoding")
        lengths = request.all("content-length")
        if encodings:
            if lengths:
                raise HttpError(400, "the request has both Content-Length and Transfer-Encoding")
            if request.version != "HTTP/1.1":
                raise HttpError(400, "Transfer-Encoding needs HTTP/1.1")
            codings = [c.strip().lower() for v in encodings for c in v.split(",")]
            if codings != ["chunked"]:
                raise HttpError(
                    400,
                    "the only Transfer-Encoding accepted is chunked",
                    [{"transferEncoding": ", ".join(encodings)[:200]}],
                )
            return 0, True
        if not lengths:
            return 0, False
        values = {v.strip() for value in lengths for v in value.split(",")}
        if len(values) > 1:
            raise HttpError(400, "the request has conflicting Content-Length values")
        (value,) = values
        if not value.isascii() or not value.isdigit():
            raise HttpError(
                400, "Content-Length is not a non-negative integer", [{"contentLength": value[:40]}]
            )
        return int(value), False

    def _route(self, request: _Request) -> str:
        """The request's path, once a route answers it with this method."""
        path = request.target.split("?", 1)[0]
        try:
            route = self.server.routes.match_route(request.target).route
        except ValueError:
            raise HttpError(
                404,
                f"no route matches {path[:200]}",
                [{"method": request.method, "path": path[:200]}],
                close=False,
            ) from None
        methods = self.server.app.routes[route]
        if request.method not in methods and request.method != "OPTIONS":
            allow = ", ".join(sorted(methods))
            raise HttpError(
                405,
                f"{path[:200]} does not answer {request.method[:20]}",
                [{"method": request.method[:20], "allowed": sorted(methods)}],
                headers={"Allow": allow},
                close=False,
            )
        return path

    def _event_bytes(
        self, request: _Request, path: str, body_bytes: int, body: bytes | None = None
    ) -> int:
        """The Lambda event's size: the headers twice (`headers` and `multiValueHeaders`),
        the body base64-encoded when binary, else as a JSON string (escapes included, once
        the body is there to count them)."""
        binary = is_binary(request.get("content-type") or "", self.server.app.api.binary_types)
        rest = 2 * request.header_bytes + len(path) + EVENT_OVERHEAD_BYTES
        if binary:
            return 4 * math.ceil(body_bytes / 3) + rest
        # An escape is at most 6 bytes (\u00XX): only a body that could exceed is measured.
        if body is not None and 6 * body_bytes + rest > self.limits.lambda_payload_bytes:
            text = body.decode("utf-8", "replace")
            return len(json.dumps(text, ensure_ascii=False).encode()) - 2 + rest
        return body_bytes + rest

    def _check_size(
        self, request: _Request, path: str, body_bytes: int, body: bytes | None = None
    ) -> None:
        limit = self.limits.lambda_payload_bytes
        if self._event_bytes(request, path, body_bytes, body) <= limit:
            return
        detail: dict[str, Any] = {"maxPayloadBytes": limit, "bodyBytes": body_bytes}
        message = (
            f"the request is larger than Lambda's {limit // (1024 * 1024)} MB request payload "
            "limit (binary bodies count base64-encoded)"
        )
        if path.rstrip("/") in UPLOAD_ROUTES:
            message += (
                f"; for a CSV this large use the presigned upload: POST {PRESIGNED_UPLOAD_ROUTE}"
            )
            detail["presignedUpload"] = PRESIGNED_UPLOAD_ROUTE
        raise HttpError(413, message, [detail])

    def _bound_body(self) -> None:
        if self._body_late:  # the waiter waited for it already
            self.reader.bound(0)
            return
        self.reader.bound(self.limits.body_seconds, self.limits.body_stall_seconds)

    def _read_exactly(self, length: int) -> bytes:
        if length == 0:
            return b""
        self._bound_body()
        body = self.rfile.read(length)
        if len(body) < length:
            raise HttpError(
                400,
                "the body ended before its Content-Length",
                [{"contentLength": length, "received": len(body)}],
            )
        return body

    def _read_chunked(self, request: _Request, path: str) -> bytes:
        self._bound_body()
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE + 1)
            if not line.endswith(b"\n"):
                if len(line) > MAX_CHUNK_LINE:
                    raise HttpError(400, "a chunk-size line is too long")
                raise HttpError(400, "the chunked body ended before its last chunk")
            size_text = line.rstrip(b"\r\n").split(b";", 1)[0].strip(b" \t")
            if not CHUNK_SIZE.fullmatch(size_text):
                raise HttpError(
                    400,
                    "a chunk size is not a hexadecimal number",
                    [{"chunkSize": size_text[:40].decode("latin-1")}],
                )
            size = int(size_text, 16)
            if size == 0:
                self._read_trailers()
                return b"".join(parts)
            total += size
            self._check_size(request, path, total)
            data = self.rfile.read(size)
            if len(data) < size:
                raise HttpError(400, "the chunked body ended inside a chunk")
            parts.append(data)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise HttpError(400, "a chunk's data is not followed by CRLF")

    def _read_trailers(self) -> None:
        used = 0
        for _ in range(self.limits.header_count + 1):
            line = self.rfile.readline(self.limits.header_bytes - used + 1)
            used += len(line)
            if used > self.limits.header_bytes:
                raise HttpError(431, "the chunked body's trailers are too large")
            if not line.endswith(b"\n"):
                raise HttpError(400, "the chunked body ended inside its trailers")
            if line in (b"\r\n", b"\n"):
                return
        raise HttpError(431, "the chunked body has too many trailers")

    # -- the app ------------------------------------------------------------------------

    def _invoke(self, request: _Request, body: bytes, *, close: bool) -> None:
        headers: dict[str, str] = {}
        for name, value in request.headers:
            if name.lower() in ("transfer-encoding", "connection", "expect"):
                continue
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if body or request.get("transfer-encoding"):
            headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            headers["Content-Length"] = str(len(body))
        try:
            answered = None
            if request.method == "OPTIONS" and self.server.authorizer is not None:
                answered = self.server.authorizer.preflight(request.target, headers)
            if answered is not None:
                self._respond(*answered, request, close=close)
                return
            try:
                response = self.server.gateway.handle_request(
                    method=request.method, path=request.target, headers=headers, body=body or None
                )
            finally:
                # the function's invocation slot (its reserved concurrency) is free again
                finish = getattr(self.server.gateway._authorizer, "finish_invocation", None)
                if callable(finish):
                    finish()
        except LocalGatewayException as exc:
            status, out, payload = exc.CODE, dict(exc.headers), exc.body or b""
        except Exception as exc:  # the function failed: API Gateway answers 502
            self.log(f"the function failed: {exc!r}")
            raise HttpError(
                502, "the function failed; the request was not completed", close=False
            ) from exc
        else:
            self._check_response_size(response)
            status = int(response["statusCode"])
            out = {k: str(v) for k, v in (response.get("headers") or {}).items()}
            multi = response.get("multiValueHeaders") or {}
            raw = response.get("body")
            if response.get("isBase64Encoded") and raw is not None:
                payload = base64.b64decode(raw)
            else:
                payload = raw.encode("utf-8") if isinstance(raw, str) else (raw or b"")
            for name, values in multi.items():
                out[name] = ", ".join(str(v) for v in values)
        if status >= 400:
            payload, out = _contract_shape(status, payload, out)
        self._respond(status, out, payload, request, close=close)

    def _check_response_size(self, response: Any) -> None:
        """Lambda refuses a response over its payload limit ("Response payload size
        exceeded") and API Gateway answers 502."""
        limit = self.limits.lambda_response_bytes
        size = len(json.dumps(response, separators=(",", ":"), default=str).encode())
        if size <= limit:
            return
        self.log(f"the function's response is {size} bytes, over Lambda's {limit}")
        raise HttpError(
            502,
            f"the function's response is larger than Lambda's {limit // (1024 * 1024)} MB "
            "response payload limit",
            [{"maxPayloadBytes": limit, "responseBytes": size}],
            close=False,
        )

    # -- writing ------------------------------------------------------------------------

    def _answer_error(self, error: HttpError, request: _Request | None) -> None:
        body = json.dumps(
            {"error": error.message, "details": error.details}, separators=(",", ":")
        ).encode()
        headers = {"Content-Type": "application/json", **error.headers}
        with contextlib.suppress(OSError, _Gone):
            self._respond(error.status, headers, body, request, close=error.close)
            if error.close:
                self._linger()

    def _respond(
        self,
        status: int,
        headers: dict[str, str],
        body: bytes,
        request: _Request | None,
        *,
        close: bool,
    ) -> None:
        out: dict[str, str] = {}
        for name, value in headers.items():
            if name.lower() in HOP_BY_HOP or not TOKEN.fullmatch(name):
                continue
            out[name] = re.sub(r"[\r\n\x00]", " ", str(value))
        lowered = {k.lower() for k in out}
        for name, value in SECURITY_HEADERS.items():
            if name.lower() not in lowered:
                out[name] = value
        bodiless = status in NO_CONTENT
        if bodiless:  # RFC 9110 6.4.1: no content, whatever the function returned
            body = b""
        elif "content-type" not in lowered:
            out["Content-Type"] = "application/json"
        out["Date"] = email.utils.formatdate(usegmt=True)
        if not bodiless:  # RFC 9110 8.6: none on a 204, nor on a 304 (whose would be the 200's)
            out["Content-Length"] = str(len(body))
        if close:
            out["Connection"] = "close"
        reason = _reason(status)
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out.items())
        send_body = not (request is not None and request.method == "HEAD")
        self._write(head.encode("latin-1", "replace") + b"\r\n" + (body if send_body else b""))
        self._log_request(request, status, len(body))

    def _write(self, data: bytes) -> None:
        try:
            self.sock.settimeout(self.limits.write_seconds)
            self.sock.sendall(data)
        except OSError as exc:
            raise _Gone from exc

    def _linger(self) -> None:
        """Close gently: stop sending, then drop what the client is still sending for a
        moment, so that our answer is not lost to a reset (a close with unread data)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            dropped = 0
            buffer = bytearray(65536)
            while dropped < LINGER_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.sock.settimeout(remaining)
                received = self.sock.recv_into(buffer)
                if not received:
                    return
                dropped += received

    def _log_request(self, request: _Request | None, status: int, size: int) -> None:
        line = request.line if request is not None else "-"
        self.log(f'"{line}" {status} {size}')

    def log(self, message: str) -> None:
        if self.server.quiet:
            return
        when = time.strftime("%d/%b/%Y %H:%M:%S")
        sys.stderr.write(f"{self.client_address[0]} - - [{when}] {message}\n")


def _request_line(line: bytes) -> tuple[str, str, str]:
    text = line.rstrip(b"\r\n").decode("latin-1")
    parts = text.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "the request line is not METHOD TARGET HTTP-VERSION")
    method, target, version = parts
    if not TOKEN.fullmatch(method):
        raise HttpError(400, "the request method is not a token")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(400, "only HTTP/1.1 and HTTP/1.0 are served", [{"version": version[:20]}])
    if any(not 0x21 <= ord(c) <= 0x7E for c in target):
        raise HttpError(400, "the request target has characters a URL cannot hold")
    if not target.startswith("/") or target.startswith("//"):
        raise HttpError(
            400, "the request target must be a path (origin-form)", [{"target": target[:200]}]
        )
    return method, target, version


def _header(raw: bytes) -> tuple[str, str]:
    if raw[:1] in (b" ", b"\t"):
        raise HttpError(400, "a header is folded over lines (obsolete line folding)")
    text = raw.rstrip(b"\r\n").decode("latin-1")
    name, colon, value = text.partition(":")
    if not colon or not TOKEN.fullmatch(name):
        raise HttpError(400, "a header line is not NAME: VALUE", [{"header": name[:100]}])
    value = value.strip(" \t")
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise HttpError(400, f"the {name[:100]} header holds control characters")
    return name, value


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _contract_shape(
    status: int, payload: bytes, headers: dict[str, str]
) -> tuple[bytes, dict[str, str]]:
    """An error answered in another shape (the gateway's `{"message"}`, Chalice's
    `{"Code", "Message"}`, text) in the contract's `{"error", "details"}`."""
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return payload, headers
    message = None
    if isinstance(parsed, dict):
        message = parsed.get("message") or parsed.get("Message")
    body = {"error": str(message or _reason(status)), "details": []}
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    headers["Content-Type"] = "application/json"
    return json.dumps(body, separators=(",", ":")).encode(), headers


class PortUnavailable(OSError):
    """The API's address could not be bound (taken, not ours, or a privileged port)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host, self.port = host, port

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"cannot listen on {where}: {(self.strerror or 'error').lower()}"


class ApiServer:
    """Serves a Chalice app object on host:port in a thread (port 0 picks a free one)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        function_name: str = "api_handler",
        lambda_timeout: int = 900,
        memory_size: int = 128,
        quiet: bool = False,
        limits: FrontDoorLimits | None = None,
        authorizer: GatewayAuthorizer | None = None,
    ) -> None:
        self._app = app
        self._original_class = app.__class__
        if not isinstance(app, LocalChalice):
            # What chalice.local.create_local_server does, without touching its globals:
            # a thread-local `current_request` so concurrent requests don't mix.
            app.__class__ = type("EmulatorLocalChalice", (LocalChalice, app.__class__), {})
        config = Config(
            chalice_stage="dev",
            function_name=function_name,
            user_provided_params={
                "chalice_app": app,
                "app_name": getattr(app, "app_name", "app"),
                "lambda_timeout": lambda_timeout,
                "lambda_memory_size": memory_size,
            },
        )
        gateway = LocalGateway(app, config)
        gateway.event_converter = BinaryAwareEventConverter(
            RouteMatcher(list(app.routes)), list(app.api.binary_types)
        )
        if authorizer is not None:
            # API Gateway's auth from the template (gateway_auth.py) instead of Chalice's
            # LocalGatewayAuthorizer, which runs the routes' Chalice authorizers its own way.
            gateway._authorizer = authorizer  # type: ignore[assignment]  # only authorize() is called
        self.limits = limits or FrontDoorLimits()
        try:
            self._server = FrontDoorServer((host, port), app, gateway, self.limits)
        except OSError as exc:
            app.__class__ = self._original_class
            raise PortUnavailable(host, port, exc) from exc
        self._server.authorizer = authorizer
        self._server.quiet = quiet
        self._thread: Any = None

    @property
    def url(self) -> str:
        host, port = server_url(self._server)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def address(self) -> tuple[str, int]:
        return server_url(self._server)

    def start(self) -> None:
        self._thread = serve_in_thread(self._server, "chalice-api")

    def stop(self) -> None:
        self._server.stopping = True
        stop_server(self._server, self._thread)
        self._thread = None
        self._app.__class__ = self._original_class
