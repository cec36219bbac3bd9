"""Outbound HTTP's address guard, and what the image fetcher and the webhook sender share.

The guard runs where the socket is opened. Each new connection resolves its host once,
refuses when any answer is a forbidden address (unless private hosts are allowed), and
connects to one of the vetted addresses itself, so a DNS answer that changes between a
check and the connection (rebinding) gains nothing. Host header, SNI and certificate checks
still use the hostname.

A deadline per download is kept by a watchdog that shuts the download's sockets down when
it passes, so a server that trickles headers or body cannot hold a worker for longer.
The guard's refusals and the failures of requests and urllib3 are a `RequestFailure` here,
with a `RequestProblem`: an image download reports it as an image's failure, a webhook
attempt as its error.

This module, `image_download` and `webhook_delivery` are the only modules of the functions
that import requests.
"""

from __future__ import annotations

import contextlib
import heapq
import http.cookiejar
import ipaddress
import itertools
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.timeout import Timeout

from chalicelib.domain.netguard import (
    IPAddress,
    check_url,
    decide,
    local_name_reason,
    parse_ip_literal,
    url_host,
    url_port,
)
from chalicelib.errors import PipelineError

Resolve = Callable[[str, int], list[str]]
"""Host and port to the addresses it resolves to (strings), like getaddrinfo."""

AddressPolicy = Callable[[IPAddress], str | None]
"""Why a connection to this address is refused, or None to allow it."""

DEFAULT_POOL_SIZE = 8


class RequestProblem(StrEnum):
    """Why an outbound request got no usable answer. The values are the contract's words for
    them (an image's error codes, the start of a webhook attempt's error)."""

    BLOCKED_ADDRESS = "blocked_address"
    INVALID_URL = "invalid_url"
    TIMEOUT = "timeout"
    FETCH_FAILED = "fetch_failed"


