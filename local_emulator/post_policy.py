"""S3's POST policy, enforced in front of moto's S3 (moto stores any browser POST it gets).

A browser-style upload (`POST /<bucket>`, or `POST /` on a virtual host, with a
`multipart/form-data` body) is read here before moto sees it, and checked as S3 checks it
("Browser-based uploads using POST (AWS Signature Version 4)", "Creating a POST policy"):

- `key` and a `file` are there; the fields before `file` are what S3 reads (at most 20 KiB
  of them; those after it are ignored) and field names match case-insensitively;
- the signature fields are all there and `x-amz-signature` is the hex HMAC-SHA256 of the
  base64 `policy`, keyed with the SigV4 signing key of the `x-amz-credential` scope (its
  access key's secret, its day, its region, `s3`); SigV2 (`AWSAccessKeyId`, `signature`:
  base64 HMAC-SHA1) too. A form without a policy is an anonymous write: refused;
- the policy has not expired, every condition holds (exact match, `eq`, `starts-with`,
  `content-length-range` on the file's size, `bucket` against the URL's bucket, `$key`
  after `${filename}` is replaced by the file's name), and every field is named by a
  condition (except `x-amz-signature`, `file`, `policy` and `x-ignore-*`).

A refusal answers S3's XML error (`AccessDenied`, `SignatureDoesNotMatch`,
`EntityTooLarge`, ...) with S3's status; an upload that passes goes on to moto with its
body replayed byte for byte. The body is held in memory only up to the policy's size cap
plus `MARGIN` (what moto would hold anyway): a `Content-Length` that cannot fit is refused
once the fields before the file are read, before the file is, and a file that grows past
the cap is refused as soon as it does. What is left of a refused body is read and dropped
(up to `DRAIN_LIMIT`) so that the client, still sending, reads the answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol
from xml.sax.saxutils import escape

from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PRE_DATA_LIMIT = 20_480  # S3: MaxPostPreDataLengthBytes
MARGIN = 64 * 1024  # form bytes after the file's data: its closing boundary, fields S3 ignores
UNBOUNDED_CAP = 100 * 1024 * 1024  # a policy without content-length-range (S3's own: 5 GB)
DRAIN_LIMIT = 64 * 1024 * 1024
CHUNK = 64 * 1024
SIGV4_FIELDS = ("x-amz-signature", "x-amz-algorithm", "x-amz-credential", "x-amz-date")
SIGV2_FIELDS = ("signature", "awsaccesskeyid")
ALGORITHM = "AWS4-HMAC-SHA256"
_EXEMPT = frozenset({"x-amz-signature", "file", "policy"})
_EXEMPT_V2 = frozenset({"signature", "awsaccesskeyid"})
_FIELD_ORDER = "If it is specified, please check the order of the fields."
_CREDENTIAL_SHAPE = (
    "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
    'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
)


class S3Error(Exception):
    """A refusal in S3's words: status, code, message and the extra elements S3 adds."""

    def __init__(self, status: int, code: str, message: str, **extra: str | int) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = {k: str(v) for k, v in extra.items()}

    def xml(self, request_id: str, host_id: str) -> bytes:
        elements = {"Code": self.code, "Message": self.message, **self.extra}
        elements.update(RequestId=request_id, HostId=host_id)
        inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in elements.items())
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error(403, "AccessDenied", message)


def invalid_argument(message: str, name: str, value: str = "", **extra: str) -> S3Error:
    return S3Error(400, "InvalidArgument", message, ArgumentName=name, ArgumentValue=value, **extra)


def invalid_policy(message: str) -> S3Error:
    return S3Error(400, "InvalidPolicyDocument", f"Invalid Policy: {message}")


def malformed() -> S3Error:
    return S3Error(
        400,
        "MalformedPOSTRequest",
        "The body of your POST request is not well-formed multipart/form-data.",
    )


