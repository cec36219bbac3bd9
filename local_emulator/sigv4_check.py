"""SigV4, checked at the storage endpoint as AWS checks it (moto checks no signature).

Every request that carries credentials, an `Authorization` header or a presigned query
(`X-Amz-Signature`...), is verified here before moto sees it, for every service the
endpoint serves (S3, SQS, Secrets Manager, the rest): the access key must be the
emulator's, the scope `<key>/<day>/<region>/<service>/aws4_request` well formed and of the
request's day, the time within 15 minutes of now (a presigned URL: not past its
`X-Amz-Expires`, at most 7 days), and the signature the one the secret key gives the
canonical request:

    METHOD \\n canonical path \\n canonical query \\n canonical headers \\n signed headers \\n
    payload hash

- the path: S3's as sent, each byte but the unreserved ones percent-encoded once; the other
  services' normalised (dot segments, doubled slashes) and encoded twice, as botocore and
  AWS do;
- the query: every parameter but `X-Amz-Signature`, names and values percent-encoded,
  sorted;
- the headers named in `SignedHeaders` (`host` among them), values trimmed and their inner
  spaces collapsed, repeated ones joined with `,`;
- the payload hash: S3's `x-amz-content-sha256` header (required with a header signature;
  `UNSIGNED-PAYLOAD` for a presigned URL without it), which may also be one of the
  streaming markers (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-
  TRAILER`...); for the other services the SHA-256 of the body, read here (their bodies
  are small: a message, a secret) and handed on.

What S3 does besides and the check does too: a hex `x-amz-content-sha256` is compared with
the body's own hash (`XAmzContentSHA256Mismatch`), the body being read once here and handed
to moto from memory (moto reads it whole anyway). An `aws-chunked` body (a streaming
payload) is decoded here, each chunk's signature checked for a signed stream (the trailer's
own signature is not), and handed to moto whole, which would store it as sent. What it
leaves out: session tokens (the emulator issues none: a request carrying one is
refused, as AWS refuses a token it did not issue).

A refusal is in the service's own error shape: S3's XML `<Error>` (403
`SignatureDoesNotMatch`, `InvalidAccessKeyId`, `AccessDenied` "Request has expired"...), the
query protocol's `<ErrorResponse>` (SQS's query API), JSON's `{"__type", "message"}` with
`x-amzn-query-error` for SQS's JSON API. Requests without credentials go on untouched: the
layer behind (`cdn.StorageAccess`, the POST policy check) decides what they may do.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import io
import json
import posixpath
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes
from xml.sax.saxutils import escape

from local_emulator.cdn import anonymous

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = "-_.~"
XML_REST_SERVICES = frozenset({"cloudfront", "route53"})
_HEX = frozenset("0123456789abcdef")
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
_MISMATCH_ELSEWHERE = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


class Refusal(Exception):
    """A request refused: its status, code, message and (S3) the extra elements."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def _authorization_malformed(message: str) -> Refusal:
    return Refusal(400, "AuthorizationHeaderMalformed", message)


def _query_malformed(message: str) -> Refusal:
    return Refusal(400, "AuthorizationQueryParametersError", message)


@dataclass(frozen=True)
class Signature:
    """What a request says about its signature (from its header or its query)."""

    access_key: str
    day: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    presigned: bool
    expires: int = 0

    @property
    def scope(self) -> str:
        return f"{self.day}/{self.region}/{self.service}/aws4_request"


