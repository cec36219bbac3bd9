"""S3 buckets behind the ObjectStore port."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, quote, urlsplit

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from chalicelib.errors import NotFound
from chalicelib.ports import ObjectInfo, PresignedPost

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


_PROBE_KEY = "presign-probe"
DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit), and per listing page
_ALGORITHM = "AWS4-HMAC-SHA256"


def _quote(value: str, safe: str = "-_.~") -> str:
    return quote(value, safe=safe)


class GetPresigner:
    """SigV4 query-string presigning of GET for one bucket: the URL botocore's
    `generate_presigned_url("get_object")` gives, without its per-call endpoint resolution,
    request serialisation and event hooks (faster by an order of magnitude, see
    docs/performance.md; a status page or an output CSV signs one URL per image). The
    endpoint, addressing style, region and signing name are read once from a URL botocore
    presigned itself; the credentials are read on every call (a Lambda's are refreshed)."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        probe = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}, ExpiresIn=60
        )
        parts = urlsplit(probe)
        if not parts.path.endswith("/" + _PROBE_KEY):
            raise ValueError(f"unexpected presigned URL shape: {parts.path}")
        self._prefix = parts.path[: -len(_PROBE_KEY)]  # "/bucket/" (path style) or "/"
        self._origin = f"{parts.scheme}://{parts.netloc}"
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        host = parts.hostname or ""
        self._host = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
        credential = parse_qs(parts.query)["X-Amz-Credential"][0]
        _, _, self._region, self._service, _ = credential.split("/")
        self._credentials: Any = getattr(client, "_request_signer")._credentials  # noqa: B009
        self._keys: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def _signing_key(self, secret: str, day: str) -> bytes:
        with self._lock:
            key = self._keys.get((secret, day))
            if key is None:
                key = ("AWS4" + secret).encode()
                for part in (day, self._region, self._service, "aws4_request"):
                    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
                self._keys = {(secret, day): key}
            return key

    def url(self, key: str, expires_in: int, now: datetime | None = None) -> str:
        frozen = self._credentials.get_frozen_credentials()
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        stamp = moment.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        params = {
            "X-Amz-Algorithm": _ALGORITHM,
            "X-Amz-Credential": f"{frozen.access_key}/{scope}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires_in),
            "X-Amz-SignedHeaders": "host",
        }
        if frozen.token:
            params["X-Amz-Security-Token"] = frozen.token
        query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(params.items()))
        path = self._prefix + _quote(key, safe="/~")
        canonical = f"GET\n{path}\n{query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{digest}"
        signature = hmac.new(
            self._signing_key(frozen.secret_key, day), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return f"{self._origin}{path}?{query}&X-Amz-Signature={signature}"


class S3ObjectStore:
    """One bucket. The client is shared by every store of a container."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket
        self._presigner: GetPresigner | None = None
        self._presigner_failed = False

    @property
    def bucket(self) -> str:
        return self._bucket

    def put_bytes(self, key: str, data: bytes, content_type: str, cache_control: str = "") -> None:
        if cache_control:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=cache_control,
            )
        else:
            self._client.put_object(
                Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        # One part in flight: the finalizer's memory stays one 8 MB part, whatever the size.
        self._client.upload_fileobj(
            fileobj,
            self._bucket,
            key,
            ExtraArgs={"ContentType": content_type},
            Config=TransferConfig(max_concurrency=1, use_threads=False),
        )

    def open(self, key: str) -> IO[bytes]:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(f"s3://{self._bucket}/{key} does not exist") from exc
            raise
        return cast(IO[bytes], response["Body"])

    def copy(self, source_key: str, key: str) -> bool:
        try:
            self._client.copy_object(
                Bucket=self._bucket,
                Key=key,
                CopySource={"Bucket": self._bucket, "Key": source_key},
                MetadataDirective="COPY",
            )
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=key)

    def delete_prefix(self, prefix: str, limit: int | None = None) -> int:
        """A page of keys listed, then deleted in one DeleteObjects request, page after page
        (each page starts after the keys just deleted). A key S3 could not delete raises."""
        deleted = 0
        while limit is None or deleted < limit:
            size = DELETE_BATCH if limit is None else min(DELETE_BATCH, limit - deleted)
            listing = self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=size)
            keys = [item["Key"] for item in listing.get("Contents", [])]
            if not keys:
                break
            answer = self._client.delete_objects(
                Bucket=self._bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
            errors = answer.get("Errors") or []
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"s3://{self._bucket}: {len(errors)} object(s) not deleted, e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
            deleted += len(keys)
            if not listing.get("IsTruncated"):
                break
        return deleted

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=str(response.get("ETag", "")).strip('"'),
        )

    def presigned_get(self, key: str, expires_in: int) -> str:
        presigner = self._fast_presigner()
        if presigner is not None:
            return presigner.url(key, expires_in)
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=expires_in,
        )

    def _fast_presigner(self) -> GetPresigner | None:
        """The fast presigner, built on first use; None (botocore signs) when this client's
        URLs do not have the shape it knows (e.g. no credentials)."""
        if self._presigner is None and not self._presigner_failed:
            try:
                self._presigner = GetPresigner(self._client, self._bucket)
            except Exception:
                self._presigner_failed = True
        return self._presigner

    def presigned_post(self, key: str, max_bytes: int, expires_in: int) -> PresignedPost:
        post = self._client.generate_presigned_post(
            Bucket=self._bucket,
            Key=key,
            Fields={"Content-Type": "text/csv"},
            Conditions=[
                {"bucket": self._bucket},
                ["eq", "$key", key],
                ["content-length-range", 1, max_bytes],
                {"Content-Type": "text/csv"},
            ],
            ExpiresIn=expires_in,
        )
        return PresignedPost(
            url=str(post["url"]), fields={k: str(v) for k, v in post["fields"].items()}
        )

    def ping(self) -> None:
        self._client.head_bucket(Bucket=self._bucket)