def signing_key(secret: str, day: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_policy_v4(policy: str, secret: str, day: str, region: str, service: str = "s3") -> str:
    """`x-amz-signature` of a base64 policy document."""
    key = signing_key(secret, day, region, service)
    return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()


def sign_policy_v2(policy: str, secret: str) -> str:
    """`signature` of a base64 policy document (SigV2)."""
    digest = hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass(frozen=True)
class SizeRange:
    low: int
    high: int


@dataclass(frozen=True)
class Authorized:
    """A form whose policy holds for everything but the file's size."""

    key: str
    sizes: tuple[SizeRange, ...] = ()

    @property
    def cap(self) -> int | None:
        return min((r.high for r in self.sizes), default=None)

    def check_size(self, size: int) -> None:
        for size_range in self.sizes:
            if size < size_range.low:
                raise S3Error(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                    ProposedSize=size,
                    MinSizeAllowed=size_range.low,
                )
            if size > size_range.high:
                raise S3Error(
                    400,
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size",
                    ProposedSize=size,
                    MaxSizeAllowed=size_range.high,
                )


def utc_now() -> datetime:
    return datetime.now(UTC)


class PolicyChecker:
    """Checks the fields of one upload against its policy, as S3 does.

    `credentials` maps access key ids to their secret keys. `region`, when a check is given
    one, is the bucket's: a credential scoped to another region is refused as S3 does."""

    def __init__(
        self, credentials: Mapping[str, str], clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.credentials = dict(credentials)
        self.clock = clock

    def authorize(
        self,
        fields: Sequence[tuple[str, str]],
        *,
        bucket: str,
        filename: str | None,
        region: str | None = None,
    ) -> Authorized:
        form: dict[str, str] = {}
        for name, value in fields:
            form.setdefault(name.lower(), value)  # the first of a name, as moto reads it
        key = form.get("key", "")
        if not key:
            raise invalid_argument(
                f"Bucket POST must contain a field named 'key'.  {_FIELD_ORDER}", "key"
            )
        if "${filename}" in key:
            key = key.replace("${filename}", filename or "")
        values = {**form, "key": key, "bucket": bucket}
        policy = form.get("policy")
        if not policy:
            raise access_denied()  # anonymous: no bucket here is publicly writable
        v2 = self._verify_signature(form, policy, region)
        document = decode_policy(policy)
        expiration = parse_expiration(document.get("expiration"))
        if self.clock() > expiration:
            raise access_denied("Invalid according to Policy: Policy expired.")
        conditions = document.get("conditions")
        if not isinstance(conditions, list):
            raise invalid_policy("Policy missing conditions.")
        sizes: list[SizeRange] = []
        named: set[str] = set()
        for condition in conditions:
            outcome = evaluate(condition, values)
            if isinstance(outcome, SizeRange):
                sizes.append(outcome)
                continue
            name, holds = outcome
            named.add(name)
            if not holds:
                raise access_denied(
                    f"Invalid according to Policy: Policy Condition failed: {render(condition)}"
                )
        exempt = _EXEMPT | _EXEMPT_V2 if v2 else _EXEMPT
        extra = [
            name
            for name in form
            if name not in exempt and not name.startswith("x-ignore-") and name not in named
        ]
        if extra:
            raise access_denied(
                f"Invalid according to Policy: Extra input fields: {', '.join(extra)}"
            )
        return Authorized(key=key, sizes=tuple(sizes))

    def check(
        self,
        fields: Sequence[tuple[str, str]],
        *,
        bucket: str,
        filename: str | None,
        size: int,
        region: str | None = None,
    ) -> Authorized:
        """The whole check of a form whose file is `size` bytes."""
        authorized = self.authorize(fields, bucket=bucket, filename=filename, region=region)
        authorized.check_size(size)
        return authorized

    def _verify_signature(self, form: Mapping[str, str], policy: str, region: str | None) -> bool:
        """True for SigV2; raises unless the signature is the policy's."""
        if any(name in form for name in SIGV4_FIELDS):
            _require(form, SIGV4_FIELDS)
            algorithm = form["x-amz-algorithm"]
            if algorithm != ALGORITHM:
                raise invalid_argument(
                    f"Unsupported algorithm: {algorithm}", "X-Amz-Algorithm", algorithm
                )
            credential = form["x-amz-credential"]
            parts = credential.split("/")
            if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
                raise invalid_argument(_CREDENTIAL_SHAPE, "X-Amz-Credential", credential)
            access_key, day, scope_region = parts[0], parts[1], parts[2]
            if len(day) != 8 or not day.isdigit():
                raise invalid_argument(_CREDENTIAL_SHAPE, "X-Amz-Credential", credential)
            if region is not None and scope_region != region:
                raise invalid_argument(
                    f"the region '{scope_region}' is wrong; expecting '{region}'",
                    "X-Amz-Credential",
                    credential,
                    Region=region,
                )
            secret = self._secret(access_key)
            expected = sign_policy_v4(policy, secret, day, scope_region)
            provided = form["x-amz-signature"]
            v2 = False
        elif any(name in form for name in SIGV2_FIELDS):
            _require(form, SIGV2_FIELDS)
            access_key = form["awsaccesskeyid"]
            expected = sign_policy_v2(policy, self._secret(access_key))
            provided = form["signature"]
            v2 = True
        else:
            raise access_denied()
        if not hmac.compare_digest(expected.encode(), provided.encode()):
            raise S3Error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.",
                AWSAccessKeyId=access_key,
                StringToSign=policy,
                SignatureProvided=provided,
            )
        return v2

    def _secret(self, access_key: str) -> str:
        secret = self.credentials.get(access_key)
        if secret is None:
            raise S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=access_key,
            )
        return secret


