"""The storage endpoint's outer door: moto's management API hidden, CORS by bucket rules.

moto's server answers `/moto-api/...` (every resource as JSON, a reset, its dashboard) to
anyone, and its Flask app answers every cross-origin request with
`Access-Control-Allow-Origin` reflecting the request's origin, on every service. S3 has no
such API, and answers a cross-origin request by the bucket's CORS rules only. Here, in front
of everything else on the port:

- any path under `/moto-api` is answered as S3 answers a bucket that does not exist (404
  `NoSuchBucket`); the emulator resets moto in its own process (`MotoServer.reset`);
- an `OPTIONS` preflight is answered here, never by moto: for an S3 bucket with CORS rules,
  200 and the first rule's grant when one rule matches the origin, the
  `Access-Control-Request-Method` and every `Access-Control-Request-Headers` name
  (wildcards as S3 has them, whole-string), else 403 (`AccessForbidden`, S3's
  `CORSResponse` messages); anything else (another service, no bucket) 403 with no grant;
- every other answer loses moto's `Access-Control-*` headers and, when the request is an
  S3 request with an `Origin` to a bucket whose rule matches that origin and method, gets
  that rule's: `Access-Control-Allow-Origin` (`*` for a rule allowing any origin, else the
  origin itself with `Access-Control-Allow-Credentials: true`), `-Allow-Methods`,
  `-Expose-Headers`, `-Max-Age`, and `Vary: Origin, Access-Control-Request-Headers,
  Access-Control-Request-Method`; an answer the CDN's stand-in gave (`cdn.py`: a read
  without credentials that a distribution serves) gets the distribution's CORS headers
  instead, which it leaves in the request's environ under `cdn.CDN_CORS`.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from xml.sax.saxutils import escape

from local_emulator.cdn import CDN_CORS
from local_emulator.sigv4_check import drain_refused_body, service_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

MANAGEMENT_PREFIX = "/moto-api"
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
NOT_ENABLED = "CORSResponse: CORS is not enabled for this bucket."
NOT_ALLOWED = (
    "CORSResponse: This CORS request is not allowed. This is usually because the evalution of "
    "Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers "
    "are not whitelisted by the resource's CORS spec."
)


@dataclass(frozen=True)
class CorsRule:
    allowed_methods: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    exposed_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None

    def grants(self, origin: str, method: str, headers: Sequence[str] = ()) -> bool:
        return (
            method in self.allowed_methods
            and any(_matches(pattern, origin) for pattern in self.allowed_origins)
            and all(
                any(_matches(pattern.lower(), name.lower()) for pattern in self.allowed_headers)
                for name in headers
            )
        )

    def headers(self, origin: str) -> list[tuple[str, str]]:
        out = []
        if "*" in self.allowed_origins:
            out.append(("Access-Control-Allow-Origin", "*"))
        else:
            out += [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Credentials", "true"),
            ]
        out.append(("Access-Control-Allow-Methods", ", ".join(self.allowed_methods)))
        if self.exposed_headers:
            out.append(("Access-Control-Expose-Headers", ", ".join(self.exposed_headers)))
        if self.max_age_seconds is not None:
            out.append(("Access-Control-Max-Age", str(self.max_age_seconds)))
        return out


@lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def _matches(pattern: str, value: str) -> bool:
    """S3's wildcard (`*`, at most one in an origin) over the whole value."""
    return _pattern(pattern).fullmatch(value) is not None


class BucketRules(Protocol):
    """What the door asks of the storage behind it."""

    def bucket_named(self, environ: WSGIEnvironment) -> str | None:
        """The existing bucket an S3 request names (path-style or virtual host), else None."""
        ...

    def cors_rules(self, bucket: str) -> list[CorsRule]:
        """The bucket's CORS rules, in order (none: CORS is not enabled for it)."""
        ...


def _is_s3(environ: WSGIEnvironment) -> bool:
    if environ.get("HTTP_X_AMZ_TARGET"):
        return False
    return service_of(environ) in ("", "s3")


def _answer(
    start_response: StartResponse,
    status: int,
    code: str,
    message: str,
    headers: Iterable[tuple[str, str]] = (),
    **extra: str,
) -> list[bytes]:
    request_id = secrets.token_hex(8).upper()
    elements = {"Code": code, "Message": message, **extra, "RequestId": request_id}
    elements["HostId"] = base64.b64encode(secrets.token_bytes(48)).decode()
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in elements.items())
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            *headers,
        ],
    )
    return [body]


class StorageDoors:
    """WSGI middleware: the outermost layer of the storage endpoint (the module's docstring)."""

    def __init__(self, app: WSGIApplication, buckets: BucketRules) -> None:
        self._app = app
        self._buckets = buckets

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == MANAGEMENT_PREFIX or path.startswith(MANAGEMENT_PREFIX + "/"):
            drain_refused_body(environ, 1024 * 1024)
            return _answer(
                start_response,
                404,
                "NoSuchBucket",
                "The specified bucket does not exist",
                BucketName=MANAGEMENT_PREFIX[1:],
            )
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        origin = str(environ.get("HTTP_ORIGIN", ""))
        if method == "OPTIONS":
            drain_refused_body(environ, 1024 * 1024)
            return self._preflight(environ, start_response, origin)
        grant = self._grant(environ, origin, method) if origin else []

        def answer(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if not k.lower().startswith("access-control-")]
            by_cdn = environ.get(CDN_CORS)  # the distribution answered: its policy's CORS
            if by_cdn is not None:
                kept += by_cdn
            elif grant:
                kept = [(k, v) for k, v in kept if k.lower() != "vary"] + grant
            return start_response(status, kept, exc_info)

        return self._app(environ, answer)

    def _bucket(self, environ: WSGIEnvironment) -> str | None:
        return self._buckets.bucket_named(environ) if _is_s3(environ) else None

    def _grant(self, environ: WSGIEnvironment, origin: str, method: str) -> list[tuple[str, str]]:
        bucket = self._bucket(environ)
        if bucket is None:
            return []
        for rule in self._buckets.cors_rules(bucket):
            if rule.grants(origin, method):
                return [*rule.headers(origin), ("Vary", VARY)]
        return []

    def _preflight(
        self, environ: WSGIEnvironment, start_response: StartResponse, origin: str
    ) -> list[bytes]:
        wanted = str(environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD", ""))
        bucket = self._bucket(environ)
        if bucket is None:
            return _answer(start_response, 403, "AccessForbidden", NOT_ALLOWED)
        if not origin or not wanted:
            return _answer(
                start_response,
                400,
                "BadRequest",
                "Insufficient information. Origin request header needed.",
            )
        rules = self._buckets.cors_rules(bucket)
        if not rules:
            return _answer(start_response, 403, "AccessForbidden", NOT_ENABLED)
        requested = [
            name.strip()
            for name in str(environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")).split(",")
            if name.strip()
        ]
        for rule in rules:
            if rule.grants(origin, wanted, requested):
                headers = rule.headers(origin)
                if requested:
                    headers.append(("Access-Control-Allow-Headers", ", ".join(requested)))
                headers += [("Vary", VARY), ("Content-Length", "0")]
                start_response("200 OK", headers)
                return []
        return _answer(start_response, 403, "AccessForbidden", NOT_ALLOWED)
