"""Image downloads over requests, behind the address guard of `guarded_http`.

Redirects are followed by hand, each hop checked again (its syntax here, its addresses when
the guarded connection is made). The body is capped at a size, and the whole download, every
hop included, is held to a deadline by the guard's watchdog.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from urllib.parse import urljoin

import requests

from chalicelib.adapters.guarded_http import (
    DEFAULT_POOL_SIZE,
    NETWORK_ERRORS,
    DeadlineWatchdog,
    GuardedResolver,
    RequestFailure,
    Resolve,
    deadline_failure,
    guarded_session,
    request_failure,
)
from chalicelib.domain.models import ImageErrorCode
from chalicelib.domain.netguard import check_url_syntax
from chalicelib.errors import ImageFailure

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"


class HttpImageFetcher:
    """ImageFetcher over requests: guarded, capped, with timeouts and a total deadline.

    One session (and its connection pools) serves every download; safe to call from a
    thread pool of about `pool_size` workers.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        connect_timeout: float,
        read_timeout: float,
        deadline: float,
        allow_private: bool,
        session: requests.Session | None = None,
        resolve: Resolve | None = None,
        user_agent: str = "image-pipeline/0.1",
        guard: GuardedResolver | None = None,
        clock: Callable[[], float] = time.monotonic,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.max_bytes = max_bytes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_redirects = max_redirects
        self.guard = guard or GuardedResolver(allow_private=allow_private, resolve=resolve)
        self._session = guarded_session(self.guard, session, pool_size=pool_size)
        self._clock = clock
        self._headers = {
            "User-Agent": user_agent,
            "Accept": _ACCEPT,
            "Accept-Encoding": "identity",
        }

    def fetch(self, url: str) -> bytes:
        try:
            return self._download(url)
        except RequestFailure as failure:  # the guard's or the request's: the image's failure
            raise ImageFailure(
                ImageErrorCode(failure.problem), failure.message, retryable=failure.retryable
            ) from failure

    def _download(self, url: str) -> bytes:
        deadline_at = self._clock() + self.deadline
        with DeadlineWatchdog(self.deadline) as watchdog:
            try:
                data = self._follow(url, deadline_at)
            except (ImageFailure, RequestFailure):
                raise
            except NETWORK_ERRORS as exc:
                raise request_failure(exc, watchdog) from exc
            if watchdog.expired:  # the watchdog cut the connection: what came may be cut short
                raise deadline_failure(watchdog.seconds)
            return data

    def _follow(self, url: str, deadline_at: float) -> bytes:
        current = url
        for hop in range(self.max_redirects + 1):
            problem = check_url_syntax(current)
            if problem:
                where = "" if hop == 0 else f"redirect to {current[:200]!r}: "
                raise ImageFailure(ImageErrorCode.INVALID_URL, where + problem)
            remaining = self._remaining(deadline_at)
            response = self._session.get(
                current,
                headers=self._headers,
                stream=True,
                allow_redirects=False,
                timeout=(min(self.connect_timeout, remaining), min(self.read_timeout, remaining)),
            )
            with response:
                if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                    current = _redirect_target(current, response.headers["location"])
                    continue
                _check_status(response)
                return self._read_body(response, deadline_at)
        raise ImageFailure(
            ImageErrorCode.HTTP_ERROR, f"too many redirects (more than {self.max_redirects})"
        )

    def _remaining(self, deadline_at: float) -> float:
        remaining = deadline_at - self._clock()
        if remaining <= 0:
            raise deadline_failure(self.deadline)
        return remaining

    def _read_body(self, response: requests.Response, deadline_at: float) -> bytes:
        declared = response.headers.get("content-length", "").strip()
        size = int(declared) if declared.isascii() and declared.isdigit() else None
        if size is not None and size > self.max_bytes:
            raise ImageFailure(
                ImageErrorCode.TOO_LARGE,
                f"declared size {size} bytes exceeds the limit of {self.max_bytes}",
            )
        # A declared length is read in one call: the socket reads loop in C into one buffer,
        # cheaper than 64 KiB chunks through urllib3 and a join (docs/performance.md). The
        # watchdog still cuts a download that outlives its deadline; without a length,
        # chunks keep the cap checked.
        parts: list[bytes] = []
        total = 0
        for chunk in response.iter_content(chunk_size=size or _CHUNK):
            total += len(chunk)
            if total > self.max_bytes:
                raise ImageFailure(
                    ImageErrorCode.TOO_LARGE, f"body exceeds the limit of {self.max_bytes} bytes"
                )
            parts.append(chunk)
            self._remaining(deadline_at)
        return b"".join(parts)


def _redirect_target(current: str, location: str) -> str:
    with contextlib.suppress(UnicodeError):  # requests decodes headers as latin-1
        location = location.encode("latin-1").decode("utf-8")
    return urljoin(current, location.strip())


def _check_status(response: requests.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    retryable = status >= 500 or status in (408, 429)
    reason = f" {response.reason}" if response.reason else ""
    if status in _REDIRECT_STATUSES:
        reason += " without a Location header"
    raise ImageFailure(ImageErrorCode.HTTP_ERROR, f"HTTP {status}{reason}", retryable=retryable)