def _require(form: Mapping[str, str], names: Sequence[str]) -> None:
    for name in names:
        if name not in form:
            spelled = (
                "AWSAccessKeyId"
                if name == "awsaccesskeyid"
                else "-".join(part.capitalize() for part in name.split("-"))
            )
            raise invalid_argument(
                f"Bucket POST must contain a field named '{spelled}'.  {_FIELD_ORDER}", spelled
            )


def decode_policy(policy: str) -> dict[str, object]:
    try:
        document = json.loads(base64.b64decode(policy, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise invalid_policy("Invalid JSON.")
    return document


def parse_expiration(value: object) -> datetime:
    if value is None:
        raise invalid_policy("Policy missing expiration.")
    if not isinstance(value, str):
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _field_ref(ref: object) -> str:
    if not isinstance(ref, str) or not ref.startswith("$") or len(ref) < 2:
        raise invalid_policy(f"Invalid Condition: field reference must start with '$': {ref!r}")
    return ref[1:].lower()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise invalid_policy(f"Invalid Condition: value must be a string: {value!r}")
    return value


def _length(value: object) -> int:
    if isinstance(value, bool):
        raise invalid_policy("Invalid content-length-range")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise invalid_policy("Invalid content-length-range")


def evaluate(condition: object, values: Mapping[str, str]) -> tuple[str, bool] | SizeRange:
    """(the field it names, whether it holds), or the size range it sets."""
    if isinstance(condition, dict):
        if len(condition) != 1:
            raise invalid_policy(
                "Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                "specified."
            )
        ((name, expected),) = condition.items()
        name = str(name).lower()
        return name, values.get(name, "") == _text(expected)
    if not isinstance(condition, list) or len(condition) != 3:
        raise invalid_policy(f"Invalid Condition: {render(condition)}")
    operator = str(condition[0]).lower()
    if operator == "content-length-range":
        return SizeRange(_length(condition[1]), _length(condition[2]))
    name = _field_ref(condition[1])
    expected = _text(condition[2])
    actual = values.get(name, "")
    if operator == "eq":
        return name, actual == expected
    if operator == "starts-with":
        return name, actual.startswith(expected)
    raise invalid_policy(f"Invalid Condition: unknown operator {condition[0]!r}")


def render(condition: object) -> str:
    """A condition as S3 quotes it (an exact-match object as its `eq` form)."""
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, expected),) = condition.items()
        condition = ["eq", f"${name}", expected]
    return json.dumps(condition, ensure_ascii=False)