class RequestFailure(PipelineError):
    """An outbound request refused by the guard, or failed on the way; `retryable` when
    another attempt may succeed."""

    def __init__(self, problem: RequestProblem, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{problem}: {message}")
        self.problem = problem
        self.message = message
        self.retryable = retryable


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, in the order getaddrinfo gives them, without duplicates."""
    found: list[str] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(sockaddr[0])
            if address not in found:
                found.append(address)
    return found


class GuardedResolver:
    """Resolves a host and vets every answer; the one source of addresses to connect to."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolve | None = None,
        policy: AddressPolicy | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolve or system_resolve
        self._policy = policy or (lambda ip: decide(ip, allow_private))

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The vetted addresses of `host`. Raises RequestFailure(BLOCKED_ADDRESS) when any
        answer is refused, socket.gaierror when the name does not resolve."""
        literal = parse_ip_literal(host)
        if literal is not None:
            answers = [literal]
        else:
            local = None if self.allow_private else local_name_reason(host)
            if local:
                raise RequestFailure(RequestProblem.BLOCKED_ADDRESS, local)
            raw = self._resolve(host, port)
            if not raw:
                raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
            answers = []
            for text in raw:
                try:
                    answers.append(ipaddress.ip_address(text))
                except ValueError:
                    raise RequestFailure(
                        RequestProblem.BLOCKED_ADDRESS,
                        f"{host} resolved to something that is not an address: {text!r}",
                    ) from None
        for ip in answers:
            problem = self._policy(ip)
            if problem:
                where = "" if literal is not None else f"{host} resolves to {ip}: "
                raise RequestFailure(RequestProblem.BLOCKED_ADDRESS, where + problem)
        return answers


def url_refusal(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolve | None = None,
) -> str | None:
    """Why `url` may not be used (syntax, or an address it names or resolves to), or None.

    A name that does not resolve right now is not refused here: the connection is vetted
    again when it is made, so a passing answer is no promise, and a failing one no verdict.
    """
    problem = check_url(url, allow_private=allow_private)
    if problem or allow_private:
        return problem
    host = url_host(url)
    if parse_ip_literal(host) is not None:
        return None
    guard = GuardedResolver(allow_private=False, resolve=resolve)
    try:
        guard.addresses(host, url_port(url))
    except RequestFailure as failure:
        return failure.message
    except (OSError, UnicodeError):
        return None
    return None


# --- the deadline watchdog -------------------------------------------------------------


class DeadlineClock:
    """One thread that fires every pending deadline of the process, in order.

    A `threading.Timer` per download started a thread per image, and the thread that started
    it waited for the new one to run (about 2% of the pipeline's samples, docs/performance.md).
    The clock's thread starts on the first deadline (never at import) and again in a process
    forked after it. A cancelled deadline is dropped when it comes up, or all at once when
    they outnumber the live ones.
    """

    _COMPACT_AT = 1024

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[_Deadline] = []
        self._cancelled = 0
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def schedule(self, seconds: float, fire: Callable[[], None]) -> _Deadline:
        """Call `fire` (on the clock's thread) once `seconds` have passed, unless cancelled."""
        entry = _Deadline(self._clock() + max(0.0, seconds), next(self._order), fire)
        with self._cond:
            heapq.heappush(self._heap, entry)
            self._ensure_thread()
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: _Deadline) -> None:
        with self._cond:
            if entry.fire is None:
                return
            entry.fire = None
            self._cancelled += 1
            if self._cancelled >= self._COMPACT_AT and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e.fire is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def pending(self) -> int:
        """Deadlines neither fired nor cancelled."""
        with self._cond:
            return sum(1 for e in self._heap if e.fire is not None)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="deadline-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0].fire is None:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0].when - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                entry = heapq.heappop(self._heap)
                fire, entry.fire = entry.fire, None
                if fire is None:
                    continue
                self._cond.release()
                try:
                    fire()
                except Exception:
                    logging.getLogger(__name__).exception("a deadline's action failed")
                finally:
                    self._cond.acquire()


@dataclass(order=True)
class _Deadline:
    when: float
    order: int
    fire: Callable[[], None] | None = field(compare=False)


_CLOCK = DeadlineClock()


class DeadlineWatchdog:
    """Shuts down the sockets of one request (a download, a webhook) when its deadline passes.

    It holds duplicates of the sockets' descriptors: shutting a duplicate down breaks the
    connection for every descriptor (TLS included) and wakes a thread blocked reading it,
    while closing the duplicates at the end leaves pooled connections intact. Its deadline is
    kept by the process's one `DeadlineClock`.
    """

    def __init__(self, seconds: float, clock: DeadlineClock | None = None) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._done = False
        self._clock = clock or _CLOCK
        self._entry: _Deadline | None = None

    def __enter__(self) -> DeadlineWatchdog:
        self._token = _WATCHDOG.set(self)
        self._entry = self._clock.schedule(self.seconds, self._fire)
        return self

    def __exit__(self, *exc: object) -> None:
        _WATCHDOG.reset(self._token)
        if self._entry is not None:
            self._clock.cancel(self._entry)
        with self._lock:
            self._done = True
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            try:
                dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
            except OSError:
                return
            self._socks.append(dup)
            if self.expired:
                _shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG: ContextVar[DeadlineWatchdog | None] = ContextVar("http_download_watchdog", default=None)


def _watch(sock: socket.socket | None) -> None:
    watchdog = _WATCHDOG.get()
    if watchdog is not None and sock is not None:
        watchdog.watch(sock)


# --- urllib3 connections that connect only to vetted addresses ---------------------------

_DENY_PRIVATE = GuardedResolver(allow_private=False)


class GuardedHTTPConnection(HTTPConnection):
    """An urllib3 connection whose socket goes only to an address the guard vetted."""

    guard: ClassVar[GuardedResolver] = _DENY_PRIVATE

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.guard.addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except (OSError, UnicodeError) as exc:
            raise NewConnectionError(self, f"Failed to resolve {self.host!r}: {exc}") from exc
        try:
            sock = self._connect_first(addresses)
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        sys.audit("http.client.connect", self, self.host, self.port)
        _watch(sock)
        return sock

    def _connect_first(self, addresses: list[IPAddress]) -> socket.socket:
        last: OSError = OSError(f"no address to connect to for {self.host!r}")
        for ip in addresses:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            for af, kind, proto, _, sockaddr in socket.getaddrinfo(
                str(ip), self.port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            ):
                sock = socket.socket(af, kind, proto)
                try:
                    for option in self.socket_options or ():
                        sock.setsockopt(*option)
                    if self.timeout is not Timeout.DEFAULT_TIMEOUT:
                        sock.settimeout(self.timeout)
                    if self.source_address:
                        sock.bind(self.source_address)
                    sock.connect(sockaddr)
                except OSError as exc:
                    sock.close()
                    last = exc
                    continue
                return sock
        raise last

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)  # a pooled connection, reused under this download's deadline
        super().request(*args, **kwargs)


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    """TLS on top of the guarded socket; SNI and certificate checks use the hostname."""


def _pool_classes(guard: GuardedResolver) -> dict[str, type[HTTPConnectionPool]]:
    class _Connection(GuardedHTTPConnection):
        pass

    class _TlsConnection(GuardedHTTPSConnection):
        pass

    _Connection.guard = guard
    _TlsConnection.guard = guard

    class _Pool(HTTPConnectionPool):
        ConnectionCls = _Connection

    class _TlsPool(HTTPSConnectionPool):
        ConnectionCls = _TlsConnection

    return {"http": _Pool, "https": _TlsPool}


class GuardedAdapter(HTTPAdapter):
    """A requests transport whose every connection goes through `guard`. No proxies."""

    def __init__(self, guard: GuardedResolver, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.guard = guard
        super().__init__(pool_connections=max(pool_size, 16), pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.guard)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise requests.exceptions.InvalidProxyURL(
            "proxies are not supported: the address guard could not vet the destination"
        )


def guarded_session(
    guard: GuardedResolver,
    session: requests.Session | None = None,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> requests.Session:
    """`session` (or a new one) with the guarded transport mounted for http and https,
    environment proxies and netrc ignored, and cookies never stored."""
    session = session or requests.Session()
    session.trust_env = False
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = GuardedAdapter(guard, pool_size=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# --- failures ------------------------------------------------------------------------------


def _is_timeout(exc: BaseException) -> bool:
    """Whether a socket or urllib3 timeout is somewhere in the exception's chain."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, requests.exceptions.Timeout | ReadTimeoutError | TimeoutError):
            return True
        if isinstance(item, ConnectTimeoutError) and not isinstance(item, NewConnectionError):
            return True
        pending.extend(item.args)
        pending.extend([getattr(item, "reason", None), item.__cause__])
    return False


def _describe(exc: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 failure, kept short."""
    reason: object = exc
    for _ in range(4):
        inner = getattr(reason, "reason", None)
        if inner is None and isinstance(reason, BaseException) and reason.args:
            inner = reason.args[0] if isinstance(reason.args[0], BaseException) else None
        if inner is None:
            break
        reason = inner
    return str(reason)[:300] or type(reason).__name__


def deadline_failure(seconds: float) -> RequestFailure:
    """Not retried: a host still trickling its answer after the whole deadline is slow, not
    failing, and is not worth two more deadlines. A read or connect timeout (the host
    silent) and a 5xx or 429 (the host failing) are worth another attempt."""
    return RequestFailure(RequestProblem.TIMEOUT, f"took longer than the {seconds:g} s deadline")


def request_failure(exc: BaseException, watchdog: DeadlineWatchdog) -> RequestFailure:
    """The RequestFailure that a failed request stands for (the deadline's when `watchdog`
    cut it short)."""
    if watchdog.expired:
        return deadline_failure(watchdog.seconds)
    if _is_timeout(exc):
        return RequestFailure(
            RequestProblem.TIMEOUT, f"timed out: {_describe(exc)}", retryable=True
        )
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.InvalidSchema
        | requests.exceptions.MissingSchema,
    ):
        return RequestFailure(RequestProblem.INVALID_URL, _describe(exc))
    if isinstance(exc, requests.exceptions.SSLError):
        return RequestFailure(RequestProblem.FETCH_FAILED, f"TLS failure: {_describe(exc)}")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return RequestFailure(
            RequestProblem.FETCH_FAILED, f"bad content encoding: {_describe(exc)}"
        )
    if isinstance(exc, ValueError) and not isinstance(exc, requests.RequestException):
        return RequestFailure(RequestProblem.FETCH_FAILED, f"request refused: {_describe(exc)}")
    return RequestFailure(
        RequestProblem.FETCH_FAILED, f"connection failed: {_describe(exc)}", retryable=True
    )


NETWORK_ERRORS = (requests.RequestException, OSError, ValueError)
"""What a request through a guarded session raises, besides RequestFailure from the guard."""
