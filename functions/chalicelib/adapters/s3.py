"""S3 buckets behind the ObjectStore port."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, cast

from botocore.exceptions import ClientError

from chalicelib.errors import NotFound
from chalicelib.ports import ObjectInfo, PresignedPost

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}


class S3ObjectStore:
    """One bucket. The client is shared by every store of a container."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str) -> None:
        self._client.upload_fileobj(
            fileobj, self._bucket, key, ExtraArgs={"ContentType": content_type}
        )

    def open(self, key: str) -> IO[bytes]:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(f"s3://{self._bucket}/{key} does not exist") from exc
            raise
        return cast(IO[bytes], response["Body"])

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
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._bucket, "Key": key},
            ExpiresIn=expires_in,
        )

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