class Buckets(Protocol):
    """What the middleware asks of the storage behind it."""

    def bucket_of(self, environ: WSGIEnvironment) -> str | None:
        """The bucket a bucket-level request names (its path or its virtual host), else None."""
        ...

    def exists(self, bucket: str) -> bool:
        """False lets the request through: the storage answers NoSuchBucket itself."""
        ...

    def region(self, bucket: str) -> str | None:
        """The bucket's region (a credential scoped elsewhere is refused); None: any."""
        ...

    def cors_headers(self, bucket: str, origin: str) -> list[tuple[str, str]]:
        """The CORS headers the bucket's rules give a POST from `origin` (on refusals too,
        so that a page can read why)."""
        ...


class PathStyleBuckets:
    """Path-style requests (`/<bucket>`), every bucket there, in any region, no CORS."""

    def bucket_of(self, environ: WSGIEnvironment) -> str | None:
        return path_bucket(str(environ.get("PATH_INFO", "")))

    def exists(self, bucket: str) -> bool:
        return True

    def region(self, bucket: str) -> str | None:
        return None

    def cors_headers(self, bucket: str, origin: str) -> list[tuple[str, str]]:
        return []


def path_bucket(path: str) -> str | None:
    """`/<bucket>` or `/<bucket>/`: the bucket; anything else (`/`, an object's path): None."""
    name = path[1:].removesuffix("/") if path.startswith("/") else ""
    return name if name and "/" not in name else None


@dataclass
class _Upload:
    """What is read of one upload: the raw body so far and the fields before the file."""

    length: int
    chunks: list[bytes] = field(default_factory=list)
    read: int = 0
    in_file: bool = False
    fields: list[tuple[str, str]] = field(default_factory=list)
    filename: str | None = None
    file_size: int = 0