def _scope(credential: str, malformed: Callable[[str], Refusal]) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise malformed(
            "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
            'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    if len(parts[1]) != 8 or not parts[1].isdigit():
        raise malformed(f'Invalid credential date "{parts[1]}". This date is not the current date.')
    return parts[0], parts[1], parts[2], parts[3]


def parse_authorization(header: str) -> Signature:
    """`AWS4-HMAC-SHA256 Credential=.../aws4_request, SignedHeaders=a;b, Signature=hex`."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise Refusal(
            400, "InvalidArgument", "Unsupported Authorization Type", ArgumentName="Authorization"
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, equals, value = item.strip().partition("=")
        if equals:
            fields[name.strip()] = value.strip()
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise _authorization_malformed(
                f"The authorization header is malformed; missing {name}."
            )
    key, day, region, service = _scope(fields["Credential"], _authorization_malformed)
    return Signature(
        key,
        day,
        region,
        service,
        tuple(fields["SignedHeaders"].lower().split(";")),
        fields["Signature"].lower(),
        presigned=False,
    )


def parse_presigned(query: Mapping[str, str]) -> Signature:
    """The X-Amz-* parameters of a presigned URL (names as sent: AWS's are case-sensitive)."""
    if "X-Amz-Algorithm" not in query and ("Signature" in query or "AWSAccessKeyId" in query):
        raise Refusal(
            400,
            "InvalidRequest",
            "The authorization mechanism you have provided is not "
            "supported. Please use AWS4-HMAC-SHA256.",
        )
    for name in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature"):  # fmt: skip
        if not query.get(name):
            raise _query_malformed(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                "X-Amz-Expires parameters."
            )
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_malformed('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    expires = query["X-Amz-Expires"]
    if not expires.isdigit():
        raise _query_malformed("X-Amz-Expires should be a number")
    if int(expires) > MAX_PRESIGNED_SECONDS:
        raise _query_malformed("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    key, day, region, service = _scope(query["X-Amz-Credential"], _query_malformed)
    return Signature(
        key,
        day,
        region,
        service,
        tuple(query["X-Amz-SignedHeaders"].lower().split(";")),
        query["X-Amz-Signature"].lower(),
        presigned=True,
        expires=int(expires),
    )


def _encode(data: bytes | str, safe: str) -> str:
    return quote(data, safe=safe)


def canonical_path(raw_path: str, service: str) -> str:
    """The path as SigV4 signs it (see the module's docstring)."""
    decoded = unquote_to_bytes(raw_path or "/")
    once = _encode(decoded, "/" + _UNRESERVED)
    if service == "s3":
        return once
    normalized = posixpath.normpath(once) if once not in ("", "/") else "/"
    if normalized.startswith("//"):  # normpath keeps a leading double slash
        normalized = "/" + normalized.lstrip("/")
    if once.endswith("/") and normalized != "/":
        normalized += "/"
    return _encode(normalized, "/" + _UNRESERVED)


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    pairs = []
    for item in raw_query.split("&") if raw_query else []:
        name, _, value = item.partition("=")
        pairs.append((unquote_to_bytes(name), unquote_to_bytes(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[bytes, bytes]], *, presigned: bool) -> str:
    encoded = sorted(
        (_encode(name, _UNRESERVED), _encode(value, _UNRESERVED))
        for name, value in pairs
        if not (presigned and name == b"X-Amz-Signature")
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _header(environ: WSGIEnvironment, name: str) -> str | None:
    if name == "content-type":
        value = environ.get("CONTENT_TYPE")
    elif name == "content-length":
        value = environ.get("CONTENT_LENGTH")
    else:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
    return None if value is None else str(value)


def canonical_headers(environ: WSGIEnvironment, names: Iterable[str]) -> str:
    lines = []
    for name in names:
        value = _header(environ, name)
        if value is None:
            value = ""
        lines.append(f"{name}:{' '.join(value.split())}")
    return "\n".join(lines) + "\n"


def _amz_time(text: str) -> float | None:
    """`YYYYMMDDTHHMMSSZ` as seconds since the epoch (strptime costs ten times more)."""
    digits = text[:8] + text[9:15]
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not digits.isdigit():
        return None
    year, month, day = int(text[:4]), int(text[4:6]), int(text[6:8])
    hour, minute, second = int(text[9:11]), int(text[11:13]), int(text[13:15])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _KeyCache:
    """Signing keys by (secret, day, region, service): four HMACs saved per request."""

    keys: dict[tuple[str, str, str, str], bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, secret: str, day: str, region: str, service: str) -> bytes:
        wanted = (secret, day, region, service)
        with self.lock:
            found = self.keys.get(wanted)
        if found is not None:
            return found
        key = ("AWS4" + secret).encode()
        for part in (day, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        with self.lock:
            if len(self.keys) > 64:
                self.keys.clear()
            self.keys[wanted] = key
        return key


class SignatureVerifier:
    """Checks one request's SigV4 signature against `credentials` (access key -> secret)."""

    def __init__(
        self, credentials: Mapping[str, str], clock: Callable[[], float] = time.time
    ) -> None:
        self.credentials = dict(credentials)
        self.clock = clock
        self._keys = _KeyCache()

    def verify(self, environ: WSGIEnvironment) -> Signature:
        raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        raw_path, _, raw_query = raw_uri.partition("?")
        if not raw_uri:  # a server that keeps no raw URI: rebuild it
            raw_path = quote(str(environ.get("PATH_INFO", "")).encode("latin-1"), safe="/~")
            raw_query = str(environ.get("QUERY_STRING", ""))
        if "://" in raw_path:  # an absolute-form target
            raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
        pairs = query_pairs(raw_query)
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization:
            signature = parse_authorization(str(authorization))
            amz_date = _header(environ, "x-amz-date") or ""
            if not amz_date:
                raise Refusal(
                    403,
                    "AccessDenied",
                    "AWS authentication requires a valid Date or x-amz-date header",
                )
        else:
            query = {name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
                     for name, value in pairs}  # fmt: skip
            signature = parse_presigned(query)
            amz_date = query["X-Amz-Date"]
        secret = self.credentials.get(signature.access_key)
        if secret is None:
            raise self._unknown_key(signature)
        if "host" not in signature.signed_headers:
            raise _authorization_malformed("'Host' must be a signed header")
        if _header(environ, "x-amz-security-token") or any(
            name == b"X-Amz-Security-Token" for name, _ in pairs
        ):
            raise self._invalid_token(signature)
        self._check_time(signature, amz_date)
        payload = self._payload_hash(environ, signature)
        canonical = "\n".join(
            (
                str(environ.get("REQUEST_METHOD", "GET")).upper(),
                canonical_path(raw_path, signature.service),
                canonical_query(pairs, presigned=signature.presigned),
                canonical_headers(environ, signature.signed_headers),
                ";".join(signature.signed_headers),
                payload,
            )
        )
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                amz_date,
                f"{signature.scope}",
                hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
            )
        )
        key = self._keys.get(secret, signature.day, signature.region, signature.service)
        expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.signature):
            raise Refusal(
                403,
                "SignatureDoesNotMatch",
                _MISMATCH,
                AWSAccessKeyId=signature.access_key,
                StringToSign=string_to_sign,
                SignatureProvided=signature.signature,
                CanonicalRequest=canonical,
            )
        if _is_hex_hash(payload) and signature.service == "s3":
            self._check_body(environ, payload)
        elif payload.startswith("STREAMING-") and signature.service == "s3":
            decode_aws_chunked(environ, payload, key, amz_date, signature)
        return signature

    def _check_time(self, signature: Signature, amz_date: str) -> None:
        moment = _amz_time(amz_date)
        if moment is None:
            raise Refusal(
                403, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header"
            )
        if not amz_date.startswith(signature.day):
            raise Refusal(
                403,
                "SignatureDoesNotMatch",
                f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{signature.day}' != '{amz_date[:8]}', from '{amz_date}'.",
            )
        now = self.clock()
        if signature.presigned:
            if moment - now > MAX_SKEW_SECONDS:
                raise Refusal(403, "AccessDenied", "Request is not valid yet")
            if now > moment + signature.expires:
                raise Refusal(
                    403,
                    "AccessDenied",
                    "Request has expired",
                    Expires=_iso(moment + signature.expires),
                    ServerTime=_iso(now),
                    **{"X-Amz-Expires": str(signature.expires)},
                )
        elif abs(now - moment) > MAX_SKEW_SECONDS:
            raise Refusal(
                403,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                RequestTime=amz_date,
                ServerTime=_iso(now),
                MaxAllowedSkewMilliseconds=str(MAX_SKEW_SECONDS * 1000),
            )

    def _payload_hash(self, environ: WSGIEnvironment, signature: Signature) -> str:
        declared = _header(environ, "x-amz-content-sha256")
        if signature.service == "s3":
            if declared:
                return declared
            if signature.presigned:
                return UNSIGNED_PAYLOAD
            raise Refusal(
                400,
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
            )
        if declared and (signature.presigned or not _is_hex_hash(declared)):
            return declared
        body = _read_body(environ)
        return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256

    @staticmethod
    def _check_body(environ: WSGIEnvironment, declared: str) -> None:
        body = _read_body(environ)
        actual = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        if actual != declared:
            raise Refusal(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ClientComputedContentSHA256=declared,
                S3ComputedContentSHA256=actual,
            )

    @staticmethod
    def _unknown_key(signature: Signature) -> Refusal:
        if signature.service == "s3":
            return Refusal(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=signature.access_key,
            )
        return Refusal(
            403,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )

    @staticmethod
    def _invalid_token(signature: Signature) -> Refusal:
        if signature.service == "s3":
            return Refusal(
                400, "InvalidToken", "The provided token is malformed or otherwise invalid."
            )
        return Refusal(
            403, "InvalidClientTokenId", "The security token included in the request is invalid."
        )


SIGNED_STREAMING = (
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
)


def decode_aws_chunked(
    environ: WSGIEnvironment, payload: str, key: bytes, amz_date: str, signature: Signature
) -> None:
    """An `aws-chunked` body (`hex-size[;chunk-signature=sig]`, the data, ..., a zero-size
    chunk, trailers) decoded for moto, which stores such bodies as they come: each chunk's
    signature checked against the previous one (the seed: the request's) when the payload
    is a signed stream, the decoded size against `x-amz-decoded-content-length`, trailers
    (`x-amz-checksum-*`) handed on as headers."""
    body = _read_body(environ)
    signed = payload in SIGNED_STREAMING
    previous = signature.signature
    decoded = bytearray()
    at = 0
    while True:
        end = body.find(b"\r\n", at)
        if end < 0:
            raise _incomplete()
        size_text, _, extension = body[at:end].decode("latin-1").partition(";")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise _incomplete() from None
        chunk = body[end + 2 : end + 2 + size]
        if len(chunk) != size:
            raise _incomplete()
        at = end + 2 + size
        if signed:
            provided = extension.partition("chunk-signature=")[2].strip()
            to_sign = "\n".join(
                (
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    amz_date,
                    signature.scope,
                    previous,
                    EMPTY_SHA256,
                    hashlib.sha256(chunk).hexdigest(),
                )
            )
            expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, provided):
                raise Refusal(403, "SignatureDoesNotMatch", _MISMATCH)
            previous = expected
        if size == 0:
            break
        decoded += chunk
        if body[at : at + 2] != b"\r\n":
            raise _incomplete()
        at += 2
    for line in body[at:].split(b"\r\n"):  # trailers
        name, colon, value = line.decode("latin-1").partition(":")
        if colon and name.lower().startswith("x-amz-checksum-"):
            environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
    declared = _header(environ, "x-amz-decoded-content-length")
    if declared is not None and declared.strip() != str(len(decoded)):
        raise _incomplete()
    encodings = [
        e.strip()
        for e in str(environ.get("HTTP_CONTENT_ENCODING", "")).split(",")
        if e.strip() and e.strip().lower() != "aws-chunked"
    ]
    if encodings:
        environ["HTTP_CONTENT_ENCODING"] = ",".join(encodings)
    else:
        environ.pop("HTTP_CONTENT_ENCODING", None)
    for name in ("HTTP_X_AMZ_DECODED_CONTENT_LENGTH", "HTTP_X_AMZ_TRAILER"):
        environ.pop(name, None)
    environ["HTTP_X_AMZ_CONTENT_SHA256"] = UNSIGNED_PAYLOAD
    environ["wsgi.input"] = io.BytesIO(bytes(decoded))
    environ["CONTENT_LENGTH"] = str(len(decoded))
    environ["local_emulator.body"] = bytes(decoded)


def _incomplete() -> Refusal:
    return Refusal(
        400,
        "IncompleteBody",
        "The request body terminated unexpectedly or is not aws-chunked as declared",
    )


def _is_hex_hash(value: str) -> bool:
    return len(value) == 64 and set(value) <= _HEX


def _read_body(environ: WSGIEnvironment) -> bytes:
    """The whole body, read once and put back for the app behind."""
    held = environ.get("local_emulator.body")
    if isinstance(held, bytes):
        return held
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    if length_text.isdigit():
        body = stream.read(int(length_text)) if int(length_text) else b""
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["local_emulator.body"] = body
    return body


# -- the refusal, in the service's shape ------------------------------------------------
def _request_id() -> str:
    return secrets.token_hex(8).upper()


def refusal_answer(
    environ: WSGIEnvironment, refusal: Refusal, service: str
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a refusal as `service` answers it."""
    request_id = _request_id()
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    if service == "s3" or not service:
        elements = {"Code": refusal.code, "Message": refusal.message, **refusal.extra}
        elements.update(
            RequestId=request_id, HostId=base64.b64encode(secrets.token_bytes(48)).decode()
        )
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in elements.items())
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        return refusal.status, headers, body
    status = refusal.status
    if refusal.message == _MISMATCH:  # the other services' words for it
        refusal = Refusal(refusal.status, refusal.code, _MISMATCH_ELSEWHERE)
    json_code = {
        "SignatureDoesNotMatch": "InvalidSignatureException",
        "InvalidClientTokenId": "UnrecognizedClientException",
    }.get(refusal.code, refusal.code)
    if target:  # AWS's JSON protocols
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-RequestId", request_id),
        ]
        if service == "sqs":  # JSON with the query protocol's codes (awsQueryCompatible)
            headers.append(("x-amzn-query-error", f"{refusal.code};Sender"))
            json_code = f"com.amazon.coral.service#{json_code}"
        elif status == 403:
            status = 400  # the JSON services answer a bad signature with 400
        payload = json.dumps({"__type": json_code, "message": refusal.message}).encode()
        return status, headers, payload
    form = str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded")
    query = "Action=" in str(environ.get("QUERY_STRING", ""))
    if form or query or service in XML_REST_SERVICES:  # the query protocol, REST-XML
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{escape(refusal.code)}</Code><Message>{escape(refusal.message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body
    # REST-JSON (API Gateway, Lambda...): the code in a header
    headers = [
        ("Content-Type", "application/json"),
        ("x-amzn-RequestId", request_id),
        ("x-amzn-ErrorType", f"{json_code}:"),
    ]
    return status, headers, json.dumps({"message": refusal.message}).encode()


def service_of(environ: WSGIEnvironment) -> str:
    """The service a request names in its credential scope ('' when it cannot be read)."""
    authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
    marker = "Credential="
    text = authorization
    if marker not in text:
        text = str(environ.get("QUERY_STRING", ""))
        marker = "X-Amz-Credential="
    start = text.find(marker)
    if start < 0:
        return ""
    credential = text[start + len(marker) :].split(",")[0].split("&")[0].replace("%2F", "/")
    parts = credential.split("/")
    return parts[3] if len(parts) == 5 else ""


class SignatureCheck:
    """WSGI middleware: a request with credentials goes on only when its signature holds."""

    def __init__(self, app: WSGIApplication, verifier: SignatureVerifier) -> None:
        self._app = app
        self.verifier = verifier

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if anonymous(environ):
            return self._app(environ, start_response)
        try:
            self.verifier.verify(environ)
        except Refusal as refusal:
            drain_refused_body(environ, 64 * 1024 * 1024)
            status, headers, body = refusal_answer(environ, refusal, service_of(environ))
            headers.append(("Content-Length", str(len(body))))
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]
        return self._app(environ, start_response)


def drain_refused_body(environ: WSGIEnvironment, at_most: int) -> None:
    """What is left of a refused request's body (up to `at_most` bytes) read and dropped, so
    the client reads the answer; nothing when the check already holds the body."""
    if "local_emulator.body" in environ:
        return
    length_text = str(environ.get("CONTENT_LENGTH") or "").strip()
    left = min(int(length_text), at_most) if length_text.isdigit() else 0
    stream = environ.get("wsgi.input")
    while stream is not None and left > 0:
        data = stream.read(min(65536, left))
        if not data:
            return
        left -= len(data)