class PostPolicyMiddleware:
    """WSGI middleware: browser POST uploads are checked before `app` (moto) sees them."""

    def __init__(
        self,
        app: WSGIApplication,
        checker: PolicyChecker,
        buckets: Buckets | None = None,
        *,
        unbounded_cap: int = UNBOUNDED_CAP,
    ) -> None:
        self._app = app
        self._checker = checker
        self._buckets: Buckets = buckets or PathStyleBuckets()
        self._unbounded_cap = unbounded_cap

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        bucket = self._upload_bucket(environ)
        if bucket is None or not self._buckets.exists(bucket):
            return self._app(environ, start_response)
        length = _content_length(environ)
        if length is None:
            error = S3Error(
                411, "MissingContentLength", "You must provide the Content-Length HTTP header."
            )
            return self._refuse(environ, start_response, bucket, error)
        upload = _Upload(length)
        try:
            self._read_checked(environ, bucket, upload)
        except S3Error as error:
            _drain(environ["wsgi.input"], length - upload.read)
            return self._refuse(environ, start_response, bucket, error)
        body = b"".join(upload.chunks)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._app(environ, start_response)

    def _upload_bucket(self, environ: WSGIEnvironment) -> str | None:
        """The bucket of a browser-style upload (a multipart POST to a bucket), else None."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        media_type, _ = parse_options_header(str(environ.get("CONTENT_TYPE", "")))
        if media_type.lower() != "multipart/form-data":
            return None
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return None
        return self._buckets.bucket_of(environ)

    def _read_checked(self, environ: WSGIEnvironment, bucket: str, upload: _Upload) -> None:
        """Reads the body into `upload.chunks`, checking it on the way; raises S3Error."""
        _, options = parse_options_header(str(environ.get("CONTENT_TYPE", "")))
        boundary = options.get("boundary", "").encode("latin-1", "replace")
        if not boundary:
            raise malformed()
        stream = environ["wsgi.input"]
        decoder = MultipartDecoder(boundary)

        def feed() -> bool:
            """Reads the next chunk into the decoder; False at the end of the body."""
            if not upload.in_file:  # what the decoder holds unparsed precedes the file too
                _check_pre_data(upload.read)
            wanted = min(CHUNK, upload.length - upload.read)
            if wanted <= 0:
                decoder.receive_data(None)
                return False
            data = stream.read(wanted)
            if not data:
                raise malformed()  # the client sent less than its Content-Length
            upload.chunks.append(data)
            upload.read += len(data)
            decoder.receive_data(data)
            return True

        events = _events(decoder, feed)
        try:
            authorized = self._read_fields(events, upload, decoder, bucket)
            upload.in_file = True
            cap = authorized.cap if authorized.cap is not None else self._unbounded_cap
            # the file's size if nothing follows it: the body less what precedes the file's
            # data (the decoder keeps the line break that opens it) and the closing boundary
            before_data = upload.read - len(decoder.buffer) + len(b"\r\n")
            closing = len(b"\r\n--" + boundary + b"--\r\n")
            at_most = upload.length - before_data - closing
            if at_most > cap + MARGIN:
                raise _too_large(at_most, cap)
            for event in events:
                if isinstance(event, Data):
                    upload.file_size += len(event.data)
                    if upload.file_size > cap:
                        raise _too_large(upload.file_size, cap)
                    if not event.more_data:
                        break
            for _ in events:  # the fields after the file (S3 ignores them) and the epilogue
                pass
        except ValueError:  # the decoder's word for a body that is not multipart
            raise malformed() from None
        authorized.check_size(upload.file_size)

    def _read_fields(
        self,
        events: Iterator[object],
        upload: _Upload,
        decoder: MultipartDecoder,
        bucket: str,
    ) -> Authorized:
        """Reads up to the file's part and checks the policy on the fields before it."""
        current: str | None = None
        value = bytearray()
        for event in events:
            _check_pre_data(upload.read - len(decoder.buffer))  # parsed so far
            if isinstance(event, Field | File):
                if event.name.lower() == "file":
                    upload.filename = event.filename if isinstance(event, File) else None
                    return self._checker.authorize(
                        upload.fields,
                        bucket=bucket,
                        filename=upload.filename,
                        region=self._buckets.region(bucket),
                    )
                current = event.name
                value.clear()
            elif isinstance(event, Data) and current is not None:
                value.extend(event.data)
                if not event.more_data:
                    upload.fields.append((current, value.decode("utf-8")))
                    current = None
        raise invalid_argument("POST requires exactly one file upload per request.", "file")

    def _refuse(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        bucket: str,
        error: S3Error,
    ) -> Iterable[bytes]:
        request_id = secrets.token_hex(8).upper()
        body = error.xml(request_id, base64.b64encode(secrets.token_bytes(48)).decode())
        headers = [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ]
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            headers += self._buckets.cors_headers(bucket, str(origin))
        start_response(f"{error.status} {HTTPStatus(error.status).phrase}", headers)
        return [body]


def _check_pre_data(size: int) -> None:
    """The form before the file's data (fields, their parts' headers) fits in S3's 20 KiB."""
    if size > PRE_DATA_LIMIT:
        raise S3Error(
            400,
            "MaxPostPreDataLengthExceeded",
            "Your POST request fields preceeding the upload file was too large.",
            MaxPostPreDataLengthBytes=PRE_DATA_LIMIT,
        )


def _too_large(size: int, cap: int) -> S3Error:
    return S3Error(
        400,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        ProposedSize=size,
        MaxSizeAllowed=cap,
    )


def _events(decoder: MultipartDecoder, feed: Callable[[], bool]) -> Iterator[object]:
    """The decoder's events, reading more of the body as it needs; ends after the epilogue."""
    more = True
    while True:
        event = decoder.next_event()
        if isinstance(event, NeedData):
            if not more:
                raise ValueError("the body ends inside the form")
            more = feed()
            continue
        yield event
        if isinstance(event, Epilogue):
            return


def _content_length(environ: WSGIEnvironment) -> int | None:
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    return int(raw) if raw.isdigit() else None


def _drain(stream: object, left: int) -> None:
    """Reads what is left of a refused body (up to DRAIN_LIMIT) so that the client, still
    sending, reads the answer; the server closes the connection after it either way."""
    read = getattr(stream, "read", None)
    left = min(left, DRAIN_LIMIT)
    while read is not None and left > 0:
        data = read(min(CHUNK, left))
        if not data:
            return
        left -= len(data)
